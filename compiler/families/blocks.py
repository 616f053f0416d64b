"""Building blocks every family shares: the tower configs, reading a tower from the
spec, the token-embedding and block-stack prologue, the vision tower's patch
embedding, the single-tower knobs, and the small diagnostics families give alike.

The transformer block itself (attention, feed-forward, presets, derived sizes) is
in `transformer.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from metagen.compiler import design_rules as R
from metagen.compiler import devices
from metagen.compiler.context import CompileContext
from metagen.compiler.families import transformer as T
from metagen.compiler.families.base import ArchConfig, Family, Knobs, spec_key
from metagen.ir.builder import ModelBuilder, ModuleBuilder
from metagen.ir.graph import InputSpec, ModuleDef, Value, normal
from metagen.ir.types import DType, TensorType

SIZE_KEYS = ("hidden_size", "heads", "kv_heads", "head_dim", "ffn_size")  # what one width setting moves


# ---------------------------------------------------------------- tower configs


@dataclass
class TransformerStack(ArchConfig):
    """The keys every stack of attention + FFN blocks reads (a family's config or a
    tower's extends it; a subclass may redeclare one with its own default, or as
    `derived` when its family does not read it)."""

    hidden_size: int | None = spec_key()
    layers: int | None = spec_key()
    heads: int | None = spec_key()
    kv_heads: int | None = spec_key()
    head_dim: int | None = spec_key()
    ffn_size: int | None = spec_key()
    activation: str | None = spec_key()
    norm: str | None = spec_key()
    norm_eps: float | None = spec_key()
    norm_position: str | None = spec_key()


@dataclass
class VisionTower(TransformerStack):
    """A vision transformer tower (ViT; CLIP's image tower)."""

    image_size: int | None = spec_key()
    patch_size: int | None = spec_key()
    channels: int | None = spec_key()
    position: str | None = spec_key()
    pooling: str | None = spec_key()
    bias: bool | None = spec_key()


# ---------------------------------------------------------------- reading the spec


def read_spec(ctx: CompileContext, cfg: ArchConfig, section=None, prefix: str = "") -> ArchConfig:
    """The user's keys over `cfg`, each one pinned (`prefix` + key): only the keys
    the config declares, so an unread key stays unpinned (and is diagnosed by
    `Family.report_unused_keys`)."""
    top = section is None or section is ctx.spec.architecture
    section = section if section is not None else ctx.spec.architecture
    reads = set(type(cfg).spec_keys())  # neither towers nor keys declared ignored
    for key, f in type(cfg).spec_fields():
        if key not in reads:
            continue
        value = section.get(key)
        if value is not None and section.given(key):
            cfg[f.name] = list(value) if isinstance(value, list) else value
            ctx.pinned.add(prefix + key)
        elif top and key in CONSTRAINT_KEYS and ctx.spec.constraints.given(CONSTRAINT_KEYS[key]):
            cfg[f.name] = ctx.spec.constraints.get(CONSTRAINT_KEYS[key])  # constraints.image_size and kin
            ctx.pinned.add(prefix + key)
    return cfg


def _constraint_keys() -> dict[str, str]:
    from metagen.frontend import schema as S

    return {f.arch_key: f.name for f in S.lookup("constraints").fields if f.arch_key}


CONSTRAINT_KEYS = _constraint_keys()  # architecture key -> the constraints key that sets it


def resolve_tower(ctx: CompileContext, preset: str, config: type[ArchConfig], section=None, prefix: str = "") -> ArchConfig:
    """A tower config: the user's pinned keys over the preset's conventions, sizes
    left None for the fitter."""
    cfg = config()
    names = set(config.field_names())
    for key, value in T.PRESETS[preset].items():
        if key in names:
            cfg[key] = value
    return read_spec(ctx, cfg, section, prefix)


def class_name(spec_name: str) -> str:
    """A Python class name from free text ("ViT-Base/16 classifier" -> ViTBase16Classifier)."""
    words = []
    cur = ""
    for ch in spec_name:
        if ch.isascii() and ch.isalnum():
            cur += ch
        else:
            if cur:
                words.append(cur)
            cur = ""
    if cur:
        words.append(cur)
    name = "".join(w[:1].upper() + w[1:] for w in words) or "Model"
    if name[0].isdigit():
        name = "M" + name
    if name in ("Model", "CONFIG", "INPUTS", "OUTPUTS"):
        name = name + "Net"
    return name


def report_structure(ctx: CompileContext, problem: tuple[str, str] | None, section=None, where: str = "") -> None:
    """A convention no size can satisfy is an error at the key that asks for it."""
    if problem:
        key, reason = problem
        section = section if section is not None else ctx.spec.architecture
        ctx.sink.error(section.loc(key), f"architecture: {where}{reason}")


def num_classes(ctx: CompileContext, default: int) -> int:
    n = ctx.spec.task.num_classes
    return n if n is not None else default


def weight_nbytes(ctx: CompileContext) -> int:
    """Bytes per weight at the spec's deployment precision (`constraints.precision`)."""
    return devices.weight_bytes(devices.precision_of(ctx.spec.constraints)[0])


def act_nbytes(ctx: CompileContext) -> int:
    """Bytes per activation or KV-cache value at that precision (16-bit under
    weight-only int8)."""
    return devices.activation_bytes(devices.precision_of(ctx.spec.constraints)[0])


def inference(weights: int, kv_cache: int, activations: int) -> dict[str, int]:
    return {"weights": weights, "kv_cache": kv_cache, "activations": activations, "total": weights + kv_cache + activations}


# Mixed-precision training with AdamW, as PyTorch AMP and FSDP run it: fp32 master
# weights (4 B), fp32 gradients (4 B), two fp32 AdamW moments (8 B): 16 B per
# parameter (Rajbhandari et al. 2020, ZeRO, section 3.1). Activations are 16-bit.
TRAIN_WEIGHT_BYTES, TRAIN_GRAD_BYTES, TRAIN_ADAM_BYTES, TRAIN_ACT_BYTES = 4, 4, 8, 2


def training(params: int, stored: int, checkpointed: int) -> dict[str, int]:
    """Training memory of one micro-batch of one sample: `stored` bytes of
    activations kept for the backward pass without checkpointing, `checkpointed`
    with every block recomputed (its inputs kept, one block live at a time)."""
    w, g, o = params * TRAIN_WEIGHT_BYTES, params * TRAIN_GRAD_BYTES, params * TRAIN_ADAM_BYTES
    return {
        "weights": w,
        "gradients": g,
        "optimizer": o,
        "activations": stored,
        "activations_checkpointed": checkpointed,
        "total": w + g + o + stored,
        "total_checkpointed": w + g + o + checkpointed,
    }


def tower_training_activations(layers: int, tokens: int, hidden: int) -> tuple[int, int]:
    """A transformer stack's training activations at 16 bits, without and with
    full activation checkpointing: 34 * tokens * hidden bytes per layer
    (Korthikanti et al. 2022, "Reducing Activation Recomputation", eq. 1, with
    the 5*a*s^2 attention-score term dropped: fused SDPA/flash attention does not
    store the scores); checkpointed, each layer's input (2 * tokens * hidden) plus
    one layer recomputed."""
    per_layer = 34 * tokens * hidden
    return layers * per_layer, layers * 2 * tokens * hidden + per_layer


# ---------------------------------------------------------------- sizes


def tower_activations(cfg: Any, tokens: int, nbytes: int) -> int:
    """One block's activations at a time: tokens * (4d + ffn) values plus the
    attention scores of every head."""
    return (tokens * (4 * cfg["hidden_size"] + cfg["ffn_size"]) + cfg["heads"] * tokens * tokens) * nbytes


def width_candidates(pinned_width: int | None) -> list[int]:
    return [pinned_width] if pinned_width is not None else list(range(64, 8192 + 1, 64))


def single_tower_knobs(ctx: CompileContext, check, ideal_depth=None) -> Knobs | None:
    """Width (multiples of 64, heads and ffn derived) and depth of one transformer
    tower, skipping widths `check(cfg, pinned)` rejects; None when both are pinned.
    The depth follows design rule tower-depth unless the family gives `ideal_depth`
    (a function of the width)."""
    if "hidden_size" in ctx.pinned and "layers" in ctx.pinned:
        return None
    widths = []
    pinned_d = ctx.arch["hidden_size"] if "hidden_size" in ctx.pinned else None
    for d in width_candidates(pinned_d):
        cfg = dict(ctx.arch, hidden_size=d)
        if check(cfg, ctx.pinned) is None:
            widths.append({k: cfg[k] for k in SIZE_KEYS})
    depth_keys = [] if "layers" in ctx.pinned else ["layers"]
    if ideal_depth is not None:
        return Knobs(widths, depth_keys, ideal_depth=ideal_depth)
    return Knobs(
        widths=widths,
        depth_keys=depth_keys,
        ideal_depth=lambda w: R.tower_depth(w["hidden_size"]),
        choice=TOWER_CHOICE,
        depth_rule="tower-depth",
    )


TOWER_CHOICE = "the one whose depth is closest to ViT's for its width (design rule tower-depth)"


# ---------------------------------------------------------------- graph prologue and stack


def learned_positions(b: ModuleBuilder, x: Value, src: Value, cfg: Any, context: int, init_std: float | None = 0.01) -> Value:
    """x plus a learned position embedding of `context` rows, when the config's
    position encoding is 'learned' (rotary positions live in the attention)."""
    if cfg["position"] != "learned":
        return x
    std = {} if init_std is None else {"init_std": init_std}
    b.layer("pos_embeddings", "embedding", num=context, dim=cfg["hidden_size"], **std)
    pos = b.op("positions", src, axis=1, hint="pos")
    return b.op("add", x, b.call("pos_embeddings", pos, hint="pos_emb"), hint="x")


def token_embeddings(b: ModuleBuilder, ids: Value, cfg: Any, context: int, pos_init_std: float | None = 0.01) -> Value:
    """Token embeddings [batch, seq, d] of `ids`, plus learned positions."""
    b.layer("tok_embeddings", "embedding", num=cfg["vocab_size"], dim=cfg["hidden_size"])
    x = b.call("tok_embeddings", ids, hint="x")
    return learned_positions(b, x, ids, cfg, context, pos_init_std)


def block_stack(
    b: ModuleBuilder, block: ModuleDef, x: Value, cfg: Any, final_norm: str | None = "norm_f", hint: str = "x",
    shared: tuple[Value, ...] = (), per_layer: list[Value] | None = None,
):
    """`layers` copies of `block` over x (each also given the `shared` values, and
    its own two of `per_layer`, a KV cache, when given), then the final norm. With a
    cache: (x, the blocks' present keys and values, layer by layer)."""
    k = 2 if per_layer is not None else 0
    b.repeat("blocks", block, cfg["layers"], per_layer=k)
    out = b.call_multi("blocks", x, *shared, *(per_layer or []), hint="x")
    x = out[0]
    if final_norm is not None:
        T.norm_layer(b, final_norm, cfg)
        x = b.call(final_norm, x, hint=hint)
    return (x, out[1:]) if per_layer is not None else x


def tower_block(
    mb: ModelBuilder, ctx: CompileContext, cfg: Any, tokens: Any, *, causal: bool, name: str = "Block", section=None,
    masked: bool = False, cache: bool = False,
) -> ModuleDef:
    """The tower's transformer block over [batch, tokens, d], its nodes located at
    the spec's `layers` key (where the block count is decided). `masked`: the block
    takes the attention bias of a padding mask (`attention_inputs`); `cache`: also
    position ids and a KV cache, returning the present keys and values."""
    x_type = TensorType(DType.f32, ("batch", tokens, cfg["hidden_size"]))
    kw = {}
    if masked or cache:
        total = f"past+{tokens}" if cache else tokens
        kw["bias_type"] = TensorType(DType.f32, ("batch", 1, tokens, total))
    if cache:
        kw["positions_type"] = TensorType(DType.i64, ("batch", tokens))
        kw["cache_type"] = cache_type(cfg)
    with mb.at(Family.key_loc(ctx, "layers", section)):
        return T.block_module(mb, cfg, x_type, causal=causal, name=name, **kw)


def cache_type(cfg: Any) -> TensorType:
    """One layer's past keys (or values): [batch, kv_heads, past, head_dim]."""
    return TensorType(DType.f32, ("batch", cfg["kv_heads"], "past", cfg["head_dim"]))


def mask_input(b: ModuleBuilder, tokens: Value, total: Any = None) -> tuple[Value, InputSpec]:
    """The optional `attention_mask` input, int64 [batch, total] (1 = token, 0 =
    padding), `total` the token count (the cache's and the new ones' with a cache)."""
    t = TensorType(DType.i64, (tokens.type.shape[0], total if total is not None else tokens.type.shape[-1]))
    v = b.input("attention_mask", t)
    return v, InputSpec("attention_mask", t, "mask", 0, 2, "1 = token, 0 = padding (transformers' convention); default all ones")


def decode_inputs(b: ModuleBuilder, tokens: Value, cfg: Any) -> tuple[Value, Value, list[Value], list[InputSpec]]:
    """A decoder's decode-form inputs after its tokens: the attention mask over the
    cache and the new tokens, their position ids, and each layer's past keys and
    values under the names optimum and onnxruntime-genai use."""
    seq = tokens.type.shape[-1]
    mask, mask_spec = mask_input(b, tokens, f"past+{seq}")
    pt = TensorType(DType.i64, (tokens.type.shape[0], seq))
    positions = b.input("position_ids", pt)
    specs = [mask_spec, InputSpec("position_ids", pt, "positions", 0, 0, "position of each new token; default from the mask")]
    past = []
    for i in range(cfg["layers"]):
        for part in ("key", "value"):
            name = f"past_key_values.{i}.{part}"
            past.append(b.input(f"past_{part}_{i}", cache_type(cfg)))
            specs.append(InputSpec(name, cache_type(cfg), "cache", 0, 0, f"layer {i}'s cached {part}s; default empty"))
    return mask, positions, past, specs


def present_names(cfg: Any) -> list[str]:
    return [f"present.{i}.{part}" for i in range(cfg["layers"]) for part in ("key", "value")]


# ---------------------------------------------------------------- vision towers


def num_patches(cfg: Any) -> int:
    return (cfg["image_size"] // cfg["patch_size"]) ** 2


def vision_structure(cfg: Any) -> tuple[str, str] | None:
    """(key, reason) when the tower's conventions cannot be built at any size."""
    if cfg["image_size"] % cfg["patch_size"]:
        return "patch_size", f"patch_size {cfg['patch_size']} does not divide image_size {cfg['image_size']}"
    if cfg["position"] not in ("learned", "none"):
        return "position", f"position '{cfg['position']}' is not supported by vision towers; use 'learned' or 'none'"
    if cfg["pooling"] not in ("cls", "mean"):
        return "pooling", f"pooling '{cfg['pooling']}' is not supported by vision towers; use 'cls' or 'mean'"
    return None


def check_vision(cfg: Any, pinned: set[str], where: str = "") -> str | None:
    """Fill derived sizes; a reason when the tower cannot be built."""
    problem = vision_structure(cfg)
    if problem:
        return where + problem[1]
    return T.derive(cfg, pinned, False)


def vision_embed(b: ModuleBuilder, cfg: Any, pixels: Value, *, patch_bias: bool) -> Value:
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


def pool_tokens(b: ModuleBuilder, cfg: Any, x: Value) -> Value:
    if cfg["pooling"] == "mean":
        return b.op("mean", x, axis=1, hint="pooled")
    return b.op("select", x, axis=1, index=0, hint="pooled")


PIXELS_DOC = "normalized pixels, channels first"


def finish_image_model(family: Any, ctx: CompileContext, mb: ModelBuilder, top_def: ModuleDef, pixels: Value, config: dict):
    """The model of a family whose one input is a batch of images, `pixel_values`."""
    return mb.finish(
        top_def,
        name=top_def.name,
        spec_name=ctx.spec.name,
        inputs=[InputSpec("pixel_values", pixels.type, "normal", doc=PIXELS_DOC)],
        config=config,
        family=family.name,
        symbols={"batch": "batch size"},
    )


def pixel_input(cfg: Any) -> TensorType:
    s = cfg["image_size"]
    return TensorType(DType.f32, ("batch", cfg["channels"], s, s))


def vision_tiny(cfg: Any, hidden: int = 64, heads: int = 4) -> None:
    cfg.update(image_size=32, patch_size=8, hidden_size=hidden, layers=2, heads=heads, head_dim=hidden // heads)
    cfg["kv_heads"] = heads
    cfg["channels"] = cfg["channels"] if cfg["channels"] <= 4 else 3
    cfg["ffn_size"] = T.default_ffn(hidden, cfg["activation"])
