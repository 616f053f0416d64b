"""Text encoder classifiers (BERT conventions by default: word, position and
token-type embeddings, LayerNorm after the embeddings, post-norm blocks, a pooler
(dense + tanh on the first token) before the classifier)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from metagen.compiler.context import CompileContext
from metagen.compiler.cost import UnitOfWork
from metagen.compiler.families import transformer as T
from metagen.compiler.families.base import ArchConfig, Family, Knobs, Rule, derived, spec_key
from metagen.compiler.families.blocks import (
    TransformerStack,
    block_stack, class_name, act_nbytes, inference, tower_training_activations, training, weight_nbytes, num_classes, report_structure, single_tower_knobs, token_embeddings, mask_input,
    tower_activations, tower_block, resolve_tower,
)
from metagen.ir.builder import ModelBuilder
from metagen.ir.graph import ZEROS, InputSpec, Model
from metagen.ir.types import DType, TensorType


@dataclass
class EncoderConfig(TransformerStack):
    vocab_size: int | None = spec_key()
    type_vocab_size: int | None = spec_key()
    position: str | None = spec_key()
    rope_theta: float | None = spec_key()
    pooling: str | None = spec_key()
    bias: bool | None = spec_key()
    num_classes: int = derived(0)
    context: int = derived(0)


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
    name = "encoder"
    pipeline_tag = "text-classification"
    doc = "Transformer text encoder classifier (BERT conventions)."
    inputs_doc = "input_ids: int64 [batch, seq]; token_type_ids: int64 [batch, seq] when type_vocab_size > 0"
    outputs_doc = "logits: float32 [batch, num_classes], class scores; embeds: float32 [batch, hidden_size], the pooled representation, L2-normalized"
    rules = (Rule(("text",), ("label",), ("classification", None)),)
    default_objective = "classification"
    tasks = ("classification",)
    unit = UnitOfWork("sequence", "sample")
    config = EncoderConfig
    default_budget = 110_000_000
    default_budget_source = "BERT-base (110M; Devlin et al. 2019), the usual fine-tuning starting point"
    tiny_doc = "d = 64, 2 layers, 4 heads, vocab 256, context 64, at most 2 token types, at most 10 classes"

    def configure(self, ctx: CompileContext) -> None:
        ctx.arch = resolve_tower(ctx, "encoder", self.config)
        ctx.arch["num_classes"] = num_classes(ctx, DEFAULT_TEXT_CLASSES)
        given = ctx.spec.constraints.given("context_window")
        ctx.arch["context"] = ctx.context_window if given else DEFAULT_CONTEXT
        ctx.context_window = ctx.arch["context"]
        report_structure(ctx, encoder_structure(ctx.arch))
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
    built = "a text encoder classifier"
    classifies = True

    def build(self, ctx: CompileContext) -> Model:
        a = ctx.arch
        mb = self.model_builder(ctx)
        top = mb.module(class_name(ctx.spec.name), doc=self.doc_line)
        x, inputs = self.trunk(ctx, mb, top, a)
        outputs = self.head(top, a, x)
        top_def = top.ret(*outputs.values(), names=list(outputs))
        config = a.pick(self.config.spec_keys())
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
            embeddings={"embeds": "input_ids"} if "embeds" in outputs else {},
        )

    def trunk(self, ctx: CompileContext, mb: ModelBuilder, top, a: EncoderConfig):
        """Embeddings and the block stack: hidden states [batch, seq, d] and inputs."""
        d, vocab = a.hidden_size, a.vocab_size
        block = tower_block(mb, ctx, a, "seq", causal=False, masked=True)
        ids = top.input("input_ids", TensorType(DType.i64, ("batch", "seq")))
        inputs = [InputSpec("input_ids", ids.type, "tokens", 0, vocab, "token ids, 0 <= id < vocab_size")]
        x = token_embeddings(top, ids, a, a.context, pos_init_std=None)
        if a["type_vocab_size"] > 0:
            types = top.input("token_type_ids", TensorType(DType.i64, ("batch", "seq")))
            inputs.append(
                InputSpec("token_type_ids", types.type, "tokens", 0, a["type_vocab_size"], "segment ids, 0 <= id < type_vocab_size")
            )
            top.layer("type_embeddings", "embedding", num=a["type_vocab_size"], dim=d)
            x = top.op("add", x, top.call("type_embeddings", types, hint="type_emb"), hint="x")
        mask, mask_spec = mask_input(top, ids)
        inputs.append(mask_spec)
        post = a["norm_position"] == "post"
        if post:
            # Post-norm blocks end in a norm; the embeddings are normalized before them.
            T.norm_layer(top, "embed_norm", a)
            x = top.call("embed_norm", x, hint="x")
        bias = top.op("attention_bias", mask, x, causal=False, hint="attn_bias")
        x = block_stack(top, block, x, a, final_norm=None if post else "norm_f", shared=(bias,))
        return x, inputs

    def pool(self, top, a: dict[str, Any], x):
        """One vector per sequence [batch, d], by `pooling`."""
        d = a["hidden_size"]
        if a["pooling"] == "mean":
            pooled = top.op("mean", x, axis=1, hint="pooled")
        else:
            pooled = top.op("select", x, axis=1, index=0, hint="pooled")
        if a["pooling"] == "cls_pooler":
            top.layer("pooler", "linear", in_features=d, out_features=d, bias=bool(a["bias"]))
            pooled = top.op("tanh", top.call("pooler", pooled, hint="pooled"), hint="pooled")
        return pooled

    def head(self, top, a: dict[str, Any], x) -> dict[str, Any]:
        pooled = self.pool(top, a, x)
        top.layer("classifier", "linear", in_features=a["hidden_size"], out_features=a["num_classes"], bias=True)
        logits = top.call("classifier", pooled, hint="logits")
        return {"logits": logits, "embeds": top.op("l2_normalize", pooled, axis=-1, hint="embeds")}

    def head_config(self, a: dict[str, Any]) -> dict[str, Any]:
        return {"num_classes": a["num_classes"]}

    def memory(self, ctx: CompileContext, params: int) -> dict[str, dict[str, int]]:
        """One forward at the context (one block live at a time); training keeps
        every block's activations for one sequence."""
        a = ctx.arch
        acts = tower_activations(a, a["context"], act_nbytes(ctx))
        stored, ckpt = tower_training_activations(a["layers"], a["context"], a["hidden_size"])
        return {"inference": inference(params * weight_nbytes(ctx), 0, acts), "training": training(params, stored, ckpt)}

    def workload(self, ctx: CompileContext, model: Model) -> dict[str, Any]:
        return {"bindings": {"batch": 1, "seq": ctx.arch["context"]}, "per_unit": 1}


