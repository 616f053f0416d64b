"""Text encoder classifiers (BERT conventions by default: word, position and
token-type embeddings, LayerNorm after the embeddings, post-norm blocks, a pooler
(dense + tanh on the first token) before the classifier)."""

from __future__ import annotations

from typing import Any

from metagen.compiler.context import CompileContext
from metagen.compiler.families import transformer as T
from metagen.compiler.families.base import Family, Knobs, register
from metagen.compiler.families.decoder_lm import class_name, resolve_tower
from metagen.compiler.families.vit import (
    activation_bytes, num_classes, report_structure, tower_activations, warn_family, single_tower_knobs,
)
from metagen.ir.builder import ModelBuilder
from metagen.ir.graph import ZEROS, InputSpec, Model
from metagen.ir.types import DType, TensorType

ENCODER_KEYS = [
    "vocab_size", "type_vocab_size", "hidden_size", "layers", "heads", "kv_heads", "head_dim", "ffn_size",
    "activation", "norm", "norm_eps", "norm_position", "position", "rope_theta", "pooling", "bias",
]
DEFAULT_TEXT_CLASSES = 2  # binary classification, when task.num_classes is absent
DEFAULT_CONTEXT = 512  # BERT's maximum length, when constraints.context_window is absent


def encoder_structure(cfg: dict[str, Any]) -> tuple[str, str] | None:
    if cfg["position"] not in ("learned", "rope", "none"):
        return "position", f"position '{cfg['position']}' is not supported by the encoder family; use 'learned', 'rope' or 'none'"
    if cfg["pooling"] not in ("cls", "cls_pooler", "mean"):
        return "pooling", f"pooling '{cfg['pooling']}' is not supported by the encoder family; use 'cls_pooler', 'cls' or 'mean'"
    return None


def check_encoder(cfg: dict[str, Any], pinned: set[str]) -> str | None:
    problem = encoder_structure(cfg)
    return problem[1] if problem else T.derive(cfg, pinned, False)


class EncoderClassifier(Family):
    def resolve(self, ctx: CompileContext) -> None:
        cfg = resolve_tower(ctx, "encoder")
        ctx.arch = {k: cfg.get(k) for k in ENCODER_KEYS}
        ctx.arch["num_classes"] = num_classes(ctx, DEFAULT_TEXT_CLASSES)
        given = ctx.spec.constraints.given("context_window")
        ctx.arch["context"] = ctx.context_window if given else DEFAULT_CONTEXT
        ctx.context_window = ctx.arch["context"]
        report_structure(ctx, encoder_structure(ctx.arch))
        warn_family(ctx, self.built_what)
        if self.classifies and ctx.spec.task.num_classes is None:
            ctx.sink.note(ctx.spec.task.loc(), f"task.num_classes is not given; using {DEFAULT_TEXT_CLASSES} classes")

    def knobs(self, ctx: CompileContext) -> Knobs | None:
        return single_tower_knobs(ctx, check_encoder)

    def tiny(self, ctx: CompileContext) -> None:
        a = ctx.arch
        a.update(hidden_size=64, layers=2, heads=4, kv_heads=4, head_dim=16, vocab_size=256, context=64)
        a["ffn_size"] = T.default_ffn(64, a["activation"])
        a["type_vocab_size"] = min(a["type_vocab_size"], 2)
        a["num_classes"] = min(a["num_classes"], 10)
        ctx.context_window = 64

    def finalize(self, ctx: CompileContext) -> str | None:
        return check_encoder(ctx.arch, ctx.pinned)

    doc_line = "Transformer encoder classifier."
    built_what = "a text encoder classifier"
    classifies = True

    def build(self, ctx: CompileContext) -> Model:
        a = ctx.arch
        mb = ModelBuilder()
        top = mb.module(class_name(ctx.spec.name), doc=self.doc_line)
        x, inputs = self.trunk(mb, top, a)
        outputs = self.head(top, a, x)
        top_def = top.ret(*outputs.values(), names=list(outputs))
        config = {k: a[k] for k in ENCODER_KEYS}
        config.update(self.head_config(a))
        config["context_window"] = a["context"]
        return mb.finish(
            top_def,
            name=top_def.name,
            spec_name=ctx.spec.name,
            inputs=inputs,
            config=config,
            family=self.name,
            symbols={"batch": "batch size", "seq": f"sequence length, at most {a['context']}"},
            examples={"seq": min(16, a["context"])},
        )

    def trunk(self, mb: ModelBuilder, top, a: dict[str, Any]):
        """Embeddings and the block stack: hidden states [batch, seq, d] and inputs."""
        d, vocab = a["hidden_size"], a["vocab_size"]
        block = T.block_module(mb, a, TensorType(DType.f32, ("batch", "seq", d)), causal=False)
        ids = top.input("input_ids", TensorType(DType.i64, ("batch", "seq")))
        inputs = [InputSpec("input_ids", ids.type, "tokens", 0, vocab, "token ids, 0 <= id < vocab_size")]
        top.layer("tok_embeddings", "embedding", num=vocab, dim=d)
        x = top.call("tok_embeddings", ids, hint="x")
        if a["position"] == "learned":
            top.layer("pos_embeddings", "embedding", num=a["context"], dim=d)
            pos = top.op("positions", ids, axis=1, hint="pos")
            x = top.op("add", x, top.call("pos_embeddings", pos, hint="pos_emb"), hint="x")
        if a["type_vocab_size"] > 0:
            types = top.input("token_type_ids", TensorType(DType.i64, ("batch", "seq")))
            inputs.append(
                InputSpec("token_type_ids", types.type, "tokens", 0, a["type_vocab_size"], "segment ids, 0 <= id < type_vocab_size")
            )
            top.layer("type_embeddings", "embedding", num=a["type_vocab_size"], dim=d)
            x = top.op("add", x, top.call("type_embeddings", types, hint="type_emb"), hint="x")
        post = a["norm_position"] == "post"
        if post:
            # Post-norm blocks end in a norm; the embeddings are normalized before them.
            T.norm_layer(top, "embed_norm", a)
            x = top.call("embed_norm", x, hint="x")
        top.repeat("blocks", block, a["layers"])
        x = top.call("blocks", x, hint="x")
        if not post:
            T.norm_layer(top, "norm_f", a)
            x = top.call("norm_f", x, hint="x")
        return x, inputs

    def head(self, top, a: dict[str, Any], x) -> dict[str, Any]:
        d = a["hidden_size"]
        if a["pooling"] == "mean":
            pooled = top.op("mean", x, axis=1, hint="pooled")
        else:
            pooled = top.op("select", x, axis=1, index=0, hint="pooled")
        if a["pooling"] == "cls_pooler":
            top.layer("pooler", "linear", in_features=d, out_features=d, bias=bool(a["bias"]))
            pooled = top.op("tanh", top.call("pooler", pooled, hint="pooled"), hint="pooled")
        top.layer("classifier", "linear", in_features=d, out_features=a["num_classes"], bias=True)
        return {"logits": top.call("classifier", pooled, hint="logits")}

    def head_config(self, a: dict[str, Any]) -> dict[str, Any]:
        return {"num_classes": a["num_classes"]}

    def memory(self, ctx: CompileContext, params: int) -> dict[str, int]:
        nbytes = activation_bytes(ctx)
        weights = params * nbytes
        acts = tower_activations(ctx.arch, ctx.arch["context"], nbytes)
        return {"weights": weights, "kv_cache": 0, "activations": acts, "total": weights + acts}

    def workload(self, ctx: CompileContext, model: Model) -> dict[str, Any]:
        return {"unit": "sequence", "bindings": {"batch": 1, "seq": ctx.arch["context"]}, "per_unit": 1}


