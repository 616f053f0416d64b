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
from dataclasses import dataclass
from typing import Any

from metagen.compiler import design_rules as R
from metagen.compiler.context import CompileContext
from metagen.compiler.cost import UnitOfWork
from metagen.compiler.families import transformer as T
from metagen.compiler.families.base import ArchConfig, Family, Knobs, Rule, derived, spec_key, tower
from metagen.compiler.families.blocks import (
    PIXELS_DOC,
    TransformerStack,
    SIZE_KEYS, TOWER_CHOICE, VisionTower, block_stack, check_vision, class_name, act_nbytes, inference, tower_training_activations, training, weight_nbytes, num_patches, pixel_input,
    pool_tokens, report_structure, resolve_tower, token_embeddings, tower_activations, tower_block, vision_embed,
    vision_structure, vision_tiny, width_candidates, mask_input,
)
from metagen.ir.builder import ModelBuilder
from metagen.ir.graph import InputSpec, Model, const
from metagen.ir.types import DType, TensorType


@dataclass
class TextTower(TransformerStack):
    """CLIP's causal text tower."""

    vocab_size: int | None = spec_key()
    position: str | None = spec_key()
    rope_theta: float | None = spec_key()
    pooling: str | None = spec_key()
    bias: bool | None = spec_key()


@dataclass
class DualEncoderConfig(ArchConfig):
    projection_dim: int | None = spec_key()
    text_encoder: TextTower = tower(TextTower)
    image_encoder: VisionTower = tower(VisionTower)
    context: int = derived(0)


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


def clip_patch(width: int, image_size: int) -> int:
    """Design rule clip-patch: 32 below 1024 wide (ViT-B/32), 14 from 1024 up
    (ViT-L/14, H/14, bigG/14), 16 when 14 does not divide the image."""
    if width < 1024:
        return 32 if image_size % 32 == 0 else 16
    return 14 if image_size % 14 == 0 else 16


def _patch_applied(ctx: CompileContext, width: dict[str, Any]) -> None:
    patch = width.get("image_encoder.patch_size")
    d = width["image_encoder.hidden_size"]
    if patch is not None:
        R.applied(ctx, R.CLIP_PATCH, f"image_encoder.patch_size = {patch} for a {d}-wide image tower")
        return
    image = ctx.arch["image_encoder"]
    rule = clip_patch(d, image["image_size"])
    if image["patch_size"] != rule:
        R.pinned_breaks(
            ctx, ctx.spec.architecture.image_encoder.loc("patch_size"), R.CLIP_PATCH,
            f"image_encoder.patch_size {image['patch_size']} on a {d}-wide image tower, where published CLIP "
            f"models of that width use {rule}",
        )


def _fold(a: DualEncoderConfig) -> None:
    """Fresh tower configs (never mutate towers shared with the fitter)."""
    for name in TOWERS:
        a[name] = a[name].copy()


