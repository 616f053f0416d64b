"""Best-effort models for modalities MetaGen does not know (taste, smell, vibes, ...).

MetaGen cannot know how such a signal is encoded, so the model takes a generic
feature sequence, one vector per time step, that the user computes from the sensor
(`features` float32 [batch, seq, feature_dim]; feature_dim is `architecture.channels`,
64 when absent). When every input is text it takes token ids instead. A pre-norm
transformer encoder (bidirectional, learned positions, GELU, LayerNorm) reads it;
the head follows the outputs:

- outputs include text: `logits` [batch, seq, vocab_size], token scores per step;
- outputs are a label: `logits` [batch, num_classes] from the mean over steps;
- anything else: `embedding` [batch, hidden_size], the mean over steps.

A warning says what was built.
"""

from __future__ import annotations

from typing import Any

from metagen.compiler.context import CompileContext
from metagen.compiler.families import transformer as T
from metagen.compiler.families.base import Family, Knobs, register
from metagen.compiler.families.decoder_lm import class_name
from metagen.compiler.families.vit import activation_bytes, num_classes, tower_activations, single_tower_knobs
from metagen.frontend.schema import MODALITIES
from metagen.ir.builder import ModelBuilder
from metagen.ir.graph import InputSpec, Model
from metagen.ir.types import DType, TensorType

CONVENTIONS = dict(
    activation="gelu", norm="layernorm", norm_eps=1e-5, norm_position="pre", position="learned",
    rope_theta=10000.0, bias=True, vocab_size=32000,
)
KEYS = [
    "feature_dim", "vocab_size", "hidden_size", "layers", "heads", "kv_heads", "head_dim", "ffn_size", "activation",
    "norm", "norm_eps", "norm_position", "position", "rope_theta", "bias",
]
DEFAULT_FEATURE_DIM = 64
DEFAULT_CLASSES = 2


def _check(cfg: dict[str, Any], pinned: set[str]) -> str | None:
    if cfg["position"] not in ("learned", "rope", "none"):
        return f"position '{cfg['position']}' is not supported by the fallback family; use 'learned', 'rope' or 'none'"
    return T.derive(cfg, pinned, False)


