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

from dataclasses import dataclass
from typing import Any

from metagen.compiler.context import CompileContext
from metagen.compiler.cost import UnitOfWork
from metagen.compiler.families import transformer as T
from metagen.compiler.families.base import ArchConfig, Rule, derived, spec_key
from metagen.compiler.families.decoder_lm import apply_lm_rules
from metagen.compiler.families.blocks import TransformerStack, block_stack, class_name, decode_inputs, present_names, act_nbytes, inference, tower_training_activations, training, weight_nbytes, resolve_tower, tower_block
from metagen.compiler.families.decoder_lm import DecoderLM
from metagen.ir.graph import InputSpec, Model
from metagen.ir.types import DType, TensorType


@dataclass
class AudioConfig(TransformerStack):
    position: str | None = spec_key()
    rope_theta: float | None = spec_key()
    bias: bool | None = spec_key()
    codebooks: int = spec_key(4)  # MusicGen's 32 kHz EnCodec
    codebook_size: int = spec_key(2048)
    # DecoderLM's helpers read these: the vocabulary is one codebook's entries.
    vocab_size: int | None = spec_key(
        ignored="vocab_size is ignored by the audio model: its vocabulary is codebook_size entries per codebook"
    )
    tie_embeddings: bool = derived(False)
    gqa: bool = derived(False)
    context: int = derived(0)
    tensor_parallel: int = derived(1)
    ffn_multiple: int = derived(256)


class AudioLM(DecoderLM):
    """Shares the decoder LM's fitting (width x depth over the transformer tower)."""

    name = "audio_lm"
    pipeline_tag = "audio-to-audio"
    doc = "Autoregressive transformer over neural-codec tokens (summed codebook embeddings, one head per codebook)."
    inputs_doc = "codes: int64 [batch, codebooks, seq] neural-codec codes (e.g. EnCodec), 0 <= code < codebook_size"
    outputs_doc = "logits: float32 [batch, codebooks, seq, codebook_size], next-frame scores per codebook"
    rules = (Rule(("audio",), ("audio",), ("autoregressive", None), "over neural-codec tokens (EnCodec, DAC)"),)
    default_objective = "autoregressive"
    unit = UnitOfWork("frame", "frame")
    config = AudioConfig
    tiny_doc = "as `decoder_lm`, with at most 2 codebooks of 64 entries"
    built = "an autoregressive audio model"

    def configure(self, ctx: CompileContext) -> None:
        cfg = resolve_tower(ctx, "modern", AudioConfig)
        cfg.gqa = cfg.position == "rope"
        cfg.context = ctx.context_window
        cfg.vocab_size = cfg.codebook_size
        cfg.tie_embeddings = False
        apply_lm_rules(ctx, cfg, ties=False)
        ctx.arch = cfg

    shrinks_vocab = False  # the codec's codebook size is not the fitter's to change
    # MusicGen-small's decoder (Copet et al. 2023): what a practitioner starts from.
    default_budget = 300_000_000
    default_budget_source = "MusicGen-small (300M)"

    def tiny(self, ctx: CompileContext) -> None:
        super().tiny(ctx)
        ctx.arch.update(codebooks=min(ctx.arch["codebooks"], 2), codebook_size=64, vocab_size=64)

    def build(self, ctx: CompileContext) -> Model:
        a = ctx.arch
        mb = self.model_builder(ctx)
        d, k, v = a["hidden_size"], a["codebooks"], a["codebook_size"]
        block = tower_block(mb, ctx, a, "seq", causal=True, cache=True)
        top = mb.module(class_name(ctx.spec.name), doc="Autoregressive transformer over neural-codec tokens.")
        codes = top.input("codes", TensorType(DType.i64, ("batch", k, "seq")))
        mask, positions, past, specs = decode_inputs(top, codes, a)
        x = None
        for i in range(k):
            top.layer(f"embed_{i}", "embedding", num=v, dim=d)
            ids = top.op("select", codes, axis=1, index=i, hint=f"codes_{i}")
            e = top.call(f"embed_{i}", ids, hint="x")
            x = e if x is None else top.op("add", x, e, hint="x")
        bias = top.op("attention_bias", mask, x, causal=True, hint="attn_bias")
        shared = (bias, positions) if a["position"] == "rope" else (bias,)
        x, present = block_stack(top, block, x, a, shared=shared, per_layer=past)
        logits = []
        for i in range(k):
            top.layer(f"head_{i}", "linear", in_features=d, out_features=v, bias=False)
            logits.append(top.call(f"head_{i}", x, hint=f"logits_{i}"))
        out = top.op("stack", *logits, axis=1, hint="logits") if k > 1 else top.op("unsqueeze", logits[0], axes=(1,), hint="logits")
        top_def = top.ret(out, *present, names=["logits", *present_names(a)])
        config = a.pick(AudioConfig.spec_keys())
        config.update(context_window=a["context"])
        return mb.finish(
            top_def,
            name=top_def.name,
            spec_name=ctx.spec.name,
            inputs=[InputSpec("codes", codes.type, "tokens", 0, v, "codec codes, 0 <= code < codebook_size"), *specs],
            config=config,
            family=self.name,
            symbols={
                "batch": "batch size",
                "seq": "new frames (the whole prompt, or one per decoding step)",
                "past": f"cached frames; past + seq at most {a['context']}",
            },
            examples={"seq": min(16, a["context"]), "past": 0},
        )

    def memory(self, ctx: CompileContext, params: int) -> dict[str, dict[str, int]]:
        """As the decoder LM: weights + KV cache at the full context + one decode
        step (one layer's activations, attention over the context, and one frame's
        logits for every codebook: 4d + ffn + heads * context + codebooks * size)."""
        a = ctx.arch
        nbytes = act_nbytes(ctx)
        kv = T.kv_cache_bytes(a, a["context"], nbytes)
        heads_out = a["codebooks"] * a["codebook_size"]
        step = (4 * a["hidden_size"] + a["ffn_size"] + a["heads"] * a["context"] + heads_out) * nbytes
        stored, ckpt = tower_training_activations(a["layers"], a["context"], a["hidden_size"])
        logits = a["context"] * heads_out * 4
        return {
            "inference": inference(params * weight_nbytes(ctx), kv, step),
            "training": training(params, stored + logits, ckpt + logits),
        }

    def workload(self, ctx: CompileContext, model: Model) -> dict[str, Any]:
        return {"bindings": {"batch": 1, "seq": ctx.arch["context"], "past": 0}, "per_unit": ctx.arch["context"]}