class DualEncoder(Family):
    name = "clip"
    pipeline_tag = "zero-shot-image-classification"
    doc = "CLIP-style dual encoder (contrastive text-image model)."
    inputs_doc = (
        "input_ids: int64 [batch, seq] (end-of-text = highest id); "
        "pixel_values: float32 [batch, channels, image_size, image_size]"
    )
    outputs_doc = (
        "text_embeds, image_embeds: float32 [batch, projection_dim], L2-normalized; "
        "logits_per_image, logits_per_text: float32 [batch, batch], scaled cosine similarities"
    )
    rules = (
        Rule(("text", "image"), ("text", "image"), ("contrastive", None)),
        Rule(
            ("text", "image"), ("embedding",), ("contrastive", None),
            "same model; the embeddings are among its outputs (`task.type: retrieval`: text-image search)",
        ),
    )
    default_objective = "contrastive"
    tasks = ("embedding", "retrieval")
    default_budget = 150_000_000
    default_budget_source = "CLIP ViT-B/32 (151M; Radford et al. 2021), the usual starting point of OpenCLIP runs"
    unit = UnitOfWork("text-image pair", "image")
    config = DualEncoderConfig
    built = "a CLIP-style dual encoder"
    tiny_doc = (
        "text tower d = 64 (4 heads), image tower d = 96 (6 heads; different widths so a mixed-up projection fails), "
        "2 layers each, 32 x 32 images in 8 x 8 patches, vocab 256, context 64, projection 32"
    )

    def configure(self, ctx: CompileContext) -> None:
        arch = ctx.spec.architecture
        given = ctx.spec.constraints.given("context_window")
        context = ctx.context_window if given else DEFAULT_CONTEXT
        ctx.context_window = context
        ctx.arch = DualEncoderConfig(
            projection_dim=arch.projection_dim if arch.given("projection_dim") else None,
            text_encoder=resolve_tower(ctx, "clip_text", TextTower, section=arch.text_encoder, prefix="text_encoder."),
            image_encoder=resolve_tower(ctx, "clip_image", VisionTower, section=arch.image_encoder, prefix="image_encoder."),
            context=context,
        )
        if arch.given("projection_dim"):
            ctx.pinned.add("projection_dim")
        elif ctx.spec.task.given("embedding_dim"):  # the original vocabulary's word for the shared width
            ctx.arch["projection_dim"] = ctx.spec.task.embedding_dim
            ctx.pinned.add("projection_dim")
        report_structure(ctx, _text_structure(ctx.arch["text_encoder"]), arch.text_encoder, "text_encoder: ")
        report_structure(ctx, vision_structure(ctx.arch["image_encoder"]), arch.image_encoder, "image_encoder: ")

    def unused_key_message(self, dotted: str) -> str:
        key = dotted.removeprefix("architecture.")
        if key in TextTower.spec_keys() or key in VisionTower.spec_keys():
            return (
                f"'architecture.{key}' applies to neither tower of a dual encoder; "
                f"write it under text_encoder: or image_encoder:"
            )
        return super().unused_key_message(dotted)

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
            if "patch_size" not in pinned["image_encoder"]:
                image["patch_size"] = clip_patch(d, image["image_size"])
            text = dict(a["text_encoder"], hidden_size=dt)
            if check_vision(image, pinned["image_encoder"]) or _check_text(text, pinned["text_encoder"]):
                continue
            w = {f"image_encoder.{k}": image[k] for k in SIZE_KEYS}
            if "patch_size" not in pinned["image_encoder"]:
                w["image_encoder.patch_size"] = image["patch_size"]
            w.update({f"text_encoder.{k}": text[k] for k in SIZE_KEYS})
            if "projection_dim" not in ctx.pinned:
                w["projection_dim"] = dt
            widths.append(w)
        return Knobs(
            widths=widths,
            depth_keys=depth_keys,
            ideal_depth=lambda w: R.tower_depth(w["image_encoder.hidden_size"]),
            choice=TOWER_CHOICE + ", the image tower's width deciding",
            depth_rule="tower-depth",
            chosen=_patch_applied,
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
        mb = self.model_builder(ctx)
        arch = ctx.spec.architecture
        text_tower = self._text_tower(ctx, mb, t, a["context"], arch.text_encoder)
        image_tower = self._image_tower(ctx, mb, v, arch.image_encoder)
        top = mb.module(class_name(ctx.spec.name), doc="CLIP-style dual encoder.")
        ids = top.input("input_ids", TensorType(DType.i64, ("batch", "seq")))
        pixels = top.input("pixel_values", pixel_input(v))
        mask, mask_spec = mask_input(top, ids)
        top.sub("text_encoder", text_tower)
        top.sub("image_encoder", image_tower)
        top.layer("text_projection", "linear", in_features=t["hidden_size"], out_features=proj, bias=False)
        top.layer("image_projection", "linear", in_features=v["hidden_size"], out_features=proj, bias=False)
        # Shape [1] rather than a 0-d scalar: every backend and interchange format handles it alike.
        scale = top.param("logit_scale", (1,), const(LOGIT_SCALE_INIT), hint="logit_scale")
        text = top.call("text_projection", top.call("text_encoder", ids, mask, hint="text"), hint="text")
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
            "text_encoder": t.pick(TextTower.spec_keys()),
            "image_encoder": v.pick(VisionTower.spec_keys()),
        }
        return mb.finish(
            top_def,
            name=top_def.name,
            spec_name=ctx.spec.name,
            inputs=[
                InputSpec("input_ids", ids.type, "tokens", 0, t["vocab_size"], "token ids; the highest id marks end-of-text"),
                InputSpec("pixel_values", pixels.type, "normal", doc=PIXELS_DOC),
                mask_spec,
            ],
            config=config,
            family=self.name,
            symbols={"batch": "batch size (texts and images pair up)", "seq": f"text length, at most {a['context']}"},
            examples={"seq": min(16, a["context"])},
            embeddings={"text_embeds": "input_ids", "image_embeds": "pixel_values"},
        )

    @staticmethod
    def _text_tower(ctx: CompileContext, mb: ModelBuilder, t: TextTower, context: int, section):
        block = tower_block(mb, ctx, t, "seq", causal=True, name="TextBlock", section=section, masked=True)
        b = mb.module("TextEncoder", doc="Causal text tower, pooled at the end-of-text token.")
        ids = b.input("input_ids", TensorType(DType.i64, ("batch", "seq")))
        mask = b.input("attention_mask", TensorType(DType.i64, ("batch", "seq")))
        x = token_embeddings(b, ids, t, context)
        bias = b.op("attention_bias", mask, x, causal=True, hint="attn_bias")
        x = block_stack(b, block, x, t, shared=(bias,))
        if t["pooling"] == "eot":
            pooled = b.op("gather_argmax", x, ids, hint="pooled")
        elif t["pooling"] == "mean":
            pooled = b.op("mean", x, axis=1, hint="pooled")
        else:
            pooled = b.op("select", x, axis=1, index=0, hint="pooled")
        return b.ret(pooled)

    @staticmethod
    def _image_tower(ctx: CompileContext, mb: ModelBuilder, v: VisionTower, section):
        block = tower_block(mb, ctx, v, num_patches(v) + 1, causal=False, name="ImageBlock", section=section)
        b = mb.module("ImageEncoder", doc="Vision tower: pre-norm before the blocks, post-norm after pooling.")
        pixels = b.input("pixel_values", pixel_input(v))
        x = vision_embed(b, v, pixels, patch_bias=False)
        T.norm_layer(b, "pre_norm", v)
        x = b.call("pre_norm", x, hint="x")
        x = block_stack(b, block, x, v, final_norm=None)
        pooled = pool_tokens(b, v, x)
        T.norm_layer(b, "post_norm", v)
        return b.ret(b.call("post_norm", pooled, hint="pooled"))

    def memory(self, ctx: CompileContext, params: int) -> dict[str, dict[str, int]]:
        """One forward of both towers (one block of each live at a time); training
        keeps both towers' activations for one image-text pair."""
        a = ctx.arch
        nbytes = act_nbytes(ctx)
        t, v = a["text_encoder"], a["image_encoder"]  # folded by finalize before any build
        vt = num_patches(v) + 1
        acts = tower_activations(t, a["context"], nbytes) + tower_activations(v, vt, nbytes)
        ts, tc = tower_training_activations(t["layers"], a["context"], t["hidden_size"])
        vs, vc = tower_training_activations(v["layers"], vt, v["hidden_size"])
        return {"inference": inference(params * weight_nbytes(ctx), 0, acts), "training": training(params, ts + vs, tc + vc)}

    def workload(self, ctx: CompileContext, model: Model) -> dict[str, Any]:
        return {"bindings": {"batch": 1, "seq": ctx.arch["context"]}, "per_unit": 1}