class MaskedLM(EncoderClassifier):
    """A bidirectional encoder trained to fill in masked tokens (BERT's masked-LM
    head: dense + activation + norm, then scores against the tied word embeddings
    plus a per-token bias)."""

    default_budget_source = "BERT-base (110M; Devlin et al. 2019), pretrained with this objective"
    name = "masked_lm"
    pipeline_tag = "fill-mask"
    doc = "Transformer text encoder with a masked-language-model head (BERT conventions)."
    inputs_doc = "input_ids: int64 [batch, seq] (mask tokens replaced by the mask id); token_type_ids when type_vocab_size > 0"
    outputs_doc = "logits: float32 [batch, seq, vocab_size], scores for the token at each position"
    rules = (
        Rule(
            ("text",), ("text",), ("masked",),
            "the encoder's trunk with BERT's masked-LM head (dense + activation + norm, scores against the tied word "
            "embeddings plus a bias); output `logits` [batch, seq, vocab]",
        ),
    )
    default_objective = "masked"
    tasks = ("generation", "embedding")
    tiny_doc = "as `encoder`, without the classes"
    doc_line = "Transformer encoder with a masked-language-model head."
    built = "a masked-language-model encoder"
    classifies = False

    def configure(self, ctx: CompileContext) -> None:
        super().configure(ctx)
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
