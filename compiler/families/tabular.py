"""Models over one row of a table: regression (`tabular -> regression`) and
classification (`tabular -> label`).

Two variants, as practitioners build them (Gorishniy et al. 2021, "Revisiting Deep
Learning Models for Tabular Data", arXiv:2106.11959):

- `mlp` (`architecture.family: mlp`, and `auto` under 5M parameters): the row's
  numeric columns and the embeddings of its categorical columns, concatenated, go
  through an input block and `layers` hidden blocks, each linear -> LayerNorm ->
  activation -> dropout, then a linear head. A categorical column of cardinality c
  gets an embedding of width min(50, (c + 1) // 2) (fast.ai's rule).
- `ft_transformer` (`architecture.family: transformer`, and `auto` from 5M): the
  feature tokenizer turns numeric column j into the token x_j W_j + b_j and
  categorical column k into its embedding, all of width d; a class token is put in
  front, pre-norm transformer blocks run over the tokens, and the head reads the
  class token through the final norm and a ReLU.

The columns come from `task`: `num_features` (or the names in `numeric_features`)
numeric columns, read as one float input `features` [batch, num_features]
(standardize them beforehand), and `categorical_features` ("name:cardinality"),
each an int64 input of its own, named after its column, [batch].
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from metagen.compiler.context import CompileContext
from metagen.compiler.cost import UnitOfWork
from metagen.compiler.families import transformer as T
from metagen.compiler.families.base import ArchConfig, Family, Knobs, Rule, derived, spec_key
from metagen.compiler.families.blocks import (
    TransformerStack,
    block_stack, class_name, inference, read_spec, single_tower_knobs, tower_block, training, weight_nbytes,
)
from metagen.ir.builder import ModuleBuilder
from metagen.ir.graph import ZEROS, InputSpec, Model, Value, normal
from metagen.ir.types import DType, TensorType

DEFAULT_FEATURES = 16  # numeric columns when the spec names none
DEFAULT_CLASSES = 2
FT_TRANSFORMER_FROM = 5_000_000  # `auto` builds the FT-Transformer from this budget up
COLUMN = re.compile(r"([A-Za-z_][A-Za-z0-9_]*):([0-9]+)")
RESERVED_INPUTS = ("features",)

MLP_CONVENTIONS = dict(activation="relu", norm="layernorm", norm_eps=1e-5, dropout=0.1)
FT_CONVENTIONS = dict(
    activation="geglu", norm="layernorm", norm_eps=1e-5, dropout=0.1, norm_position="pre", position="none", bias=True,
)


@dataclass
class TabularConfig(TransformerStack):
    dropout: float | None = spec_key()
    variant: str = derived("mlp")
    norm_position: str = derived("pre")
    position: str = derived("none")
    bias: bool = derived(True)
    num_features: int = derived(0)
    categorical: list = derived([])  # [[name, cardinality], ...]
    head: str = derived("regression")  # or "label"
    num_outputs: int = derived(1)


def embed_width(cardinality: int) -> int:
    """fast.ai's rule for a categorical column's embedding in an MLP."""
    return min(50, (cardinality + 1) // 2)


def read_columns(ctx: CompileContext, cfg: TabularConfig, default_features: int = DEFAULT_FEATURES) -> None:
    """Numeric and categorical columns from `task`, each problem an error at its key."""
    task = ctx.spec.task
    named = list(task.numeric_features or [])
    count = task.num_features
    if named and count is not None and count != len(named):
        ctx.sink.error(task.loc("num_features"), f"task.num_features {count} differs from the {len(named)} numeric_features")
    cats: list[list[Any]] = []
    for text in task.categorical_features or []:
        m = COLUMN.fullmatch(str(text).strip())
        if m is None or int(m.group(2)) < 2:
            ctx.sink.error(
                task.loc("categorical_features"),
                f"task.categorical_features: '{text}' is not 'name:cardinality' (an identifier and a count >= 2)",
            )
            continue
        if m.group(1) in RESERVED_INPUTS or m.group(1) in [c[0] for c in cats]:
            ctx.sink.error(task.loc("categorical_features"), f"task.categorical_features: column name '{m.group(1)}' is taken")
            continue
        cats.append([m.group(1), int(m.group(2))])
    if count is None:
        count = len(named) if named else (0 if cats else default_features)
        if not named and not cats:
            ctx.sink.note(task.loc(), f"task.num_features is not given; the model reads {count} numeric columns")
    cfg.num_features = count
    cfg.categorical = cats


class Tabular(Family):
    name = "tabular"
    doc = "MLP or FT-Transformer over the numeric and categorical columns of a table row."
    inputs_doc = "features: float32 [batch, num_features]; one int64 [batch] input per categorical column"
    outputs_doc = "prediction: float32 [batch, num_outputs] (regression) or logits: float32 [batch, num_classes]"
    msl_family_name = "mlp"
    accepts_families = ("auto", "mlp", "transformer")
    built = "a tabular MLP"
    rules = (
        Rule(("tabular",), ("regression",), ("regression", None)),
        Rule(("tabular",), ("label",), ("classification", None)),
    )
    default_objective = None  # regression for `prediction`, classification for `logits`
    tasks = ("regression", "classification")
    unit = UnitOfWork("row", "sample")
    default_budget = 1_000_000
    default_budget_source = "FT-Transformer's default configuration (d = 192, 3 blocks, about 0.9M; Gorishniy et al. 2021)"
    config = TabularConfig
    tiny_doc = "hidden 32, 2 blocks (FT-Transformer: 4 heads of 8), at most 8 numeric and 2 categorical columns of at most 6 values"

    def hub_task(self, arch) -> str:
        return "tabular-classification" if arch.head == "label" else "tabular-regression"

    def configure(self, ctx: CompileContext) -> None:
        cfg = TabularConfig()
        written = ctx.spec.architecture.family
        budget = ctx.spec.constraints.parameter_budget.max
        transformer = written == "transformer" or (written == "auto" and budget >= FT_TRANSFORMER_FROM)
        cfg.update(FT_CONVENTIONS if transformer else MLP_CONVENTIONS)
        cfg.variant = "ft_transformer" if transformer else "mlp"
        read_spec(ctx, cfg)
        read_columns(ctx, cfg)
        outs = list(ctx.spec.modality.outputs or [])
        cfg.head = "label" if "label" in outs else "regression"
        if cfg.head == "label":
            cfg.num_outputs = ctx.spec.task.num_classes or DEFAULT_CLASSES
        else:
            cfg.num_outputs = ctx.spec.task.num_outputs or 1
        if cfg.variant == "mlp" and cfg.activation in T.GATED:
            ctx.sink.error(ctx.spec.architecture.loc("activation"), f"architecture.activation '{cfg.activation}' is gated; the tabular MLP takes an ungated one (relu, gelu, silu)")
        ctx.arch = cfg

    def knobs(self, ctx: CompileContext) -> Knobs | None:
        if ctx.arch.variant == "ft_transformer":
            return single_tower_knobs(ctx, lambda cfg, pinned: T.derive(cfg, pinned, False), ideal_depth=lambda w: 3.0)
        if "hidden_size" in ctx.pinned and "layers" in ctx.pinned:
            return None
        pinned_d = ctx.arch["hidden_size"] if "hidden_size" in ctx.pinned else None
        widths = [{"hidden_size": d} for d in ([pinned_d] if pinned_d else range(32, 8192 + 1, 32))]
        return Knobs(widths, [] if "layers" in ctx.pinned else ["layers"], ideal_depth=lambda w: 3.0)

    def tiny(self, ctx: CompileContext) -> None:
        a = ctx.arch
        a.update(hidden_size=32, layers=2)
        a["num_features"] = min(a["num_features"], 8)
        a["categorical"] = [[n, min(c, 6)] for n, c in a["categorical"][:2]]
        if a["head"] == "label":
            a["num_outputs"] = min(a["num_outputs"], 10)
        if a["variant"] == "ft_transformer":
            a.update(heads=4, kv_heads=4, head_dim=8, ffn_size=T.default_ffn(32, a["activation"]))

    def finalize(self, ctx: CompileContext) -> str | None:
        if ctx.arch.variant == "ft_transformer":
            return T.derive(ctx.arch, ctx.pinned, False)
        return None

    def build(self, ctx: CompileContext) -> Model:
        a = ctx.arch
        mb = self.model_builder(ctx)
        top = mb.module(class_name(ctx.spec.name), doc=f"Tabular {'FT-Transformer' if a.variant == 'ft_transformer' else 'MLP'}.")
        inputs, specs = column_inputs(top, a)
        if a.variant == "ft_transformer":
            h = ft_transformer(mb, ctx, top, a, inputs)
        else:
            h = mlp_trunk(mb, top, a, inputs)
        out_name = "logits" if a.head == "label" else "prediction"
        top.layer("head", "linear", in_features=a.hidden_size, out_features=a.num_outputs)
        top_def = top.ret(top.call("head", h, hint=out_name), names=[out_name])
        config = {k: v for k, v in a.pick(TabularConfig.spec_keys()).items() if v is not None}
        config.update(variant=a.variant, num_features=a.num_features, categorical=[list(c) for c in a.categorical])
        config["num_classes" if a.head == "label" else "num_outputs"] = a.num_outputs
        return mb.finish(
            top_def, name=top_def.name, spec_name=ctx.spec.name, inputs=specs, config=config, family=self.name,
            symbols={"batch": "batch size (rows)"},
        )

    def memory(self, ctx: CompileContext, params: int) -> dict[str, dict[str, int]]:
        """Weights plus one row's activations (a few widths per block; the
        FT-Transformer's tokens x (4d + ffn) and attention scores)."""
        a = ctx.arch
        tokens = a.num_features + len(a.categorical) + 1
        if a.variant == "ft_transformer":
            acts = tokens * (4 * a.hidden_size + a.ffn_size) + a.heads * tokens * tokens
        else:
            acts = 4 * a.hidden_size * (a.layers + 1)
        return {"inference": inference(params * weight_nbytes(ctx), 0, acts * 4), "training": training(params, 2 * acts, 2 * acts)}


