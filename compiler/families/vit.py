"""Vision transformer classifiers (ViT conventions: patch convolution with bias, a
class token, learned positions as one free parameter, pre-norm blocks, a final norm,
the head on the class token).

Also home of the vision tower shared with the CLIP family (`vision_embed`).
"""

from __future__ import annotations

from typing import Any

from metagen.compiler.context import CompileContext
from metagen.compiler.families import transformer as T
from metagen.compiler.families.base import Family, Knobs, register
from metagen.compiler.families.decoder_lm import class_name, resolve_tower
from metagen.ir.builder import ModelBuilder, ModuleBuilder
from metagen.ir.graph import InputSpec, Model, Value, normal
from metagen.ir.types import DType, TensorType

VISION_KEYS = [
    "image_size", "patch_size", "channels", "hidden_size", "layers", "heads", "kv_heads", "head_dim", "ffn_size",
    "activation", "norm", "norm_eps", "norm_position", "position", "pooling", "bias",
]
SIZE_KEYS = ("hidden_size", "heads", "kv_heads", "head_dim", "ffn_size")
DEFAULT_IMAGE_CLASSES = 1000  # ImageNet-1k, when task.num_classes is absent


def num_patches(cfg: dict[str, Any]) -> int:
    return (cfg["image_size"] // cfg["patch_size"]) ** 2


def vision_structure(cfg: dict[str, Any]) -> tuple[str, str] | None:
    """(key, reason) when the tower's conventions cannot be built at any size."""
    if cfg["image_size"] % cfg["patch_size"]:
        return "patch_size", f"patch_size {cfg['patch_size']} does not divide image_size {cfg['image_size']}"
    if cfg["position"] not in ("learned", "none"):
        return "position", f"position '{cfg['position']}' is not supported by vision towers; use 'learned' or 'none'"
    if cfg["pooling"] not in ("cls", "mean"):
        return "pooling", f"pooling '{cfg['pooling']}' is not supported by vision towers; use 'cls' or 'mean'"
    return None


def report_structure(ctx: CompileContext, problem: tuple[str, str] | None, section=None, where: str = "") -> None:
    """A convention no size can satisfy is an error at the key that asks for it."""
    if problem:
        key, reason = problem
        section = section if section is not None else ctx.spec.architecture
        ctx.sink.error(section.loc(key), f"architecture: {where}{reason}")


def check_vision(cfg: dict[str, Any], pinned: set[str], where: str = "") -> str | None:
    """Fill derived sizes; a reason when the tower cannot be built."""
    problem = vision_structure(cfg)
    if problem:
        return where + problem[1]
    return T.derive(cfg, pinned, False)


def vision_embed(b: ModuleBuilder, cfg: dict[str, Any], pixels: Value, *, patch_bias: bool) -> Value:
    """Patches by a strided convolution, a class token in front, learned positions
    [1, N+1, D] added: pixels [B, C, H, W] -> tokens [B, N+1, D]."""
    d, p = cfg["hidden_size"], cfg["patch_size"]
    b.layer("patch_embed", "conv2d", in_channels=cfg["channels"], out_channels=d, kernel=p, stride=p, bias=patch_bias)
    x = b.op("flatten_spatial", b.call("patch_embed", pixels, hint="patches"), hint="x")
    cls = b.param("cls_token", (1, 1, d), normal(0.02), hint="cls_token")
    x = b.op("prepend", x, cls, hint="x")
    if cfg["position"] == "learned":
        pos = b.param("pos_embed", (1, num_patches(cfg) + 1, d), normal(0.02), hint="pos_embed")
        x = b.op("add", x, pos, hint="x")
    return x


def pool_tokens(b: ModuleBuilder, cfg: dict[str, Any], x: Value) -> Value:
    if cfg["pooling"] == "mean":
        return b.op("mean", x, axis=1, hint="pooled")
    return b.op("select", x, axis=1, index=0, hint="pooled")


def pixel_input(cfg: dict[str, Any]) -> TensorType:
    s = cfg["image_size"]
    return TensorType(DType.f32, ("batch", cfg["channels"], s, s))


def vision_tiny(cfg: dict[str, Any], hidden: int = 64, heads: int = 4) -> None:
    cfg.update(image_size=32, patch_size=8, hidden_size=hidden, layers=2, heads=heads, head_dim=hidden // heads)
    cfg["kv_heads"] = heads
    cfg["channels"] = cfg["channels"] if cfg["channels"] <= 4 else 3
    cfg["ffn_size"] = T.default_ffn(hidden, cfg["activation"])


def warn_family(ctx: CompileContext, built: str) -> None:
    """Tutorial Best Practices 3: a family that does not suit the task is not honoured silently."""
    fam = ctx.spec.architecture.family
    if fam not in ("auto", "transformer"):
        ctx.sink.warning(
            ctx.spec.architecture.loc("family"),
            f"family '{fam}' does not fit this modality and objective; building {built} (a transformer) instead",
        )


def num_classes(ctx: CompileContext, default: int) -> int:
    n = ctx.spec.task.num_classes
    return n if n is not None else default


def activation_bytes(ctx: CompileContext) -> int:
    return {"float32": 4, "bfloat16": 2, "float16": 2}[ctx.spec.constraints.dtype]


def tower_activations(cfg: dict[str, Any], tokens: int, nbytes: int) -> int:
    """One block's activations at a time: tokens * (4d + ffn) values plus the
    attention scores of every head."""
    return (tokens * (4 * cfg["hidden_size"] + cfg["ffn_size"]) + cfg["heads"] * tokens * tokens) * nbytes


def width_candidates(pinned_width: int | None) -> list[int]:
    return [pinned_width] if pinned_width is not None else list(range(64, 8192 + 1, 64))


def single_tower_knobs(ctx: CompileContext, check) -> Knobs | None:
    """Width (multiples of 64, heads and ffn derived) and depth of one transformer
    tower, skipping widths `check(cfg, pinned)` rejects; None when both are pinned."""
    if "hidden_size" in ctx.pinned and "layers" in ctx.pinned:
        return None
    widths = []
    pinned_d = ctx.arch["hidden_size"] if "hidden_size" in ctx.pinned else None
    for d in width_candidates(pinned_d):
        cfg = dict(ctx.arch, hidden_size=d)
        if check(cfg, ctx.pinned) is None:
            widths.append({k: cfg[k] for k in SIZE_KEYS})
    depth_keys = [] if "layers" in ctx.pinned else ["layers"]
    return Knobs(widths=widths, depth_keys=depth_keys, ideal_depth=lambda w: T.ideal_layers(w["hidden_size"]))


class ViTClassifier(Family):
    def resolve(self, ctx: CompileContext) -> None:
        cfg = resolve_tower(ctx, "vit")
        ctx.arch = {k: cfg.get(k) for k in VISION_KEYS}
        ctx.arch["num_classes"] = num_classes(ctx, DEFAULT_IMAGE_CLASSES)
        ctx.arch["context"] = num_patches(ctx.arch) + 1 if ctx.arch["image_size"] % ctx.arch["patch_size"] == 0 else 0
        report_structure(ctx, vision_structure(ctx.arch))
        warn_family(ctx, "a vision transformer classifier")
        outs = list(ctx.spec.modality.outputs or [])
        if outs == ["image"]:
            ctx.sink.warning(
                ctx.spec.modality.loc("outputs"),
                "outputs ['image'] with a classification objective: the model outputs class logits "
                f"('logits' [batch, {ctx.arch['num_classes']}]), not an image; write outputs: [\"label\"] to say so",
            )
        if ctx.spec.task.num_classes is None:
            ctx.sink.note(
                ctx.spec.task.loc(),
                f"task.num_classes is not given; using {DEFAULT_IMAGE_CLASSES} classes (ImageNet-1k)",
            )

    def knobs(self, ctx: CompileContext) -> Knobs | None:
        return single_tower_knobs(ctx, check_vision)

    def tiny(self, ctx: CompileContext) -> None:
        vision_tiny(ctx.arch)
        ctx.arch["num_classes"] = min(ctx.arch["num_classes"], 10)
        ctx.arch["context"] = num_patches(ctx.arch) + 1

    def finalize(self, ctx: CompileContext) -> str | None:
        problem = check_vision(ctx.arch, ctx.pinned)
        if problem is None:
            ctx.arch["context"] = num_patches(ctx.arch) + 1
        return problem

    def build(self, ctx: CompileContext) -> Model:
        a = ctx.arch
        mb = ModelBuilder()
        d = a["hidden_size"]
        tokens = num_patches(a) + 1
        block = T.block_module(mb, a, TensorType(DType.f32, ("batch", tokens, d)), causal=False)
        top = mb.module(class_name(ctx.spec.name), doc="Vision transformer classifier.")
        pixels = top.input("pixel_values", pixel_input(a))
        x = vision_embed(top, a, pixels, patch_bias=bool(a["bias"]))
        top.repeat("blocks", block, a["layers"])
        x = top.call("blocks", x, hint="x")
        T.norm_layer(top, "norm_f", a)
        x = top.call("norm_f", x, hint="x")
        pooled = pool_tokens(top, a, x)
        top.layer("head", "linear", in_features=d, out_features=a["num_classes"], bias=True)
        logits = top.call("head", pooled, hint="logits")
        top_def = top.ret(logits, names=["logits"])
        config = {k: a[k] for k in VISION_KEYS}
        config["num_classes"] = a["num_classes"]
        return mb.finish(
            top_def,
            name=top_def.name,
            spec_name=ctx.spec.name,
            inputs=[InputSpec("pixel_values", pixels.type, "normal", doc="normalized pixels, channels first")],
            config=config,
            family=self.name,
            symbols={"batch": "batch size"},
        )

    def memory(self, ctx: CompileContext, params: int) -> dict[str, int]:
        nbytes = activation_bytes(ctx)
        weights = params * nbytes
        acts = tower_activations(ctx.arch, num_patches(ctx.arch) + 1, nbytes)
        return {"weights": weights, "kv_cache": 0, "activations": acts, "total": weights + acts}

    def workload(self, ctx: CompileContext, model: Model) -> dict[str, Any]:
        return {"unit": "image", "bindings": {"batch": 1}, "per_unit": 1}


register(
    ViTClassifier(
        "vit",
        "Vision transformer image classifier.",
        inputs_doc="pixel_values: float32 [batch, channels, image_size, image_size], normalized pixels",
        outputs_doc="logits: float32 [batch, num_classes], class scores",
    )
)
