"""CLIP-style dual encoders: a causal text tower pooled at the end-of-text token (the
highest id), a vision tower normalized before its blocks and after pooling (patch
convolution without bias), bias-free projections into a shared space and a learned
logit scale (initially ln(1/0.07)).

The architecture has two sub-sections, `text_encoder` and `image_encoder`, plus
`projection_dim`. While fitting, sizes live in the arch under dotted keys
(`image_encoder.hidden_size`) so one width setting moves both towers; `finalize`
folds them into the tower dicts.
"""

from __future__ import annotations

import math
from typing import Any

from metagen.compiler.context import CompileContext
from metagen.compiler.families import transformer as T
from metagen.compiler.families.base import Family, Knobs, register
from metagen.compiler.families.decoder_lm import class_name, resolve_tower
from metagen.compiler.families.vit import (
    VISION_KEYS, activation_bytes, check_vision, num_patches, pixel_input, pool_tokens, report_structure,
    tower_activations, vision_embed, vision_structure, vision_tiny, warn_family, width_candidates,
)
from metagen.ir.builder import ModelBuilder
from metagen.ir.graph import InputSpec, Model, const
from metagen.ir.types import DType, TensorType

TEXT_KEYS = [
    "vocab_size", "hidden_size", "layers", "heads", "kv_heads", "head_dim", "ffn_size", "activation", "norm",
    "norm_eps", "norm_position", "position", "rope_theta", "pooling", "bias",
]
SIZE_KEYS = ("hidden_size", "heads", "kv_heads", "head_dim", "ffn_size")
TOWERS = ("text_encoder", "image_encoder")
DEFAULT_CONTEXT = 77  # CLIP's text length, when constraints.context_window is absent
LOGIT_SCALE_INIT = math.log(1 / 0.07)


def _tower_pinned(pinned: set[str], tower: str) -> set[str]:
    return {k.split(".", 1)[1] for k in pinned if k.startswith(tower + ".")}


def text_width_for(image_width: int) -> int:
    """CLIP's towers keep text at two thirds of the image width (512 : 768)."""
    return max(64, 64 * round(image_width * 2 / 3 / 64))


def _text_structure(cfg: dict[str, Any]) -> tuple[str, str] | None:
    if cfg["position"] not in ("learned", "rope", "none"):
        return "position", f"position '{cfg['position']}' is not supported by text towers; use 'learned', 'rope' or 'none'"
    if cfg["pooling"] not in ("eot", "cls", "mean"):
        return "pooling", f"pooling '{cfg['pooling']}' is not supported by text towers; use 'eot', 'cls' or 'mean'"
    return None


def _check_text(cfg: dict[str, Any], pinned: set[str]) -> str | None:
    problem = _text_structure(cfg)
    return "text_encoder: " + problem[1] if problem else T.derive(cfg, pinned, False)


def _fold(a: dict[str, Any]) -> None:
    """Dotted fit keys into fresh tower dicts (never mutate dicts shared with the fitter)."""
    for tower in TOWERS:
        a[tower] = dict(a[tower])
    for key in [k for k in a if "." in k]:
        tower, _, name = key.partition(".")
        a[tower][name] = a.pop(key)


