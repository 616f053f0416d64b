"""Object detection: DETR (Carion et al. 2020, "End-to-End Object Detection with
Transformers"), as transformers' `DetrForObjectDetection` builds it with a ResNet
backbone: the ResNet-50 trunk of cnn.py with frozen batch norm, a 1 x 1
`input_projection` to the transformer width, sine positions of the feature grid,
a post-norm encoder whose self-attention adds the positions to queries and keys,
a post-norm decoder over `num_anchors` learned object queries (self-attention,
cross-attention to the encoder output, feed-forward; the query embedding added to
queries and keys, the grid positions to the cross-attention keys), a final decoder
norm, and two heads: class scores (num_classes + 1, the last "no object") and a
3-layer MLP to boxes (cx, cy, w, h) through a sigmoid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from metagen.compiler.context import CompileContext
from metagen.compiler.cost import UnitOfWork
from metagen.compiler.families.base import ArchConfig, Family, Knobs, Rule, derived, spec_key
from metagen.compiler.families.blocks import (
    finish_image_model,
    act_nbytes, class_name, inference, read_spec, tower_training_activations, training, weight_nbytes,
)
from metagen.compiler.families.cnn import RESNET_DEPTHS, TINY_DEPTHS, resnet_trunk
from metagen.ir.builder import ModelBuilder, ModuleBuilder
from metagen.ir.graph import Model, ModuleDef, Value, normal
from metagen.ir.types import DType, TensorType

DEFAULT_QUERIES = 100
DEFAULT_DETECTION_CLASSES = 91  # COCO's category ids (transformers' DETR checkpoints)
DETR_ACTIVATIONS = ("relu", "gelu", "silu", "gelu_tanh", "quick_gelu")


@dataclass
class DetrArch(ArchConfig):
    image_size: int | None = spec_key()
    channels: int | None = spec_key()
    hidden_size: int | None = spec_key()
    layers: int | None = spec_key()  # encoder layers = decoder layers
    heads: int | None = spec_key()
    ffn_size: int | None = spec_key()
    activation: str | None = spec_key()
    norm_eps: float | None = spec_key()
    num_queries: int = derived(0)
    num_classes: int = derived(0)
    backbone: dict = derived(None)


def backbone_config(tiny: bool) -> dict[str, Any]:
    """ResNet-50 with frozen batch norm (eps 1e-5), as DETR's backbone."""
    block, depths = RESNET_DEPTHS[50]
    return {
        "layers": 50, "block": block, "depths": list(TINY_DEPTHS if tiny else depths), "hidden_size": 8 if tiny else 64,
        "activation": "relu", "norm_eps": 1e-5, "frozen": True,
    }


def _seq(d: int, n: Any) -> TensorType:
    return TensorType(DType.f32, ("batch", n, d))