class Fallback(Family):
    def resolve(self, ctx: CompileContext) -> None:
        arch = ctx.spec.architecture
        cfg: dict[str, Any] = dict(CONVENTIONS, hidden_size=None, layers=None, heads=None, kv_heads=None)
        cfg.update(head_dim=None, ffn_size=None, feature_dim=DEFAULT_FEATURE_DIM)
        for key in KEYS:
            if key in cfg and arch.given(key) and arch.get(key) is not None:
                cfg[key] = arch.get(key)
                ctx.pinned.add(key)
        if arch.given("channels"):
            cfg["feature_dim"] = arch.channels
        ins = list(ctx.spec.modality.inputs or [])
        outs = list(ctx.spec.modality.outputs or [])
        ctx.arch = cfg
        ctx.arch["token_input"] = all(m == "text" for m in ins)
        ctx.arch["head"] = "tokens" if "text" in outs else ("label" if outs == ["label"] else "embedding")
        ctx.arch["num_classes"] = num_classes(ctx, DEFAULT_CLASSES)
        ctx.arch["context"] = ctx.context_window
        unknown = sorted({m for m in ins + outs if m not in MODALITIES})
        ctx.sink.warning(
            ctx.spec.modality.loc(),
            f"unsupported modalit{'y' if len(unknown) == 1 else 'ies'} {', '.join(repr(m) for m in unknown)}: "
            f"built a best-effort transformer encoder {self._describe(ctx.arch)} (see docs/families.md, 'fallback')",
        )

    @staticmethod
    def _describe(a: dict[str, Any]) -> str:
        if a["token_input"]:
            src = "over token ids 'input_ids' int64 [batch, seq]"
        else:
            src = (
                f"over a generic feature sequence 'features' float32 [batch, seq, {a['feature_dim']}] "
                "(one feature vector per step, computed by you; architecture.channels sets the width)"
            )
        dst = {
            "tokens": "to 'logits' float32 [batch, seq, vocab_size] (token scores at each step)",
            "label": f"to 'logits' float32 [batch, {a['num_classes']}] (class scores of the whole sequence)",
            "embedding": "to 'embedding' float32 [batch, hidden_size] (mean over steps)",
        }[a["head"]]
        return f"{src} {dst}"

    def knobs(self, ctx: CompileContext) -> Knobs | None:
        return single_tower_knobs(ctx, _check)

    def tiny(self, ctx: CompileContext) -> None:
        a = ctx.arch
        a.update(hidden_size=64, layers=2, heads=4, kv_heads=4, head_dim=16, vocab_size=256, context=64)
        a["ffn_size"] = T.default_ffn(64, a["activation"])
        a["feature_dim"] = min(a["feature_dim"], 16)
        a["num_classes"] = min(a["num_classes"], 10)
        ctx.context_window = 64

    def finalize(self, ctx: CompileContext) -> str | None:
        return _check(ctx.arch, ctx.pinned)

    def build(self, ctx: CompileContext) -> Model:
        a = ctx.arch
        mb = ModelBuilder()
        d = a["hidden_size"]
        block = T.block_module(mb, a, TensorType(DType.f32, ("batch", "seq", d)), causal=False)
        top = mb.module(class_name(ctx.spec.name), doc="Best-effort transformer encoder for an unsupported modality.")
        if a["token_input"]:
            src = top.input("input_ids", TensorType(DType.i64, ("batch", "seq")))
            spec = InputSpec("input_ids", src.type, "tokens", 0, a["vocab_size"], "token ids, 0 <= id < vocab_size")
            top.layer("tok_embeddings", "embedding", num=a["vocab_size"], dim=d)
            x = top.call("tok_embeddings", src, hint="x")
        else:
            src = top.input("features", TensorType(DType.f32, ("batch", "seq", a["feature_dim"])))
            spec = InputSpec("features", src.type, "normal", doc="one feature vector per step")
            top.layer("in_proj", "linear", in_features=a["feature_dim"], out_features=d, bias=bool(a["bias"]))
            x = top.call("in_proj", src, hint="x")
        if a["position"] == "learned":
            top.layer("pos_embeddings", "embedding", num=a["context"], dim=d, init_std=0.01)
            pos = top.op("positions", src, axis=1, hint="pos")
            x = top.op("add", x, top.call("pos_embeddings", pos, hint="pos_emb"), hint="x")
        top.repeat("blocks", block, a["layers"])
        x = top.call("blocks", x, hint="x")
        T.norm_layer(top, "norm_f", a)
        x = top.call("norm_f", x, hint="x")
        if a["head"] == "tokens":
            top.layer("lm_head", "linear", in_features=d, out_features=a["vocab_size"], bias=False)
            out, name = top.call("lm_head", x, hint="logits"), "logits"
        else:
            out = top.op("mean", x, axis=1, hint="pooled")
            name = "embedding"
            if a["head"] == "label":
                top.layer("classifier", "linear", in_features=d, out_features=a["num_classes"], bias=True)
                out, name = top.call("classifier", out, hint="logits"), "logits"
        top_def = top.ret(out, names=[name])
        config = {k: a[k] for k in KEYS}
        config.update(input="input_ids" if a["token_input"] else "features", head=a["head"], context_window=a["context"])
        if a["head"] == "label":
            config["num_classes"] = a["num_classes"]
        return mb.finish(
            top_def,
            name=top_def.name,
            spec_name=ctx.spec.name,
            inputs=[spec],
            config=config,
            family=self.name,
            symbols={"batch": "batch size", "seq": f"steps, at most {a['context']}"},
            examples={"seq": min(16, a["context"])},
        )

    def resolved_architecture(self, ctx: CompileContext) -> dict[str, Any]:
        a = ctx.arch
        out = {"family": self.msl_family(ctx)}
        out.update({k: a[k] for k in KEYS if k != "feature_dim"})
        if not a["token_input"]:
            out["channels"] = a["feature_dim"]
        return out

    def memory(self, ctx: CompileContext, params: int) -> dict[str, int]:
        nbytes = activation_bytes(ctx)
        weights = params * nbytes
        a = ctx.arch
        acts = tower_activations(a, a["context"], nbytes)
        if a["head"] == "tokens":
            acts += a["context"] * a["vocab_size"] * nbytes
        return {"weights": weights, "kv_cache": 0, "activations": acts, "total": weights + acts}

    def workload(self, ctx: CompileContext, model: Model) -> dict[str, Any]:
        return {"unit": "sequence", "bindings": {"batch": 1, "seq": ctx.arch["context"]}, "per_unit": 1}


register(
    Fallback(
        "fallback",
        "Best-effort transformer encoder for modalities MetaGen does not support.",
        inputs_doc="features: float32 [batch, seq, feature_dim] (input_ids: int64 [batch, seq] when every input is text)",
        outputs_doc="logits [batch, seq, vocab_size] for text outputs; logits [batch, num_classes] for a label; "
        "otherwise embedding [batch, hidden_size]",
    )
)