def column_inputs(top: ModuleBuilder, a: Any) -> tuple[dict[str, Value], list[InputSpec]]:
    inputs: dict[str, Value] = {}
    specs: list[InputSpec] = []
    if a["num_features"]:
        inputs["features"] = top.input("features", TensorType(DType.f32, ("batch", a["num_features"])))
        specs.append(InputSpec("features", inputs["features"].type, "normal", doc="standardized numeric columns"))
    for name, card in a["categorical"]:
        inputs[name] = top.input(name, TensorType(DType.i64, ("batch",)))
        specs.append(InputSpec(name, inputs[name].type, "tokens", 0, card, f"category ids of column {name}, 0 <= id < {card}"))
    return inputs, specs


def mlp_trunk(mb, top: ModuleBuilder, a: Any, inputs: dict[str, Value]) -> Value:
    parts = [inputs["features"]] if "features" in inputs else []
    width = a["num_features"]
    for name, card in a["categorical"]:
        top.layer(f"embed_{name}", "embedding", num=card, dim=embed_width(card))
        parts.append(top.call(f"embed_{name}", inputs[name], hint=f"emb_{name}"))
        width += embed_width(card)
    x = top.op("concat", *parts, axis=-1, hint="x") if len(parts) > 1 else parts[0]
    top.sub("input_block", mlp_block(mb, a, width, "InputBlock"))
    x = top.call("input_block", x, hint="h")
    top.repeat("blocks", mlp_block(mb, a, a["hidden_size"], "Block"), a["layers"])
    return top.call("blocks", x, hint="h")