def attention_module(mb: ModelBuilder, d: int, heads: int, sq: int, sk: int) -> ModuleDef:
    """DETR's attention: (query input, key input, value input) -> o_proj(SDPA)."""
    b = mb.module("DetrAttention", doc="Multi-head attention with biased q, k, v and output projections.")
    q_in, k_in, v_in = b.input("q_in", _seq(d, sq)), b.input("k_in", _seq(d, sk)), b.input("v_in", _seq(d, sk))
    for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
        b.layer(name, "linear", in_features=d, out_features=d, bias=True)
    q, k, v = b.call("q_proj", q_in), b.call("k_proj", k_in), b.call("v_proj", v_in)
    att = b.op("attention", q, k, v, heads=heads, kv_heads=heads, head_dim=d // heads, hint="att")
    return b.ret(b.call("o_proj", att))


def _mlp(mb: ModelBuilder, d: int, ffn: int, n: int, act: str) -> ModuleDef:
    b = mb.module("DetrMLP", doc="fc1 -> activation -> fc2.")
    x = b.input("x", _seq(d, n))
    b.layer("fc1", "linear", in_features=d, out_features=ffn, bias=True)
    b.layer("fc2", "linear", in_features=ffn, out_features=d, bias=True)
    return b.ret(b.call("fc2", b.op(act, b.call("fc1", x))))


def _residual_norm(b: ModuleBuilder, name: str, x: Value, y: Value, d: int, eps: float) -> Value:
    b.layer(name, "layer_norm", dim=d, eps=eps)
    return b.call(name, b.op("add", x, y))


def encoder_layer(mb: ModelBuilder, a: Any, n: int) -> ModuleDef:
    d, eps = a["hidden_size"], a["norm_eps"]
    b = mb.module("DetrEncoderLayer", doc="Post-norm self-attention (positions on queries and keys) and feed-forward.")
    x, pos = b.input("x", _seq(d, n)), b.input("pos", TensorType(DType.f32, (1, n, d)))
    b.sub("self_attn", attention_module(mb, d, a["heads"], n, n))
    qk = b.op("add", x, pos, hint="qk")
    x = _residual_norm(b, "self_attn_layer_norm", x, b.call("self_attn", qk, qk, x), d, eps)
    b.sub("mlp", _mlp(mb, d, a["ffn_size"], n, a["activation"]))
    return b.ret(_residual_norm(b, "final_layer_norm", x, b.call("mlp", x), d, eps))


def decoder_layer(mb: ModelBuilder, a: Any, q: int, n: int) -> ModuleDef:
    d, eps = a["hidden_size"], a["norm_eps"]
    b = mb.module("DetrDecoderLayer", doc="Post-norm self-attention, cross-attention to the image, feed-forward.")
    h, qpos = b.input("h", _seq(d, q)), b.input("query_pos", TensorType(DType.f32, (1, q, d)))
    mem, pos = b.input("memory", _seq(d, n)), b.input("pos", TensorType(DType.f32, (1, n, d)))
    b.sub("self_attn", attention_module(mb, d, a["heads"], q, q))
    qk = b.op("add", h, qpos, hint="qk")
    h = _residual_norm(b, "self_attn_layer_norm", h, b.call("self_attn", qk, qk, h), d, eps)
    b.sub("encoder_attn", attention_module(mb, d, a["heads"], q, n))
    cross = b.call("encoder_attn", b.op("add", h, qpos), b.op("add", mem, pos), mem)
    h = _residual_norm(b, "encoder_attn_layer_norm", h, cross, d, eps)
    b.sub("mlp", _mlp(mb, d, a["ffn_size"], q, a["activation"]))
    return b.ret(_residual_norm(b, "final_layer_norm", h, b.call("mlp", h), d, eps))


def check_detr(a: Any) -> tuple[str, str] | None:
    if a["activation"] not in DETR_ACTIVATIONS:
        return "activation", f"DETR's activation is one of {', '.join(DETR_ACTIVATIONS)}, not {a['activation']!r}"
    if a["hidden_size"] is not None and a["heads"] is not None and a["hidden_size"] % a["heads"]:
        return "heads", f"{a['heads']} heads do not divide hidden_size {a['hidden_size']}"
    if a["hidden_size"] is not None and a["hidden_size"] % 4:
        return "hidden_size", "DETR's hidden_size must be a multiple of 4 (two sine halves of even width)"
    if a["image_size"] < 32:
        return "image_size", f"image_size {a['image_size']} is smaller than the backbone's 32x downsampling"
    return None


def grid_side(image_size: int) -> int:
    """The backbone's output side: stem conv and pool, then three stride-2 stages."""
    side = image_size
    for _ in range(5):
        side = (side + 2 - 3) // 2 + 1
    return side


class Detr(Family):
    name = "detr"
    pipeline_tag = "object-detection"
    doc = "DETR object detector (ResNet backbone, transformer encoder-decoder, set prediction)."
    inputs_doc = "pixel_values: float32 [batch, channels, image_size, image_size], normalized pixels"
    outputs_doc = (
        "logits: float32 [batch, num_queries, num_classes + 1] (last: no object); "
        "pred_boxes: float32 [batch, num_queries, 4], (cx, cy, w, h) normalized to [0, 1]"
    )
    accepts_families = ("auto", "transformer")
    built = "a DETR detector"
    default_budget = 42_000_000
    default_budget_source = "DETR-R50 (41.5M with 91 classes; Carion et al. 2020)"
    rules = (Rule(("image",), ("bounding_boxes",), ("object_detection", None)),)
    default_objective = "object_detection"
    tasks = ("object_detection",)
    unit = UnitOfWork("image", "image")
    config = DetrArch
    tiny_doc = (
        "64 x 64 images (a 2 x 2 feature grid), backbone as `resnet`'s tiny bottleneck trunk, d = 64, 2 layers, "
        "4 heads, ffn 128, at most 10 queries, at most 10 classes"
    )

    def configure(self, ctx: CompileContext) -> None:
        task = ctx.spec.task
        a = DetrArch(image_size=800, channels=3, heads=8, activation="relu", norm_eps=1e-5)
        ctx.arch = read_spec(ctx, a)
        a = ctx.arch
        a["num_queries"] = task.num_anchors if task.given("num_anchors") else DEFAULT_QUERIES
        a["num_classes"] = task.num_classes if task.num_classes is not None else DEFAULT_DETECTION_CLASSES
        a["backbone"] = backbone_config(False)
        problem = check_detr(a)
        if problem:
            key, reason = problem
            ctx.sink.error(self.key_loc(ctx, key), f"architecture: {reason}")
        if task.num_classes is None:
            ctx.sink.note(task.loc(), f"task.num_classes is not given; using {DEFAULT_DETECTION_CLASSES} (COCO's category ids)")

    def knobs(self, ctx: CompileContext) -> Knobs | None:
        free_width, free_depth = "hidden_size" not in ctx.pinned, "layers" not in ctx.pinned
        if not free_width and not free_depth:
            return None
        widths = [{"hidden_size": w} for w in range(128, 1025, 64)] if free_width else [{}]
        if "ffn_size" not in ctx.pinned:
            widths = [dict(w, ffn_size=8 * w.get("hidden_size", ctx.arch["hidden_size"])) for w in widths]
        return Knobs(widths=widths, depth_keys=["layers"] if free_depth else [], ideal_depth=lambda w: 6.0)

    def tiny(self, ctx: CompileContext) -> None:
        a = ctx.arch
        a.update(image_size=64, hidden_size=64, layers=2, heads=4, ffn_size=128)
        a["channels"] = a["channels"] if a["channels"] <= 4 else 3
        a["num_queries"] = min(a["num_queries"], 10)
        a["num_classes"] = min(a["num_classes"], 10)
        a["backbone"] = backbone_config(True)

    def finalize(self, ctx: CompileContext) -> str | None:
        problem = check_detr(ctx.arch)
        return problem[1] if problem else None

    def build(self, ctx: CompileContext) -> Model:
        a = ctx.arch
        d, q = a["hidden_size"], a["num_queries"]
        mb = self.model_builder(ctx)
        top = mb.module(class_name(ctx.spec.name), doc="DETR object detector.")
        s = a["image_size"]
        pixels = top.input("pixel_values", TensorType(DType.f32, ("batch", a["channels"], s, s)))
        bb = mb.module("Backbone", doc="ResNet trunk with frozen batch norm.")
        bx = bb.input("x", pixels.type)
        top.sub("backbone", bb.ret(resnet_trunk(mb, bb, a["backbone"], bx)))
        features = top.call("backbone", pixels, hint="features")
        top.layer("input_projection", "conv2d", in_channels=features.type.shape[1], out_channels=d, kernel=1, bias=True)
        projected = top.call("input_projection", features, hint="projected")
        n = projected.type.shape[2] * projected.type.shape[3]
        memory = top.op("flatten_spatial", projected, hint="tokens")
        pos = top.op("sine_positions_2d", projected, features=d // 2, hint="pos")
        enc = mb.module("DetrEncoder", doc="Post-norm transformer encoder over the feature grid.")
        ex, epos = enc.input("x", memory.type), enc.input("pos", pos.type)
        enc.repeat("layers", encoder_layer(mb, a, n), a["layers"])
        top.sub("encoder", enc.ret(enc.call("layers", ex, epos)))
        memory = top.call("encoder", memory, pos, hint="memory")
        qp = top.param("query_pos", (q, d), normal(1.0))
        qpos = top.op("unsqueeze", qp, axes=(0,), hint="query_pos")
        # The decoder starts from zeros [batch, queries, d]: 0 * (query_pos broadcast over the batch).
        batch_one = top.op("slice", memory, axis=1, start=0, end=1, hint="row")
        zeros = top.op("scale", top.op("add", top.op("scale", batch_one, factor=0.0), qpos), factor=0.0, hint="zeros")
        dec = mb.module("DetrDecoder", doc="Post-norm transformer decoder over the object queries, then a final norm.")
        dh, dq = dec.input("h", zeros.type), dec.input("query_pos", qpos.type)
        dm, dp = dec.input("memory", memory.type), dec.input("pos", pos.type)
        dec.repeat("layers", decoder_layer(mb, a, q, n), a["layers"])
        dec.layer("layernorm", "layer_norm", dim=d, eps=a["norm_eps"])
        top.sub("decoder", dec.ret(dec.call("layernorm", dec.call("layers", dh, dq, dm, dp))))
        h = top.call("decoder", zeros, qpos, memory, pos, hint="decoded")
        top.layer("class_labels_classifier", "linear", in_features=d, out_features=a["num_classes"] + 1, bias=True)
        logits = top.call("class_labels_classifier", h, hint="logits")
        top.sub("bbox_predictor", box_mlp(mb, d, q))
        boxes = top.op("sigmoid", top.call("bbox_predictor", h), hint="pred_boxes")
        extra = self.extra_heads(mb, top, a, projected, h)
        top_def = top.ret(logits, boxes, *extra.values(), names=["logits", "pred_boxes", *extra])
        config = {k: a[k] for k in type(a).spec_keys()}
        config.update(num_queries=q, num_classes=a["num_classes"], backbone=dict(a["backbone"]), box_format="cxcywh")
        config.update(self.extra_config(a))
        return finish_image_model(self, ctx, mb, top_def, pixels, config)

    def extra_heads(self, mb: ModelBuilder, top: ModuleBuilder, a: Any, projected: Value, h: Value) -> dict[str, Value]:
        """Outputs a variant adds after the class and box heads (instance_seg.py's masks)."""
        return {}

    def extra_config(self, a: Any) -> dict[str, Any]:
        return {}

    def memory(self, ctx: CompileContext, params: int) -> dict[str, dict[str, int]]:
        """The backbone's largest block (as the resnet family) or the transformer's
        working set, for one image; training adds the transformer's stored activations."""
        from metagen.compiler.families.cnn import block_maps

        a = ctx.arch
        bb = dict(a["backbone"], image_size=a["image_size"])
        maps = block_maps(bb)
        n, q, d = grid_side(a["image_size"]) ** 2, a["num_queries"], a["hidden_size"]
        transformer = (n + q) * (4 * d + a["ffn_size"]) + a["heads"] * (n * n + q * n)
        acts = max(max(maps), transformer) * act_nbytes(ctx)
        stored, ckpt = tower_training_activations(2 * a["layers"], n + q, d)
        return {
            "inference": inference(params * weight_nbytes(ctx), 0, acts),
            "training": training(params, stored + sum(maps) * 2, ckpt + max(maps) * 2),
        }


def box_mlp(mb: ModelBuilder, d: int, q: int, out: int = 4, name: str = "BoxMLP") -> ModuleDef:
    """DETR's box head before the sigmoid: two linear + ReLU layers, then a linear to 4
    (`out`: the mask head's embedding MLP has the same shape, as MaskFormer's)."""
    layer = mb.module(f"{name}Layer", doc="linear -> ReLU.")
    x = layer.input("x", _seq(d, q))
    layer.layer("fc", "linear", in_features=d, out_features=d, bias=True)
    layer_def = layer.ret(layer.op("relu", layer.call("fc", x)))
    b = mb.module(name, doc=f"{'Box regression' if out == 4 else 'Mask embedding'} MLP (3 layers).")
    x = b.input("x", _seq(d, q))
    b.repeat("hidden", layer_def, 2)
    b.layer("out", "linear", in_features=d, out_features=out, bias=True)
    return b.ret(b.call("out", b.call("hidden", x)))


# ---------------------------------------------------------------- dense one-stage detector


@dataclass
class DenseArch(ArchConfig):
    image_size: int | None = spec_key()
    channels: int | None = spec_key()
    hidden_size: int | None = spec_key()  # the backbone's stem width
    layers: int | None = spec_key()  # the backbone's ResNet depth (18 or 34: basic blocks)
    activation: str | None = spec_key()
    norm_eps: float | None = spec_key()
    num_classes: int = derived(0)
    block: str = derived("")
    depths: list = derived([])


DENSE_STRIDE = 16  # the backbone's first three stages
DENSE_DEPTHS = (18, 34)


def dense_grid(image_size: int) -> int:
    return image_size // DENSE_STRIDE


class DenseDetector(Family):
    name = "dense_detector"
    pipeline_tag = "object-detection"
    doc = "One-stage anchor-free dense detector (FCOS-style), for small budgets and edge devices."
    inputs_doc = "pixel_values: float32 [batch, channels, image_size, image_size], normalized pixels"
    outputs_doc = (
        "logits: [batch, cells, num_classes + 1] (last: background); box_distances: [batch, cells, 4] (l, t, r, b) "
        "from each cell's center, as fractions of the image side; centerness: [batch, cells] logits"
    )
    msl_family_name = "cnn"
    accepts_families = ("cnn",)
    rules = (Rule(("image",), ("bounding_boxes",), ("object_detection", None), families=("cnn",)),)
    default_budget = 4_000_000
    default_budget_source = "YOLOv8n (3.2M; Ultralytics 2023), the usual edge detector"
    default_objective = "object_detection"
    tasks = ("object_detection",)
    unit = UnitOfWork("image", "image")
    config = DenseArch
    tiny_doc = "64 x 64 images (a 4 x 4 grid of cells), stem width 8, blocks per stage 2, 1, 1, head 32 wide, at most 10 classes"

    def configure(self, ctx: CompileContext) -> None:
        a = DenseArch(image_size=512, channels=3, hidden_size=64, layers=18, activation="relu", norm_eps=1e-5)
        ctx.arch = read_spec(ctx, a)
        a = ctx.arch
        a["num_classes"] = ctx.spec.task.num_classes if ctx.spec.task.num_classes is not None else 80  # COCO's classes
        if a["layers"] not in DENSE_DEPTHS:
            ctx.sink.error(self.key_loc(ctx, "layers"), f"architecture: the dense detector's backbone depth is 18 or 34, not {a['layers']}")
        if a["image_size"] % DENSE_STRIDE or a["image_size"] < 2 * DENSE_STRIDE:
            ctx.sink.error(self.key_loc(ctx, "image_size"), f"architecture: image_size must be a multiple of {DENSE_STRIDE}, at least {2 * DENSE_STRIDE}")

    def knobs(self, ctx: CompileContext) -> Knobs | None:
        if "hidden_size" in ctx.pinned:
            return None
        return Knobs(widths=[{"hidden_size": w} for w in range(8, 129, 8)], depth_keys=[])

    def tiny(self, ctx: CompileContext) -> None:
        a = ctx.arch
        a.update(image_size=64, hidden_size=8, depths=[2, 1, 1])
        a["block"] = "basic"
        a["channels"] = a["channels"] if a["channels"] <= 4 else 3
        a["num_classes"] = min(a["num_classes"], 10)

    def finalize(self, ctx: CompileContext) -> str | None:
        a = ctx.arch
        if a["layers"] not in DENSE_DEPTHS or a["image_size"] % DENSE_STRIDE:
            return "the dense detector needs a depth of 18 or 34 and an image side divisible by 16"
        if not a["depths"]:
            a["block"], a["depths"] = RESNET_DEPTHS[a["layers"]][0], list(RESNET_DEPTHS[a["layers"]][1][:3])
        return None

    def build(self, ctx: CompileContext) -> Model:
        from metagen.compiler.families.cnn import conv_bn

        a = ctx.arch
        mb = self.model_builder(ctx)
        top = mb.module(class_name(ctx.spec.name), doc="One-stage dense detector.")
        s = a["image_size"]
        pixels = top.input("pixel_values", TensorType(DType.f32, ("batch", a["channels"], s, s)))
        bb = mb.module("Backbone", doc="ResNet trunk, three stages (stride 16).")
        bx = bb.input("x", pixels.type)
        trunk = {k: a[k] for k in ("activation", "norm_eps", "block", "hidden_size", "depths")}
        top.sub("backbone", bb.ret(resnet_trunk(mb, bb, trunk, bx)))
        feats = top.call("backbone", pixels, hint="features")
        width = 4 * a["hidden_size"]
        head = top.op(a["activation"], conv_bn(top, "head_conv", feats, width, 3, 1, a["norm_eps"], "head_bn"), hint="head")
        outs = {}
        for name, n in (("cls_out", a["num_classes"] + 1), ("box_out", 4), ("ctr_out", 1)):
            top.layer(name, "conv2d", in_channels=width, out_channels=n, kernel=3, padding=1, bias=True, init_std=0.01)
            outs[name] = top.op("flatten_spatial", top.call(name, head))
        logits = outs["cls_out"]
        distances = top.op("sigmoid", outs["box_out"], hint="box_distances")
        centerness = top.op("select", outs["ctr_out"], axis=2, index=0, hint="centerness")
        top_def = top.ret(logits, distances, centerness, names=["logits", "box_distances", "centerness"])
        config = {k: a[k] for k in DenseArch.spec_keys()}
        config.update(num_classes=a["num_classes"], block=a["block"], depths=list(a["depths"]), stride=DENSE_STRIDE)
        return finish_image_model(self, ctx, mb, top_def, pixels, config)

    def memory(self, ctx: CompileContext, params: int) -> dict[str, dict[str, int]]:
        """The backbone's blocks as the resnet family, plus the head's maps."""
        from metagen.compiler.families.cnn import block_maps

        a = ctx.arch
        maps = block_maps(dict(a, depths=list(a["depths"]) + [0]))
        g = dense_grid(a["image_size"])
        head = (4 * a["hidden_size"] * 2 + a["num_classes"] + 6) * g * g
        return {
            "inference": inference(params * weight_nbytes(ctx), 0, max(max(maps), head) * act_nbytes(ctx)),
            "training": training(params, (sum(maps) + head) * 2, (max(maps) + head) * 2),
        }