class MaskedLM(EncoderClassifier):
    """A bidirectional encoder trained to fill in masked tokens (BERT's masked-LM
    head: dense + activation + norm, then scores against the tied word embeddings
    plus a per-token bias)."""

    doc_line = "Transformer encoder with a masked-language-model head."
    built_what = "a masked-language-model encoder"
    classifies = False

    def resolve(self, ctx: CompileContext) -> None:
        super().resolve(ctx)
        ctx.arch["num_classes"] = 0

    def tiny(self, ctx: CompileContext) -> None:
        super().tiny(ctx)
        ctx.arch["num_classes"] = 0

    def head(self, top, a: dict[str, Any], x) -> dict[str, Any]:
        d, vocab = a["hidden_size"], a["vocab_size"]
        top.layer("mlm_transform", "linear", in_features=d, out_features=d, bias=bool(a["bias"]))
        h = top.call("mlm_transform", x, hint="h")
        act = a["activation"] if a["activation"] not in T.GATED else T.GATED[a["activation"]]
        h = top.op(act, h, hint="h")
        T.norm_layer(top, "mlm_norm", a)
        h = top.call("mlm_norm", h, hint="h")
        w = top.get_param("tok_embeddings.weight", hint="w_emb")
        logits = top.op("linear_fn", h, w, hint="logits")
        bias = top.param("mlm_bias", (vocab,), ZEROS)
        return {"logits": top.op("add", logits, bias, hint="logits")}

    def head_config(self, a: dict[str, Any]) -> dict[str, Any]:
        return {}


register(
    MaskedLM(
        "masked_lm",
        "Transformer text encoder with a masked-language-model head (BERT conventions).",
        inputs_doc="input_ids: int64 [batch, seq] (mask tokens replaced by the mask id); token_type_ids when type_vocab_size > 0",
        outputs_doc="logits: float32 [batch, seq, vocab_size], scores for the token at each position",
    )
)


register(
    EncoderClassifier(
        "encoder",
        "Transformer text encoder classifier (BERT conventions).",
        inputs_doc="input_ids: int64 [batch, seq]; token_type_ids: int64 [batch, seq] when type_vocab_size > 0",
        outputs_doc="logits: float32 [batch, num_classes], class scores",
    )
)