def mlp_block(mb, a: Any, width: int, name: str):
    """linear -> norm -> activation -> dropout."""
    b = mb.module(name, doc="Linear, norm, activation, dropout.")
    x = b.input("x", TensorType(DType.f32, ("batch", width)))
    b.layer("linear", "linear", in_features=width, out_features=a["hidden_size"])
    T.norm_layer(b, "norm", a)
    h = b.call("norm", b.call("linear", x, hint="h"), hint="h")
    h = b.op(a["activation"], h, hint="h")
    return b.ret(b.op("dropout", h, rate=float(a["dropout"]), hint="h"))


def ft_transformer(mb, ctx: CompileContext, top: ModuleBuilder, a: Any, inputs: dict[str, Value]) -> Value:
    d = a["hidden_size"]
    tokens = []
    if "features" in inputs:
        n = a["num_features"]
        w = top.param("num_weight", (n, d), normal(0.02), hint="num_weight")
        bias = top.param("num_bias", (n, d), ZEROS, hint="num_bias")
        x = top.op("unsqueeze", inputs["features"], axes=(2,), hint="x")
        tokens.append(top.op("add", top.op("mul", x, w, hint="tok"), bias, hint="num_tokens"))
    for name, card in a["categorical"]:
        top.layer(f"embed_{name}", "embedding", num=card, dim=d)
        e = top.call(f"embed_{name}", inputs[name], hint=f"emb_{name}")
        tokens.append(top.op("unsqueeze", e, axes=(1,), hint=f"tok_{name}"))
    x = top.op("concat", *tokens, axis=1, hint="tokens") if len(tokens) > 1 else tokens[0]
    cls = top.param("cls_token", (1, 1, d), normal(0.02), hint="cls_token")
    x = top.op("prepend", x, cls, hint="x")
    count = a["num_features"] + len(a["categorical"]) + 1
    x = block_stack(top, tower_block(mb, ctx, a, count, causal=False), x, a)
    h = top.op("relu", top.op("select", x, axis=1, index=0, hint="cls"), hint="h")
    return top.op("dropout", h, rate=float(a["dropout"]), hint="h")
