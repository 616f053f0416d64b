"""Graph neural networks (`graph -> label | regression | graph`): GCN, GAT or GIN
layers over a batch of graphs given as node rows and an edge index, with a readout
for graph classification or regression, node classification or regression (per-node
outputs over the same graph) or link prediction.

A batch is PyTorch Geometric's layout: `node_features` [nodes, node_features],
`edge_index` int64 [2, edges] (row 0 the source, row 1 the target of each directed
edge; list both directions for an undirected graph), `edge_features` [edges,
edge_features] when `task.edge_features` is given, and for graph classification
the `batch` vector (the graph of each node, int64 [nodes]) with `num_nodes` (the
nodes of each graph, int64 [batch]: PyG's `ptr.diff()`, DGL's `batch_num_nodes()`),
whose length is the number of graphs. Every size is symbolic: any number of nodes,
edges and graphs.

Message passing uses `gather_rows` (a node's row onto its edges), `scatter_add` (the
messages into their target nodes), `segment_softmax` (GAT's attention over each
node's incoming edges) and `degree`; the layers follow PyG's `GCNConv` (self-loops,
symmetric normalization), `GATConv` (Velickovic et al. 2018; concatenated heads,
LeakyReLU(0.2) scores, `edge_dim`; no self-loops are added) and `GINConv` with a
two-layer MLP and eps = 0 (Xu et al. 2019).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from metagen.compiler.context import CompileContext
from metagen.compiler.cost import UnitOfWork
from metagen.compiler.families.base import ArchConfig, Family, Knobs, Rule, derived, spec_key
from metagen.compiler.families.blocks import class_name, inference, read_spec, training, weight_nbytes
from metagen.ir.builder import ModelBuilder, ModuleBuilder
from metagen.ir.graph import ZEROS, InputSpec, Model, ModuleDef, Value, normal
from metagen.ir.types import DType, TensorType

DEFAULT_NODE_FEATURES = 16
DEFAULT_CLASSES = 2
EXAMPLES = {"nodes": 6, "edges": 12, "queries": 4}  # example_inputs' sizes (edge ids < 6)
TASKS = ("graph_classification", "node_classification", "link_prediction")


@dataclass
class GraphConfig(ArchConfig):
    message_passing: str | None = spec_key()
    hidden_size: int | None = spec_key()
    layers: int | None = spec_key()
    heads: int | None = spec_key()
    activation: str | None = spec_key()
    task: str = derived("graph_classification")
    node_features: int = derived(DEFAULT_NODE_FEATURES)
    edge_features: int = derived(0)
    num_classes: int = derived(DEFAULT_CLASSES)
    regression: bool = derived(False)
    num_outputs: int = derived(0)  # graph or node regression's head width (num_classes is then 0)
    node_outputs: bool = derived(False)  # graph -> graph: per-node regression outputs


class GraphNet(Family):
    name = "graph"
    pipeline_tag = "graph-ml"
    doc = "GCN, GAT or GIN message passing with a graph, node or link readout."
    inputs_doc = "node_features [nodes, F], edge_index int64 [2, edges] (+ edge_features, batch, num_nodes, pairs by task)"
    outputs_doc = (
        "logits: [batch, num_classes] (graphs), [nodes, num_classes] (nodes) or [queries, 2] (links); "
        "prediction [batch, num_outputs] (graph regression); node_outputs [nodes, num_outputs] (graph -> graph)"
    )
    msl_family_name = "gnn"
    accepts_families = ("auto", "gnn")
    built = "a graph neural network"
    rules = (
        Rule(("graph",), ("label",), ("classification", None), "graph, node or link classification by task.type"),
        Rule(("graph",), ("regression",), ("regression", None), "a value per graph"),
        Rule(("graph",), ("graph",), ("regression", None), "task.num_outputs values per node of the same graph"),
    )
    tasks = TASKS + ("classification", "regression")
    unit = UnitOfWork("graph", "sample")
    default_budget = 2_000_000
    default_budget_source = "OGB's GIN baselines for molecule graphs (about 1.9M; Hu et al. 2020)"
    config = GraphConfig
    tiny_doc = "hidden 16, 2 layers, 2 heads, at most 8 node and 4 edge features, at most 4 classes"

    def configure(self, ctx: CompileContext) -> None:
        cfg = GraphConfig(message_passing="gat", heads=4, activation="relu")
        read_spec(ctx, cfg)
        task = ctx.spec.task
        outputs = ctx.spec.modality.outputs or []
        cfg.node_outputs = "graph" in outputs
        cfg.regression = "regression" in outputs or cfg.node_outputs
        cfg.task = task.type if task.type in TASKS and not cfg.regression else "graph_classification"
        if cfg.node_outputs:
            cfg.task = "node_regression"
        cfg.node_features = task.node_features or DEFAULT_NODE_FEATURES
        if task.node_features is None:
            ctx.sink.note(task.loc(), f"task.node_features is not given; nodes carry {DEFAULT_NODE_FEATURES} features")
        cfg.edge_features = task.edge_features or 0
        if cfg.edge_features and cfg.message_passing != "gat":
            ctx.sink.warning(task.loc("edge_features"), f"task.edge_features: {cfg.message_passing.upper()} layers do not read edge features; only GAT does (message_passing: gat)")
            cfg.edge_features = 0
        cfg.num_classes = 2 if cfg.task == "link_prediction" else (task.num_classes or DEFAULT_CLASSES)
        if cfg.regression:
            cfg.num_classes, cfg.num_outputs = 0, task.num_outputs or 1
        if cfg.message_passing != "gat" and "heads" in ctx.pinned:
            ctx.sink.warning(ctx.spec.architecture.loc("heads"), f"architecture.heads has no effect on {cfg.message_passing.upper()} layers; ignored")
        ctx.arch = cfg

    def knobs(self, ctx: CompileContext) -> Knobs | None:
        if "hidden_size" in ctx.pinned and "layers" in ctx.pinned:
            return None
        step = 8 * (ctx.arch.heads if ctx.arch.message_passing == "gat" else 4)
        pinned_d = ctx.arch["hidden_size"] if "hidden_size" in ctx.pinned else None
        widths = [{"hidden_size": d} for d in ([pinned_d] if pinned_d else range(step, 8192 + 1, step))]
        return Knobs(widths, [] if "layers" in ctx.pinned else ["layers"], max_depth=16, ideal_depth=lambda w: 3.0)

    def tiny(self, ctx: CompileContext) -> None:
        a = ctx.arch
        a.update(hidden_size=16, layers=2, heads=2)
        a["node_features"] = min(a["node_features"], 8)
        a["edge_features"] = min(a["edge_features"], 4)
        a["num_classes"] = min(a["num_classes"], 4)

    def finalize(self, ctx: CompileContext) -> str | None:
        a = ctx.arch
        if a.message_passing == "gat" and a.hidden_size % a.heads:
            return f"heads {a.heads} do not divide hidden_size {a.hidden_size}"
        return None

    def build(self, ctx: CompileContext) -> Model:
        a = ctx.arch
        mb = self.model_builder(ctx)
        top = mb.module(class_name(ctx.spec.name), doc=f"{a.message_passing.upper()} graph network ({a.task}).")
        x = top.input("node_features", TensorType(DType.f32, ("nodes", a.node_features)))
        edge_index = top.input("edge_index", TensorType(DType.i64, (2, "edges")))
        specs = [
            InputSpec("node_features", x.type, "normal", doc="one row per node"),
            InputSpec("edge_index", edge_index.type, "tokens", 0, EXAMPLES["nodes"], "source (row 0) and target (row 1) node of each edge"),
        ]
        edge_attr = None
        if a.edge_features:
            edge_attr = top.input("edge_features", TensorType(DType.f32, ("edges", a.edge_features)))
            specs.append(InputSpec("edge_features", edge_attr.type, "normal", doc="one row per edge"))
        src = top.op("select", edge_index, axis=0, index=0, hint="src")
        dst = top.op("select", edge_index, axis=0, index=1, hint="dst")
        d = a.hidden_size
        top.layer("input_proj", "linear", in_features=a.node_features, out_features=d)
        h = top.call("input_proj", x, hint="h")
        extra = []
        if a.message_passing == "gcn":
            deg = top.op("degree", dst, h, hint="deg")
            extra = [top.op("sqrt", deg, eps=1.0, hint="norm")]  # sqrt(in-degree + self-loop)
        layer = {"gcn": gcn_layer, "gat": gat_layer, "gin": gin_layer}[a.message_passing](mb, a)
        for i in range(a.layers):
            top.sub(f"layers{i}", layer)
            args = [h, src, dst] + extra + ([edge_attr] if edge_attr is not None and a.message_passing == "gat" else [])
            h = top.call(f"layers{i}", *args, hint="h")
            if i + 1 < a.layers or a.task == "graph_classification":  # node and link scores read the last layer raw
                h = top.op(a.activation, h, hint="h")
        h, more = readout(top, a, h)
        specs += more
        out_name = "node_outputs" if a.node_outputs else "prediction" if a.regression else "logits"
        if a.task == "link_prediction":
            logits = h
        else:
            top.layer("head", "linear", in_features=d, out_features=a.num_outputs or a.num_classes)
            logits = top.call("head", h, hint=out_name)
        top_def = top.ret(logits, names=[out_name])
        config = {k: v for k, v in a.pick(GraphConfig.spec_keys()).items() if v is not None}
        if a.message_passing != "gat":
            config.pop("heads", None)
        config.update(task=a.task, node_features=a.node_features, edge_features=a.edge_features)
        config["num_outputs" if a.regression else "num_classes"] = a.num_outputs or a.num_classes
        symbols = {"nodes": "nodes in the batch", "edges": "directed edges in the batch"}
        if a.task == "graph_classification":
            symbols["batch"] = "graphs in the batch"
        if a.task == "link_prediction":
            symbols["queries"] = "node pairs scored"
        return mb.finish(
            top_def, name=top_def.name, spec_name=ctx.spec.name, inputs=specs, config=config, family=self.name,
            symbols=symbols, examples={k: v for k, v in EXAMPLES.items() if k in symbols},
        )

    def memory(self, ctx: CompileContext, params: int) -> dict[str, dict[str, int]]:
        """Weights plus one graph of 64 nodes and 256 edges: node rows, and per edge
        the messages (heads x width for GAT)."""
        a = ctx.arch
        nodes, edges = 64, 256
        acts = nodes * (a.node_features + 4 * a.hidden_size) + edges * (a.hidden_size + a.heads + a.edge_features)
        return {"inference": inference(params * weight_nbytes(ctx), 0, acts * 4), "training": training(params, acts * a.layers * 2, acts * 2)}

    def data_transforms(self, ctx: CompileContext) -> list:
        """Synthetic batches of small graphs whose labels or targets the features and
        the edges carry (backends/runtime/data.py `graph_batches`)."""
        from metagen.compiler.objectives import DataTransform

        a = ctx.arch
        roles = {"node_features": "node_features", "edge_index": "edge_index"}
        roles.update({k: k for k in ("edge_features",) if a.edge_features})
        roles.update({"batch": "batch", "num_nodes": "num_nodes"} if a.task == "graph_classification" else {})
        roles.update({"pairs": "pairs"} if a.task == "link_prediction" else {})
        return [DataTransform(
            "graph_batches", inputs=roles, outputs={"targets": "targets"} if a.regression else {"labels": "labels"},
            params={
                "task": a.task, "classes": a.num_outputs or a.num_classes, "nodes_per_graph": 8, "seed": 0,
                "regression": a.regression,
            },
        )]


def layer_type(a: Any) -> TensorType:
    return TensorType(DType.f32, ("nodes", a["hidden_size"]))


def _edge_inputs(b: ModuleBuilder) -> tuple[Value, Value]:
    ids = TensorType(DType.i64, ("edges",))
    return b.input("src", ids), b.input("dst", ids)


def gcn_layer(mb: ModelBuilder, a: Any) -> ModuleDef:
    """PyG GCNConv: out_i = sum_{j -> i or j = i} x_j W / sqrt(d_i d_j) + b, d = in-degree + 1."""
    d = a["hidden_size"]
    b = mb.module("GCNLayer", doc="Graph convolution with self-loops and symmetric normalization.")
    x = b.input("x", layer_type(a))
    src, dst = _edge_inputs(b)
    norm = b.input("norm", TensorType(DType.f32, ("nodes",)))
    b.layer("lin", "linear", in_features=d, out_features=d, bias=False)
    h = b.call("lin", x, hint="h")
    scale = b.op("mul", b.op("gather_rows", norm, src, hint="n_src"), b.op("gather_rows", norm, dst, hint="n_dst"), hint="scale")
    msg = b.op("div", b.op("gather_rows", h, src, hint="msg"), b.op("unsqueeze", scale, axes=(1,), hint="scale"), hint="msg")
    agg = b.op("scatter_add", msg, dst, h, hint="agg")
    self_norm = b.op("unsqueeze", b.op("mul", norm, norm, hint="deg"), axes=(1,), hint="deg")
    out = b.op("add", agg, b.op("div", h, self_norm, hint="self"), hint="out")
    bias = b.param("bias", (d,), ZEROS, hint="bias")
    return b.ret(b.op("add", out, bias, hint="out"))


def gat_layer(mb: ModelBuilder, a: Any) -> ModuleDef:
    """PyG GATConv (concat=True): per head, score_ij = LeakyReLU(a_src . W x_j + a_dst . W x_i
    [+ a_edge . W_e e_ij]), softmax over i's incoming edges, out_i = sum_j alpha_ij W x_j, + b."""
    d, heads = a["hidden_size"], a["heads"]
    c = d // heads
    b = mb.module("GATLayer", doc="Multi-head graph attention over each node's incoming edges.")
    x = b.input("x", layer_type(a))
    src, dst = _edge_inputs(b)
    b.layer("lin", "linear", in_features=d, out_features=d, bias=False)
    h = b.op("reshape", b.call("lin", x, hint="h"), shape=(-1, heads, c), hint="h")  # [nodes, heads, c]
    att_src = b.param("att_src", (heads, c), normal(0.1), hint="att_src")
    att_dst = b.param("att_dst", (heads, c), normal(0.1), hint="att_dst")
    a_src = b.op("scale", b.op("mean", b.op("mul", h, att_src, hint="s"), axis=-1, hint="s"), factor=float(c), hint="a_src")
    a_dst = b.op("scale", b.op("mean", b.op("mul", h, att_dst, hint="s"), axis=-1, hint="s"), factor=float(c), hint="a_dst")
    score = b.op("add", b.op("gather_rows", a_src, src, hint="s_src"), b.op("gather_rows", a_dst, dst, hint="s_dst"), hint="score")
    if a["edge_features"]:
        ea = b.input("edge_attr", TensorType(DType.f32, ("edges", a["edge_features"])))
        b.layer("lin_edge", "linear", in_features=a["edge_features"], out_features=d, bias=False)
        he = b.op("reshape", b.call("lin_edge", ea, hint="he"), shape=(-1, heads, c), hint="he")
        att_edge = b.param("att_edge", (heads, c), normal(0.1), hint="att_edge")
        a_edge = b.op("scale", b.op("mean", b.op("mul", he, att_edge, hint="s"), axis=-1, hint="s"), factor=float(c), hint="a_edge")
        score = b.op("add", score, a_edge, hint="score")
    score = b.op("leaky_relu", score, slope=0.2, hint="score")
    alpha = b.op("segment_softmax", score, dst, x, hint="alpha")  # [edges, heads]
    msg = b.op("mul", b.op("gather_rows", h, src, hint="msg"), b.op("unsqueeze", alpha, axes=(2,), hint="alpha"), hint="msg")
    out = b.op("reshape", b.op("scatter_add", msg, dst, x, hint="agg"), shape=(-1, d), hint="out")
    bias = b.param("bias", (d,), ZEROS, hint="bias")
    return b.ret(b.op("add", out, bias, hint="out"))