class DualEncoder(Family):
    def resolve(self, ctx: CompileContext) -> None:
        arch = ctx.spec.architecture
        text = resolve_tower(ctx, "clip_text", section=arch.text_encoder, prefix="text_encoder.")
        image = resolve_tower(ctx, "clip_image", section=arch.image_encoder, prefix="image_encoder.")
        given = ctx.spec.constraints.given("context_window")
        context = ctx.context_window if given else DEFAULT_CONTEXT
        ctx.context_window = context
        ctx.arch = {
            "text_encoder": {k: text.get(k) for k in TEXT_KEYS},
            "image_encoder": {k: image.get(k) for k in VISION_KEYS},
            "projection_dim": arch.projection_dim if arch.given("projection_dim") else None,
            "context": context,
        }
        if arch.given("projection_dim"):
            ctx.pinned.add("projection_dim")
        report_structure(ctx, _text_structure(ctx.arch["text_encoder"]), arch.text_encoder, "text_encoder: ")
        report_structure(ctx, vision_structure(ctx.arch["image_encoder"]), arch.image_encoder, "image_encoder: ")
        warn_family(ctx, "a CLIP-style dual encoder")
        for key, value in arch.items():
            if key in {f for f in TEXT_KEYS + VISION_KEYS} and value is not None and arch.given(key):
                ctx.sink.warning(
                    arch.loc(key),
                    f"'architecture.{key}' applies to neither tower of a dual encoder; "
                    f"write it under text_encoder: or image_encoder:",
                )

    def knobs(self, ctx: CompileContext) -> Knobs | None:
        a = ctx.arch
        pinned = {t: _tower_pinned(ctx.pinned, t) for t in TOWERS}
        free_w = [t for t in TOWERS if "hidden_size" not in pinned[t]]
        depth_keys = [f"{t}.layers" for t in TOWERS if "layers" not in pinned[t]]
        if not free_w and not depth_keys:
            return None
        widths = []
        img_pinned = a["image_encoder"]["hidden_size"] if "hidden_size" in pinned["image_encoder"] else None
        txt_pinned = a["text_encoder"]["hidden_size"] if "hidden_size" in pinned["text_encoder"] else None
        if img_pinned is None and txt_pinned is not None:
            candidates = width_candidates(None)
        else:
            candidates = width_candidates(img_pinned)
        seen = set()
        for d in candidates:
            dt = txt_pinned if txt_pinned is not None else text_width_for(d)
            if (d, dt) in seen:
                continue
            seen.add((d, dt))
            image = dict(a["image_encoder"], hidden_size=d)
            text = dict(a["text_encoder"], hidden_size=dt)
            if check_vision(image, pinned["image_encoder"]) or _check_text(text, pinned["text_encoder"]):
                continue
            w = {f"image_encoder.{k}": image[k] for k in SIZE_KEYS}
            w.update({f"text_encoder.{k}": text[k] for k in SIZE_KEYS})
            if "projection_dim" not in ctx.pinned:
                w["projection_dim"] = dt
            widths.append(w)
        return Knobs(
            widths=widths,
            depth_keys=depth_keys,
            ideal_depth=lambda w: T.ideal_layers(w["image_encoder.hidden_size"]),
        )

    def tiny(self, ctx: CompileContext) -> None:
        a = ctx.arch
        text, image = dict(a["text_encoder"]), dict(a["image_encoder"])
        text.update(hidden_size=64, layers=2, heads=4, kv_heads=4, head_dim=16, vocab_size=256)
        text["ffn_size"] = T.default_ffn(64, text["activation"])
        # Different widths in the two towers, so a mixed-up projection cannot pass.
        vision_tiny(image, hidden=96, heads=6)
        a.update(text_encoder=text, image_encoder=image, projection_dim=32, context=64)
        ctx.context_window = 64

    def finalize(self, ctx: CompileContext) -> str | None:
        a = ctx.arch
        _fold(a)
        problem = _check_text(a["text_encoder"], _tower_pinned(ctx.pinned, "text_encoder"))
        if problem:
            return problem
        problem = check_vision(a["image_encoder"], _tower_pinned(ctx.pinned, "image_encoder"), "image_encoder: ")
        if problem:
            return problem
        if a["projection_dim"] is None:
            a["projection_dim"] = a["text_encoder"]["hidden_size"]
        return None

    def build(self, ctx: CompileContext) -> Model:
        a = ctx.arch
        t, v, proj = a["text_encoder"], a["image_encoder"], a["projection_dim"]
        mb = ModelBuilder()
        text_tower = self._text_tower(mb, t, a["context"])
        image_tower = self._image_tower(mb, v)
        top = mb.module(class_name(ctx.spec.name), doc="CLIP-style dual encoder.")
        ids = top.input("input_ids", TensorType(DType.i64, ("batch", "seq")))
        pixels = top.input("pixel_values", pixel_input(v))
        top.sub("text_encoder", text_tower)
        top.sub("image_encoder", image_tower)
        top.layer("text_projection", "linear", in_features=t["hidden_size"], out_features=proj, bias=False)
        top.layer("image_projection", "linear", in_features=v["hidden_size"], out_features=proj, bias=False)
        # Shape [1] rather than a 0-d scalar: every backend and interchange format handles it alike.
        scale = top.param("logit_scale", (1,), const(LOGIT_SCALE_INIT), hint="logit_scale")
        text = top.call("text_projection", top.call("text_encoder", ids, hint="text"), hint="text")
        image = top.call("image_projection", top.call("image_encoder", pixels, hint="image"), hint="image")
        text = top.op("l2_normalize", text, axis=-1, hint="text_embeds")
        image = top.op("l2_normalize", image, axis=-1, hint="image_embeds")
        sim = top.op("matmul", text, image, transpose_b=True, hint="sim")
        per_text = top.op("mul", sim, top.op("exp", scale, hint="scale"), hint="logits_per_text")
        per_image = top.op("transpose", per_text, perm=(1, 0), hint="logits_per_image")
        top_def = top.ret(
            text, image, per_image, per_text, names=["text_embeds", "image_embeds", "logits_per_image", "logits_per_text"]
        )
        config = {
            "projection_dim": proj,
            "context_window": a["context"],
            "text_encoder": {k: t[k] for k in TEXT_KEYS},
            "image_encoder": {k: v[k] for k in VISION_KEYS},
        }
        return mb.finish(
            top_def,
            name=top_def.name,
            spec_name=ctx.spec.name,
            inputs=[
                InputSpec("input_ids", ids.type, "tokens", 0, t["vocab_size"], "token ids; the highest id marks end-of-text"),
                InputSpec("pixel_values", pixels.type, "normal", doc="normalized pixels, channels first"),
            ],
            config=config,
            family=self.name,
            symbols={"batch": "batch size (texts and images pair up)", "seq": f"text length, at most {a['context']}"},
            examples={"seq": min(16, a["context"])},
        )

    @staticmethod
    def _text_tower(mb: ModelBuilder, t: dict[str, Any], context: int):
        d = t["hidden_size"]
        block = T.block_module(mb, t, TensorType(DType.f32, ("batch", "seq", d)), causal=True, name="TextBlock")
        b = mb.module("TextEncoder", doc="Causal text tower, pooled at the end-of-text token.")
        ids = b.input("input_ids", TensorType(DType.i64, ("batch", "seq")))
        b.layer("tok_embeddings", "embedding", num=t["vocab_size"], dim=d)
        x = b.call("tok_embeddings", ids, hint="x")
        if t["position"] == "learned":
            b.layer("pos_embeddings", "embedding", num=context, dim=d, init_std=0.01)
            pos = b.op("positions", ids, axis=1, hint="pos")
            x = b.op("add", x, b.call("pos_embeddings", pos, hint="pos_emb"), hint="x")
        b.repeat("blocks", block, t["layers"])
        x = b.call("blocks", x, hint="x")
        T.norm_layer(b, "norm_f", t)
        x = b.call("norm_f", x, hint="x")
        if t["pooling"] == "eot":
            pooled = b.op("gather_argmax", x, ids, hint="pooled")
        elif t["pooling"] == "mean":
            pooled = b.op("mean", x, axis=1, hint="pooled")
        else:
            pooled = b.op("select", x, axis=1, index=0, hint="pooled")
        return b.ret(pooled)

    @staticmethod
    def _image_tower(mb: ModelBuilder, v: dict[str, Any]):
        d = v["hidden_size"]
        tokens = num_patches(v) + 1
        block = T.block_module(mb, v, TensorType(DType.f32, ("batch", tokens, d)), causal=False, name="ImageBlock")
        b = mb.module("ImageEncoder", doc="Vision tower: pre-norm before the blocks, post-norm after pooling.")
        pixels = b.input("pixel_values", pixel_input(v))
        x = vision_embed(b, v, pixels, patch_bias=False)
        T.norm_layer(b, "pre_norm", v)
        x = b.call("pre_norm", x, hint="x")
        b.repeat("blocks", block, v["layers"])
        x = b.call("blocks", x, hint="x")
        pooled = pool_tokens(b, v, x)
        T.norm_layer(b, "post_norm", v)
        return b.ret(b.call("post_norm", pooled, hint="pooled"))

    def resolved_architecture(self, ctx: CompileContext) -> dict[str, Any]:
        a = ctx.arch
        return {
            "family": self.msl_family(ctx),
            "projection_dim": a["projection_dim"],
            "text_encoder": {k: a["text_encoder"][k] for k in TEXT_KEYS},
            "image_encoder": {k: a["image_encoder"][k] for k in VISION_KEYS},
        }

    def memory(self, ctx: CompileContext, params: int) -> dict[str, int]:
        a = ctx.arch
        nbytes = activation_bytes(ctx)
        weights = params * nbytes
        t, v = a["text_encoder"], a["image_encoder"]  # folded by finalize before any build
        acts = tower_activations(t, a["context"], nbytes) + tower_activations(v, num_patches(v) + 1, nbytes)
        return {"weights": weights, "kv_cache": 0, "activations": acts, "total": weights + acts}

    def workload(self, ctx: CompileContext, model: Model) -> dict[str, Any]:
        return {"unit": "text-image pair", "bindings": {"batch": 1, "seq": ctx.arch["context"]}, "per_unit": 1}


register(
    DualEncoder(
        "clip",
        "CLIP-style dual encoder (contrastive text-image model).",
        inputs_doc="input_ids: int64 [batch, seq] (end-of-text = highest id); "
        "pixel_values: float32 [batch, channels, image_size, image_size]",
        outputs_doc="text_embeds, image_embeds: float32 [batch, projection_dim], L2-normalized; "
        "logits_per_image, logits_per_text: float32 [batch, batch], scaled cosine similarities",
    )
)
