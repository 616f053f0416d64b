"""Autoregressive audio model over neural-codec tokens (MusicGen-style).

Audio goes in and out as the discrete codes of a neural codec (EnCodec, DAC,
SoundStream): the codec turns a waveform into `codebooks` parallel token streams
(residual vector quantization) at a fixed frame rate, and decodes codes back to a
waveform. The default matches MusicGen's 32 kHz EnCodec: 4 codebooks of 2048 entries
at 50 frames per second, so a 4096-frame context is about 82 seconds. The codec is
not part of the model, just as a tokenizer is not part of a language model.

Input `codes` int64 [batch, codebooks, seq]: the code of each codebook at each
frame. Each codebook has its own embedding table; a frame's embedding is the sum of
its codebooks' embeddings. A causal transformer (MetaGen's modern conventions:
pre-RMSNorm, SwiGLU, rotary positions, grouped-query attention) runs over frames,
and one linear head per codebook predicts the next frame's code in that codebook:
output `logits` float32 [batch, codebooks, seq, codebook_size].

Delay pattern: MusicGen shifts codebook k right by k frames so that codebook k of
frame t is predicted after codebooks < k of the same frame. That is a data layout
convention, applied to the codes before they are fed (and undone after sampling);
the graph itself is layout-agnostic and does not apply it.
"""

from __future__ import annotations

from typing import Any

from metagen.compiler.context import CompileContext
from metagen.compiler.families import transformer as T
from metagen.compiler.families.base import register
from metagen.compiler.families.decoder_lm import DecoderLM, class_name, resolve_tower
from metagen.compiler.families.vit import warn_family
from metagen.ir.builder import ModelBuilder
from metagen.ir.graph import InputSpec, Model
from metagen.ir.types import DType, TensorType

TOWER_KEYS = [
    "hidden_size", "layers", "heads", "kv_heads", "head_dim", "ffn_size", "activation",
    "norm", "norm_eps", "norm_position", "position", "rope_theta", "bias",
]
AUDIO_DEFAULTS = {"codebooks": 4, "codebook_size": 2048}
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


class AudioLM(DecoderLM):
    """Shares the decoder LM's fitting (width x depth over the transformer tower)."""

    def resolve(self, ctx: CompileContext) -> None:
        warn_family(ctx, "an autoregressive audio model")
        cfg = resolve_tower(ctx, "modern")
        spec_arch = ctx.spec.architecture
        ctx.arch = {k: cfg.get(k) for k in TOWER_KEYS}
        for key, default in AUDIO_DEFAULTS.items():
            if spec_arch.given(key):
                ctx.arch[key] = spec_arch.get(key)
                ctx.pinned.add(key)
            else:
                ctx.arch[key] = default
        if spec_arch.given("vocab_size"):
            ctx.sink.warning(
                spec_arch.loc("vocab_size"),
                "vocab_size is ignored by the audio model: its vocabulary is codebook_size entries per codebook",
            )
        ctx.arch["gqa"] = cfg["position"] == "rope"
        ctx.arch["context"] = ctx.context_window
        # DecoderLM's helpers read these keys.
        ctx.arch["vocab_size"] = ctx.arch["codebook_size"]
        ctx.arch["tie_embeddings"] = False

    def tiny(self, ctx: CompileContext) -> None:
        super().tiny(ctx)
        ctx.arch.update(codebooks=min(ctx.arch["codebooks"], 2), codebook_size=64, vocab_size=64)

    def build(self, ctx: CompileContext) -> Model:
        a = ctx.arch
        mb = ModelBuilder()
        d, k, v = a["hidden_size"], a["codebooks"], a["codebook_size"]
        x_type = TensorType(DType.f32, ("batch", "seq", d))
        block = T.block_module(mb, a, x_type, causal=True)
        top = mb.module(class_name(ctx.spec.name), doc="Autoregressive transformer over neural-codec tokens.")
        codes = top.input("codes", TensorType(DType.i64, ("batch", k, "seq")))
        x = None
        for i in range(k):
            top.layer(f"embed_{i}", "embedding", num=v, dim=d)
            ids = top.op("select", codes, axis=1, index=i, hint=f"codes_{i}")
            e = top.call(f"embed_{i}", ids, hint="x")
            x = e if x is None else top.op("add", x, e, hint="x")
        top.repeat("blocks", block, a["layers"])
        x = top.call("blocks", x, hint="x")
        T.norm_layer(top, "norm_f", a)
        x = top.call("norm_f", x, hint="x")
        logits = []
        for i in range(k):
            top.layer(f"head_{i}", "linear", in_features=d, out_features=v, bias=False)
            logits.append(top.call(f"head_{i}", x, hint=f"logits_{i}"))
        out = top.op("stack", *logits, axis=1, hint="logits") if k > 1 else top.op("unsqueeze", logits[0], axes=(1,), hint="logits")
        top_def = top.ret(out, names=["logits"])
        config = {key: a[key] for key in TOWER_KEYS}
        config.update(codebooks=k, codebook_size=v, context_window=a["context"])
        return mb.finish(
            top_def,
            name=top_def.name,
            spec_name=ctx.spec.name,
            inputs=[InputSpec("codes", codes.type, "tokens", 0, v, "codec codes, 0 <= code < codebook_size")],
            config=config,
            family=self.name,
            symbols={"batch": "batch size", "seq": f"frames, at most {a['context']}"},
            examples={"seq": min(16, a["context"])},
        )

    def resolved_architecture(self, ctx: CompileContext) -> dict[str, Any]:
        a = ctx.arch
        out: dict[str, Any] = {"family": self.msl_family(ctx)}
        for key in TOWER_KEYS + ["codebooks", "codebook_size"]:
            out[key] = a[key]
        return out

    def memory(self, ctx: CompileContext, params: int) -> dict[str, int]:
        """Weights + KV cache at the full context + one layer's prefill activations
        and the logits of every codebook: context * (4d + ffn + codebooks * size)."""
        a = ctx.arch
        nbytes = DTYPE_BYTES[ctx.spec.constraints.dtype]
        weights = params * nbytes
        kv = T.kv_cache_bytes(a, a["context"], nbytes)
        acts = a["context"] * (4 * a["hidden_size"] + a["ffn_size"] + a["codebooks"] * a["codebook_size"]) * nbytes
        return {"weights": weights, "kv_cache": kv, "activations": acts, "total": weights + kv + acts}

    def workload(self, ctx: CompileContext, model: Model) -> dict[str, Any]:
        return {"unit": "frame", "bindings": {"batch": 1, "seq": ctx.arch["context"]}, "per_unit": ctx.arch["context"]}


register(
    AudioLM(
        "audio_lm",
        "Autoregressive transformer over neural-codec tokens (summed codebook embeddings, one head per codebook).",
        inputs_doc="codes: int64 [batch, codebooks, seq] neural-codec codes (e.g. EnCodec), 0 <= code < codebook_size",
        outputs_doc="logits: float32 [batch, codebooks, seq, codebook_size], next-frame scores per codebook",
    )
)
