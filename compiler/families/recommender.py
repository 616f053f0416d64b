"""Two-tower recommenders (the retrieval model of YouTube's and Google's two-tower
systems, Yi et al. 2019 "Sampling-bias-corrected neural modeling"): a user tower and
an item tower, each an id embedding (plus a projection of dense features, added)
followed by an MLP (ReLU) and a linear layer to the shared `task.embedding_dim`;
the score of a (user, item) row is the dot product of the two embeddings.

Trained on interactions, one (user, item) pair per row, with in-batch negatives
(compiler/objectives.py): `contrastive` is the sampled softmax over the batch's items
(each user against every item of the batch, its own the positive), and
`pairwise_ranking` is BPR (Rendle et al. 2009): -log sigmoid(s(u, i+) - s(u, j))
over the batch's other items j.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from metagen.compiler.context import CompileContext
from metagen.compiler.cost import UnitOfWork
from metagen.compiler.families.base import ArchConfig, Family, Knobs, Rule, derived, spec_key
from metagen.compiler.families.blocks import class_name, inference, read_spec, training, weight_nbytes
from metagen.ir.graph import InputSpec, Model
from metagen.ir.types import DType, TensorType

DEFAULT_IDS = 10_000  # users and items when the spec does not say
TINY_IDS = 100
WIDTHS = tuple(range(8, 1032, 8))  # multiples of 8: the id tables dominate, so the width sets the size finely


@dataclass
class TwoTowerConfig(ArchConfig):
    num_users: int | None = spec_key(DEFAULT_IDS)
    num_items: int | None = spec_key(DEFAULT_IDS)
    user_features: int | None = spec_key(0)
    item_features: int | None = spec_key(0)
    hidden_size: int | None = spec_key()  # id embedding and MLP width
    layers: int | None = spec_key()  # MLP layers per tower
    embedding_dim: int = derived(0)  # task.embedding_dim; 0: the width


class TwoTowerRecommender(Family):
    name = "two_tower"
    doc = "Two-tower recommender: user and item towers over ids and features, dot-product score."
    inputs_doc = (
        "user_ids, item_ids: int64 [batch]; user_features: float32 [batch, user_features] and item_features: "
        "float32 [batch, item_features] when those widths are not 0"
    )
    outputs_doc = "user_embedding, item_embedding: float32 [batch, embedding_dim]; score: float32 [batch], their dot product"
    msl_family_name = "mlp"
    accepts_families = ("auto", "mlp")
    built = "a two-tower recommender (MLP towers)"
    rules = (
        Rule(
            ("tabular",), ("embedding",), ("contrastive", "pairwise_ranking", None),
            "user and item towers over ids and features; sampled softmax (contrastive) or BPR (pairwise_ranking)",
        ),
    )
    default_objective = "contrastive"
    tasks = ("recommendation", "retrieval", "ranking", "embedding")
    default_budget = 5_000_000
    default_budget_source = (
        "MetaGen's choice, no standard size exists: the default 10,000 users and 10,000 items at a width of about 250"
    )
    unit = UnitOfWork("user-item pair", "sample")
    config = TwoTowerConfig
    tiny_doc = f"width 32, 2 layers, embedding 16, at most {TINY_IDS} users and items, at most 8 features a side"

    def configure(self, ctx: CompileContext) -> None:
        a = read_spec(ctx, TwoTowerConfig())
        if ctx.spec.task.given("embedding_dim"):
            a["embedding_dim"] = ctx.spec.task.embedding_dim
        ctx.arch = a

    def knobs(self, ctx: CompileContext) -> Knobs | None:
        if "hidden_size" in ctx.pinned and "layers" in ctx.pinned:
            return None
        sizes = [ctx.arch["hidden_size"]] if "hidden_size" in ctx.pinned else list(WIDTHS)
        return Knobs(
            widths=[{"hidden_size": d} for d in sizes],
            depth_keys=[] if "layers" in ctx.pinned else ["layers"],
            max_depth=8,
            ideal_depth=lambda w: 2.0,
        )

    def tiny(self, ctx: CompileContext) -> None:
        a = ctx.arch
        a.update(hidden_size=32, layers=2, embedding_dim=16)
        a["num_users"] = min(a["num_users"], TINY_IDS)
        a["num_items"] = min(a["num_items"], TINY_IDS)
        a["user_features"] = min(a["user_features"], 8)
        a["item_features"] = min(a["item_features"], 8)

    def finalize(self, ctx: CompileContext) -> str | None:
        a = ctx.arch
        if a["layers"] is None or a["hidden_size"] is None:
            return "two_tower: width and depth must be set"
        if not a["embedding_dim"]:
            a["embedding_dim"] = a["hidden_size"]
        return None

    def _tower(self, mb, side: str, ids: int, features: int, a: dict[str, Any]):
        d, e = a["hidden_size"], a["embedding_dim"]
        t = mb.module(f"{side.capitalize()}Tower", doc=f"The {side} tower: id embedding (+ projected features), MLP, projection.")
        x = t.input(f"{side}_ids", TensorType(DType.i64, ("batch",)))
        # PyTorch's defaults for an embedding (N(0, 1)) and He init for the ReLU MLP keep
        # the towers' outputs of order one, so the dot product trains from the start.
        t.layer("embedding", "embedding", num=ids, dim=d, init_std=1.0)
        h = t.call("embedding", x, hint="h")
        if features:
            f = t.input(f"{side}_features", TensorType(DType.f32, ("batch", features)))
            t.layer("features", "linear", in_features=features, out_features=d, bias=True, init_std=(1.0 / features) ** 0.5)
            h = t.op("add", h, t.call("features", f, hint="f"), hint="h")
        for i in range(a["layers"]):
            t.layer(f"mlp_{i}", "linear", in_features=d, out_features=d, bias=True, init_std=(2.0 / d) ** 0.5)
            h = t.op("relu", t.call(f"mlp_{i}", h, hint="h"), hint="h")
        t.layer("projection", "linear", in_features=d, out_features=e, bias=True, init_std=(1.0 / d) ** 0.5)
        return t.ret(t.call("projection", h, hint="embedding"))

    def build(self, ctx: CompileContext) -> Model:
        a = ctx.arch
        mb = self.model_builder(ctx)
        top = mb.module(class_name(ctx.spec.name), doc="Two-tower recommender: user and item embeddings and their dot product.")
        inputs, embeds = [], {}
        for side, ids, features in (("user", a["num_users"], a["user_features"]), ("item", a["num_items"], a["item_features"])):
            tower_def = self._tower(mb, side, ids, features, a)
            top.sub(f"{side}_tower", tower_def)
            x = top.input(f"{side}_ids", TensorType(DType.i64, ("batch",)))
            args = [x]
            inputs.append(InputSpec(f"{side}_ids", x.type, "tokens", 0, ids, f"{side} ids, 0 <= id < num_{side}s"))
            if features:
                f = top.input(f"{side}_features", TensorType(DType.f32, ("batch", features)))
                args.append(f)
                inputs.append(InputSpec(f"{side}_features", f.type, "normal", doc=f"{side} features"))
            embeds[side] = top.call(f"{side}_tower", *args, hint=f"{side}_embedding")
        # dot product = width x the mean of the elementwise product (the IR's reductions are means)
        prod = top.op("mul", embeds["user"], embeds["item"], hint="prod")
        score = top.op("scale", top.op("mean", prod, axis=1, hint="score"), factor=float(a["embedding_dim"]), hint="score")
        top_def = top.ret(embeds["user"], embeds["item"], score, names=["user_embedding", "item_embedding", "score"])
        config = a.pick([k for k, _ in TwoTowerConfig.spec_fields()])
        config["embedding_dim"] = a["embedding_dim"]
        return mb.finish(
            top_def,
            name=top_def.name,
            spec_name=ctx.spec.name,
            inputs=inputs,
            config=config,
            family=self.name,
            symbols={"batch": "batch size (user-item rows)"},
            examples={},
        )

    def memory(self, ctx: CompileContext, params: int) -> dict[str, dict[str, int]]:
        """One forward of one row: each tower's activations, a few widths."""
        a = ctx.arch
        acts = 4 * (a["layers"] + 2) * a["hidden_size"] * 2
        return {"inference": inference(params * weight_nbytes(ctx), 0, acts), "training": training(params, acts, acts)}

    def workload(self, ctx: CompileContext, model: Model) -> dict[str, Any]:
        return {"bindings": {"batch": 1}, "per_unit": 1}