def gin_layer(mb: ModelBuilder, a: Any) -> ModuleDef:
    """PyG GINConv, eps = 0: out_i = MLP(x_i + sum_{j -> i} x_j), MLP = linear, ReLU, linear."""
    d = a["hidden_size"]
    b = mb.module("GINLayer", doc="Graph isomorphism layer (sum aggregation, eps = 0).")
    x = b.input("x", layer_type(a))
    src, dst = _edge_inputs(b)
    agg = b.op("scatter_add", b.op("gather_rows", x, src, hint="msg"), dst, x, hint="agg")
    z = b.op("add", x, agg, hint="z")
    b.layer("mlp_in", "linear", in_features=d, out_features=d)
    b.layer("mlp_out", "linear", in_features=d, out_features=d)
    return b.ret(b.call("mlp_out", b.op("relu", b.call("mlp_in", z, hint="z"), hint="z"), hint="out"))


def readout(top: ModuleBuilder, a: Any, h: Value) -> tuple[Value, list[InputSpec]]:
    """Node rows -> what the head reads: the mean of each graph's nodes, the nodes
    themselves (node classification and regression), or for link prediction 2-class logits [queries, 2] of each pair:
    (0, <h_u, h_v>), so softmax cross-entropy is the logistic loss of the score."""
    if a["task"] in ("node_classification", "node_regression"):
        return h, []
    if a["task"] == "link_prediction":
        pairs = top.input("pairs", TensorType(DType.i64, (2, "queries")))
        u = top.op("gather_rows", h, top.op("select", pairs, axis=0, index=0, hint="u"), hint="h_u")
        v = top.op("gather_rows", h, top.op("select", pairs, axis=0, index=1, hint="v"), hint="h_v")
        score = top.op("scale", top.op("mean", top.op("mul", u, v, hint="uv"), axis=-1, hint="score"), factor=float(a["hidden_size"]), hint="score")
        logits = top.op("stack", top.op("scale", score, factor=0.0, hint="zero"), score, axis=-1, hint="logits")
        return logits, [InputSpec("pairs", pairs.type, "tokens", 0, EXAMPLES["nodes"], "node pairs to score, like edge_index")]
    batch = top.input("batch", TensorType(DType.i64, ("nodes",)))
    sizes = top.input("num_nodes", TensorType(DType.i64, ("batch",)))
    total = top.op("scatter_add", h, batch, sizes, hint="total")
    count = top.op("clip", top.op("cast", sizes, dtype="f32", hint="count"), low=1.0, high=1e9, hint="count")
    pooled = top.op("div", total, top.op("unsqueeze", count, axes=(1,), hint="count"), hint="pooled")
    return pooled, [
        InputSpec("batch", batch.type, "tokens", 0, 1, "the graph of each node, 0 <= id < graphs, sorted"),
        InputSpec("num_nodes", sizes.type, "tokens", 1, 2, "nodes of each graph (the count of its id in batch)"),
    ]
