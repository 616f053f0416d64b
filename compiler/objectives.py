"""Training objectives as IR, and the compute-feasibility estimate of a training run.

An objective is a small loss `Model` (no parameters) built with the IR builder from
the trained model's outputs and the batch's targets, so every backend lowers the
same loss with the emitters it already has for the forward pass. What an objective
does to a batch before the loss (noise a sample, hide tokens, draw labels, pair
inputs) is declared next to its loss as `DataTransform`s, which name the training
runtime's function (backends/runtime/data.py) and the inputs and batch fields it
works on; the runtime draws what is random from a seeded generator, and the graph
itself is deterministic.

| objective      | loss graph                                                        |
| -------------- | ----------------------------------------------------------------- |
| autoregressive | cross_entropy(logits[:, :-1], input_ids[:, 1:])                   |
| classification | cross_entropy(logits, labels)                                     |
| diffusion      | mse(predicted noise, noise); noising x_t = sqrt(a_t) x0 + sqrt(1-a_t) e is data-side |
| contrastive    | (CE(s·I·Tᵀ, arange) + CE(s·T·Iᵀ, arange)) / 2, s = exp(logit_scale) |
| masked         | masked_cross_entropy(logits, original tokens, mask); masking is data-side |
| regression     | mse(prediction, targets) or huber(prediction, targets) (training.config.loss) |
| forecasting    | mse (or huber) of prediction against future_values, the steps after the window |
| reconstruction | mse(reconstruction, the input window)                             |
| value_based    | huber(q_values[a], r + gamma (1 - done) max q_target(s')); DQN, target net data-side |
| policy_gradient| PPO: -min(r A, clip(r) A) + 0.5 mse(V, R) - 0.01 H                |
| semantic_segmentation | cross_entropy(logits as [B, H, W, C], label map) (+ dice_loss(logits, label map) with `dice`) |
| object_detection | DETR: masked_cross_entropy(logits, matched classes, 1 or 0.1) + 5 L1 + 2 (1 - GIoU) on matched boxes; Hungarian matching is data-side, after the forward |
| instance_segmentation | object_detection's, plus on matched queries the mean per-pixel sigmoid BCE of pred_masks and DETR's soft Dice (weights 1, 1) |
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from metagen.compiler.context import CompileContext
from metagen.compiler.cost import model_flops
from metagen.compiler.pass_infra import Fact, Pass, PassResult
from metagen.ir.builder import ModelBuilder
from metagen.ir.graph import InputSpec, Layer, Model, ModuleDef, Repeat, Sub
from metagen.ir.types import DType, TensorType

# Stable Diffusion's training schedule ("scaled_linear" in diffusers): betas are the
# squares of a linear ramp of sqrt(beta) from sqrt(0.00085) to sqrt(0.012).
DIFFUSION_SCHEDULE = {"kind": "scaled_linear", "steps": 1000, "beta_start": 0.00085, "beta_end": 0.012}


class ObjectiveError(ValueError):
    """The model's outputs do not carry what the objective needs."""


def _fed(model, tokens: bool = True) -> tuple[str, ...]:
    """The model inputs every training batch holds (without the token inputs when
    `tokens` is False): the optional ones (an attention_mask, a KV cache) keep the
    model's default, so no data step reads or rewrites them."""
    return tuple(i.name for i in model.inputs if not i.optional and (tokens or i.kind != "tokens"))


@dataclass(frozen=True)
class DataTransform:
    """One data-side step of an objective, run by the training program on every batch
    before the loss: the function `kind` of the runtime's TRANSFORMS table
    (backends/runtime/data.py). `inputs` maps the roles it reads or rewrites to model
    inputs, `outputs` the roles it adds to batch fields (the loss's ("batch", name)
    sources), `carry` the inputs in which synthetic data carries the key it draws (a
    label, a pair id) so that it can be learned, `params` its settings."""

    kind: str
    inputs: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    carry: tuple[str, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)
    # Model outputs the step reads: it runs after the forward pass, on its (detached)
    # predictions, before the loss (DETR's matching); the others run before the model.
    reads: tuple[str, ...] = ()

    def table(self) -> dict[str, Any]:
        """The entry of the program's TRAIN["data"] and of the training report."""
        out = {
            "kind": self.kind,
            "inputs": dict(self.inputs),
            "outputs": dict(self.outputs),
            "carry": list(self.carry),
            "params": dict(self.params),
        }
        if self.reads:
            out["reads"] = list(self.reads)
        return out


@dataclass
class LossProgram:
    """What a training program needs to know about its loss.

    `loss` is the IR loss model; `sources[i]` says where the loss's i-th input comes
    from: ("output", name) of the model or ("batch", name) of the batch. `data` are
    the transforms that make a batch of model inputs into the batch the loss reads.
    """

    objective: str
    loss: Model
    sources: list[tuple[str, str]]
    data: list[DataTransform] = field(default_factory=list)
    seq_len: int = 0
    notes: str = ""

    def data_table(self) -> list[dict[str, Any]]:
        return [t.table() for t in self.data]

    def describe(self) -> dict[str, Any]:
        return {
            "objective": self.objective,
            "loss_inputs": [f"{kind}:{name}" for kind, name in self.sources],
            "data": self.data_table(),
            "seq_len": self.seq_len,
            "notes": self.notes,
        }


def _output(model: Model, *names: str) -> tuple[str, TensorType]:
    top = model.top_module
    for n in names:
        if n in top.output_names:
            return n, top.outputs[top.output_names.index(n)].type
    raise ObjectiveError(f"the model has no output named {' or '.join(names)} (it has {', '.join(top.output_names)})")


def _inputs_into(model: Model, op: str) -> list[str]:
    """The model inputs that are an operand of an `op` node (or layer), directly or
    through child-module calls: what an input *is* is read from the graph, not from
    its name."""

    def reaches(md: ModuleDef, index: int) -> bool:
        value = md.inputs[index]
        for node in md.nodes:
            for pos, operand in enumerate(node.operands):
                if operand is not value:
                    continue
                if node.kind == "op" and node.op == op:
                    return True
                child = md.children.get(node.target) if node.kind == "call" else None
                if isinstance(child, Layer) and child.op == op:
                    return True
                if isinstance(child, Repeat):
                    pos = child.module_input(pos, len(model.modules[child.module].inputs))
                if isinstance(child, (Sub, Repeat)) and reaches(model.modules[child.module], pos):
                    return True
        return False

    top = model.top_module
    return [spec.name for i, spec in enumerate(model.inputs) if reaches(top, i)]


def _bind(t: TensorType, sizes: dict[str, int]) -> TensorType:
    """Concrete sizes for every symbol but the batch."""
    return t.with_shape(tuple(sizes[d] if isinstance(d, str) and d in sizes else d for d in t.shape))


def _finish(mb: ModelBuilder, top, model: Model, inputs: list[InputSpec]) -> Model:
    # Symbols the loss inputs keep from the model (a U-Net's height and width) keep
    # their meaning and example size.
    used = {d for i in inputs for d in i.type.shape if isinstance(d, str)} - {"batch"}
    return mb.finish(
        top,
        name=top.name,
        spec_name=f"{model.spec_name} loss",
        inputs=inputs,
        config={},
        family="loss",
        symbols={"batch": "batch size", **{k: v for k, v in model.symbols.items() if k in used}},
        examples={k: v for k, v in model.examples.items() if k in used},
        loc=model.loc,
    )


def autoregressive(model: Model, seq: int) -> LossProgram:
    name, lt = _output(model, "logits")
    ids = next((i for i in model.inputs if i.kind == "tokens" and "seq" in i.type.shape), None)
    if ids is None or lt.rank != ids.type.rank + 1:
        raise ObjectiveError("autoregressive training needs token inputs [..., seq] and logits [..., seq, vocab]")
    axis = ids.type.shape.index("seq")
    sizes = {"seq": seq}
    mb = ModelBuilder()
    m = mb.module("NextTokenLoss", doc="Next-token cross-entropy: position t predicts token t+1.")
    logits = m.input("logits", _bind(lt, sizes))
    tokens = m.input(ids.name, _bind(ids.type, sizes))
    pred = m.op("slice", logits, axis=axis, start=0, end=seq - 1, hint="pred")
    labels = m.op("slice", tokens, axis=axis, start=1, end=seq, hint="labels")
    loss = m.op("cross_entropy", pred, labels, hint="loss")
    top = m.ret(loss, names=["loss"])
    spec = [InputSpec("logits", logits.type, "normal"), InputSpec(ids.name, tokens.type, "tokens", 0, ids.high)]
    return LossProgram("autoregressive", _finish(mb, top, model, spec), [("output", name), ("batch", ids.name)], {}, seq)


def classification(model: Model, seq: int) -> LossProgram:
    """Class logits [batch, C], or per-position logits [batch, ..., C] with one label
    per position."""
    name, lt = _output(model, "logits")
    lt = _bind(lt, {"seq": seq})
    mb = ModelBuilder()
    m = mb.module("ClassificationLoss", doc="Cross-entropy of the class logits against integer labels.")
    logits = m.input("logits", lt)
    labels = m.input("labels", TensorType(DType.i64, lt.shape[:-1]))
    top = m.ret(m.op("cross_entropy", logits, labels, hint="loss"), names=["loss"])
    classes = lt.shape[-1]
    spec = [InputSpec("logits", lt, "normal"), InputSpec("labels", labels.type, "tokens", 0, classes)]
    draw = DataTransform(
        "class_labels",
        outputs={"labels": "labels"},
        carry=_fed(model),
        params={"classes": classes, "shape": list(labels.type.shape)},
    )
    return LossProgram(
        "classification",
        _finish(mb, top, model, spec),
        [("output", name), ("batch", draw.outputs["labels"])],
        [draw],
        seq,
    )


def diffusion(model: Model, seq: int) -> LossProgram:
    """DDPM's noise-prediction loss. The noised input is the first float input shaped
    like the prediction; the timestep input, if any, is the one the model feeds to
    its timestep embedding."""
    name, pt = _output(model, "noise_pred", "sample", "out")
    sample = next((i for i in model.inputs if i.kind == "normal" and i.type.shape == pt.shape), None)
    if sample is None:
        raise ObjectiveError(f"diffusion training needs a float input shaped like the prediction {pt}")
    roles = {"sample": sample.name}
    timesteps = _inputs_into(model, "timestep_embedding")
    if timesteps:
        roles["timestep"] = timesteps[0]
    noising = DataTransform(
        "diffusion_noise", inputs=roles, outputs={"noise": "noise"}, params={"schedule": dict(DIFFUSION_SCHEDULE)}
    )
    mb = ModelBuilder()
    m = mb.module("NoisePredictionLoss", doc="MSE between the predicted and the true noise.")
    pred = m.input("noise_pred", pt)
    noise = m.input("noise", pt)
    top = m.ret(m.op("mse", pred, noise, hint="loss"), names=["loss"])
    spec = [InputSpec("noise_pred", pt, "normal"), InputSpec("noise", pt, "normal")]
    return LossProgram(
        "diffusion",
        _finish(mb, top, model, spec),
        [("output", name), ("batch", noising.outputs["noise"])],
        [noising],
        seq,
        "x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) noise with t ~ U{0..steps-1}, drawn by the data side",
    )


PAIR_KEYS = 16  # distinct pair ids that synthetic contrastive batches carry


def _same_group(m, group):
    """[B, B]: 1 where rows i and j belong to the same group (the data side's group
    ids, whole numbers as floats), < 1e-21 elsewhere."""
    gap = m.op("sub", m.op("unsqueeze", group, axes=(1,)), m.op("unsqueeze", group, axes=(0,)), hint="gap")
    return m.op("exp", m.op("scale", m.op("mul", gap, gap), factor=-50.0), hint="same")


IN_BATCH_SCALE = 20.0  # sentence-transformers' MultipleNegativesRankingLoss scale (1 / temperature 0.05)
IN_BATCH_REDRAW = 0.25  # share of a synthetic positive's tokens redrawn from its anchor


def in_batch_contrastive(model: Model, seq: int) -> LossProgram:
    """A single-tower embedder's contrastive loss, with in-batch negatives: each row
    has one partner (the row with the same `pair` number, given by the data side),
    every other row is a negative. Cosine similarities times IN_BATCH_SCALE; for row
    i, cross-entropy of [its partner's similarity, the other rows' similarities]
    against the partner: the partner's similarity is moved into the row's own (self)
    slot and its column pushed out by -1e4, so the label is the row's own position.
    Symmetric, since every row is the anchor of its pair once. Each process's rows
    are its own batch, as CLIP's."""
    name, et = _output(model, "embedding")
    mb = ModelBuilder()
    m = mb.module("InBatchContrastiveLoss", doc="In-batch-negatives InfoNCE over pairs of rows (sentence-transformers).")
    emb = m.input("embedding", et)
    pair = m.input("pair", TensorType(DType.f32, (et.shape[0],)))
    n = m.op("l2_normalize", emb, hint="unit")
    sim = m.op("scale", m.op("matmul", n, n, transpose_b=True, hint="cos"), factor=IN_BATCH_SCALE, hint="sim")
    rows = m.op("positions", sim, axis=0, hint="rows")
    rows_f = m.op("cast", rows, dtype="f32", hint="rows_f")
    eye = _same_group(m, rows_f)  # 1 on the diagonal, < 1e-21 off it
    partner = m.op("sub", _same_group(m, pair), eye, hint="partner")  # 1 at the row's partner
    ones = m.op("exp", m.op("scale", m.op("unsqueeze", rows_f, axes=(1,)), factor=0.0), hint="ones")  # [B, 1]
    positive = m.op("matmul", m.op("mul", partner, sim), ones, hint="positive")  # [B, 1]: the partner's similarity
    others = m.op("sub", m.op("mul", sim, _one_minus(m, eye)), m.op("scale", partner, factor=1e4), hint="others")
    logits = m.op("add", others, m.op("mul", eye, positive), hint="logits")
    top = m.ret(m.op("cross_entropy", logits, rows, hint="loss"), names=["loss"])
    pairs = DataTransform(
        "pair_rows",
        inputs={n: n for n in _fed(model)},
        outputs={"pair": "pair"},
        params={"redraw": IN_BATCH_REDRAW},
    )
    spec = [InputSpec("embedding", et, "normal"), InputSpec("pair", pair.type, "normal")]
    return LossProgram(
        "contrastive",
        _finish(mb, top, model, spec),
        [("output", name), ("batch", "pair")],
        [pairs],
        seq,
        "rows 2i and 2i+1 are a pair (a data file gives each input X and its positive X_positive); "
        "the other rows are negatives; the batch (per process) must be even",
    )


def contrastive(model: Model, seq: int) -> LossProgram:
    """CLIP's loss. With logits_per_image/logits_per_text outputs the model has
    already applied its learned scale exp(logit_scale); otherwise the loss normalizes
    image_embeds and text_embeds and applies a logit_scale output itself. A model
    with one `embedding` output (a single tower) gets `in_batch_contrastive`."""
    top_names = model.top_module.output_names
    if "user_embedding" in top_names:
        return two_tower(model, seq, bpr=False)
    if "embedding" in top_names and "image_embeds" not in top_names and "logits_per_image" not in top_names:
        return in_batch_contrastive(model, seq)
    mb = ModelBuilder()
    m = mb.module("ContrastiveLoss", doc="Symmetric InfoNCE with the model's learned logit scale (CLIP).")
    if "logits_per_image" in top_names and "logits_per_text" in top_names:
        _, pt = _output(model, "logits_per_image")
        per_image = m.input("logits_per_image", pt)
        per_text = m.input("logits_per_text", pt)
        sources = [("output", "logits_per_image"), ("output", "logits_per_text")]
        spec = [InputSpec("logits_per_image", pt, "normal"), InputSpec("logits_per_text", pt, "normal")]
    else:
        iname, it = _output(model, "image_embeds")
        tname, tt = _output(model, "text_embeds")
        sname, st = _output(model, "logit_scale")
        img = m.input("image_embeds", it)
        txt = m.input("text_embeds", tt)
        ls = m.input("logit_scale", st)
        img_n = m.op("l2_normalize", img, hint="img")
        txt_n = m.op("l2_normalize", txt, hint="txt")
        scale = m.op("exp", ls, hint="scale")
        sim = m.op("matmul", img_n, txt_n, transpose_b=True, hint="sim")
        per_image = m.op("mul", sim, scale, hint="logits_per_image")
        per_text = m.op("transpose", per_image, perm=(1, 0), hint="logits_per_text")
        sources = [("output", iname), ("output", tname), ("output", sname)]
        spec = [InputSpec(n, t, "normal") for n, t in (("image_embeds", it), ("text_embeds", tt), ("logit_scale", st))]
    labels = m.op("positions", per_image, axis=0, hint="labels")
    both = m.op("add", m.op("cross_entropy", per_image, labels), m.op("cross_entropy", per_text, labels), hint="both")
    top = m.ret(m.op("scale", both, factor=0.5, hint="loss"), names=["loss"])
    return LossProgram(
        "contrastive",
        _finish(mb, top, model, spec),
        sources,
        [DataTransform("pair_keys", carry=_fed(model), params={"keys": PAIR_KEYS})],
        seq,
        "matching pairs are the batch diagonal",
    )


RANK_GROUP = 4  # candidates per query in a ranking batch: one relevant, the others not


def _ranking(model: Model, seq: int, pairwise: bool) -> LossProgram:
    """Ranking losses over groups of RANK_GROUP rows (one query's candidates), one
    row of each relevant; the data side gives each row's `group` and `relevant`.

    listwise (`ranking`): for each relevant row, softmax cross-entropy of its
    group's scores against itself (the ListNet / softmax loss of learning to rank);
    pairwise (`pairwise_ranking`): RankNet's -log sigmoid(s_rel - s_other) over every
    (relevant, other) pair of a group, as a two-way cross-entropy."""
    name, st = _output(model, "score")
    mb = ModelBuilder()
    kind = "pairwise" if pairwise else "listwise"
    m = mb.module(f"{kind.capitalize()}RankingLoss", doc=f"{kind.capitalize()} ranking loss over each query's candidates.")
    score = m.input("score", st)
    group = m.input("group", st)
    relevant = m.input("relevant", st)
    same = _same_group(m, group)
    if pairwise:
        diff = m.op("sub", m.op("unsqueeze", score, axes=(1,)), m.op("unsqueeze", score, axes=(0,)), hint="diff")
        logits = m.op("stack", diff, m.op("scale", diff, factor=0.0), axis=2, hint="logits")  # [s_i - s_j, 0]
        first = m.op("cast", m.op("scale", diff, factor=0.0), dtype="i64", hint="first")  # class 0: row i above row j
        pairs = m.op("mul", m.op("unsqueeze", relevant, axes=(1,)), same)
        pairs = m.op("mul", pairs, m.op("unsqueeze", _one_minus(m, relevant), axes=(0,)), hint="pairs")
        loss = m.op("masked_cross_entropy", logits, first, pairs, hint="loss")
    else:
        outside = m.op("scale", _one_minus(m, same), factor=1e4, hint="outside")
        logits = m.op("sub", m.op("unsqueeze", score, axes=(0,)), outside, hint="logits")  # row i: its group's scores
        rows = m.op("positions", score, axis=0, hint="rows")
        loss = m.op("masked_cross_entropy", logits, rows, relevant, hint="loss")
    top = m.ret(loss, names=["loss"])
    groups = DataTransform(
        "rank_groups",
        inputs={n: n for n in _fed(model)},
        outputs={"group": "group", "relevant": "relevant"},
        carry=_fed(model),
        params={"group": RANK_GROUP},
    )
    spec = [InputSpec(n, st, "normal") for n in ("score", "group", "relevant")]
    return LossProgram(
        "pairwise_ranking" if pairwise else "ranking",
        _finish(mb, top, model, spec),
        [("output", name), ("batch", "group"), ("batch", "relevant")],
        [groups],
        seq,
        f"rows come in groups of {RANK_GROUP} candidates of one query, one relevant (a data file gives each input "
        f"X as [N, {RANK_GROUP}, ...] and relevant [N, {RANK_GROUP}]); the batch (per process) is a multiple of {RANK_GROUP}",
    )


def _one_minus(m, x):
    """1 - x (the ones are exp(0 * x): the IR has no constant tensors of a symbolic shape)."""
    return m.op("sub", m.op("exp", m.op("scale", x, factor=0.0)), x, hint="one_minus")


def two_tower(model: Model, seq: int, bpr: bool) -> LossProgram:
    """A two-tower recommender's losses with in-batch negatives: row i's user
    against every item of the batch, item i the positive. Sampled softmax
    (`contrastive`): cross-entropy of U I^T against the diagonal. BPR
    (`pairwise_ranking`): -log sigmoid(s(u_i, i_i) - s(u_i, i_j)) over j != i, as a
    two-way cross-entropy."""
    uname, ut = _output(model, "user_embedding")
    iname, it = _output(model, "item_embedding")
    mb = ModelBuilder()
    kind = "BPR" if bpr else "SampledSoftmax"
    m = mb.module(f"{kind}Loss", doc="BPR over the batch's other items." if bpr else "Softmax over the batch's items.")
    user = m.input("user_embedding", ut)
    item = m.input("item_embedding", it)
    scores = m.op("matmul", user, item, transpose_b=True, hint="scores")  # [users, items]
    rows = m.op("positions", scores, axis=0, hint="rows")
    sources = [("output", uname), ("output", iname)]
    spec = [InputSpec("user_embedding", ut, "normal"), InputSpec("item_embedding", it, "normal")]
    if bpr:
        sname, st = _output(model, "score")
        own = m.input("score", st)
        sources.append(("output", sname))
        spec.append(InputSpec("score", st, "normal"))
        diff = m.op("sub", m.op("unsqueeze", own, axes=(1,)), scores, hint="diff")
        logits = m.op("stack", diff, m.op("scale", diff, factor=0.0), axis=2, hint="logits")
        first = m.op("cast", m.op("scale", diff, factor=0.0), dtype="i64", hint="first")
        others = _one_minus(m, _same_group(m, m.op("cast", rows, dtype="f32", hint="rows_f")))
        loss = m.op("masked_cross_entropy", logits, first, others, hint="loss")
    else:
        loss = m.op("cross_entropy", scores, rows, hint="loss")
    top = m.ret(loss, names=["loss"])
    ids = [i for i in model.inputs if i.kind == "tokens"]
    pairs = DataTransform(
        "interactions",
        inputs={"user": ids[0].name, "item": ids[1].name},
        params={"items": int(ids[1].high)},
    )
    return LossProgram(
        "pairwise_ranking" if bpr else "contrastive",
        _finish(mb, top, model, spec),
        sources,
        [pairs],
        seq,
        "one (user, item) interaction per row; the batch's other items are the negatives",
    )


def ranking(model: Model, seq: int) -> LossProgram:
    return _ranking(model, seq, pairwise=False)


def pairwise_ranking(model: Model, seq: int) -> LossProgram:
    if "user_embedding" in model.top_module.output_names:
        return two_tower(model, seq, bpr=True)
    return _ranking(model, seq, pairwise=True)


MASK_RATE = 0.15


def masked(model: Model, seq: int) -> LossProgram:
    """BERT's masked-LM loss: the data side hides MASK_RATE of the tokens (at least
    one per row) behind the mask id, the last id of the vocabulary, and the loss is
    cross-entropy at the hidden positions only."""
    name, lt = _output(model, "logits")
    ids = next((i for i in model.inputs if i.kind == "tokens" and "seq" in i.type.shape), None)
    if ids is None or lt.rank != ids.type.rank + 1:
        raise ObjectiveError("masked training needs token inputs [batch, seq] and logits [batch, seq, vocab]")
    sizes = {"seq": seq}
    lt, it = _bind(lt, sizes), _bind(ids.type, sizes)
    mb = ModelBuilder()
    m = mb.module("MaskedTokenLoss", doc="Cross-entropy at the masked positions against the original tokens.")
    logits = m.input("logits", lt)
    labels = m.input("labels", it)
    mask = m.input("mask", it.with_dtype(DType.f32))
    top = m.ret(m.op("masked_cross_entropy", logits, labels, mask, hint="loss"), names=["loss"])
    vocab = int(ids.high)
    masking = DataTransform(
        "mask_tokens",
        inputs={"tokens": ids.name},
        outputs={"labels": "labels", "mask": "mask"},
        params={"rate": MASK_RATE, "mask_id": vocab - 1},
    )
    spec = [
        InputSpec("logits", lt, "normal"),
        InputSpec("labels", it, "tokens", 0, vocab),
        InputSpec("mask", mask.type, "tokens", 0, 2),
    ]
    return LossProgram(
        "masked",
        _finish(mb, top, model, spec),
        [("output", name), ("batch", masking.outputs["labels"]), ("batch", masking.outputs["mask"])],
        [masking],
        seq,
        f"{MASK_RATE:.0%} of tokens (at least one per row) replaced by the mask id {vocab - 1}; "
        "labels are the original tokens",
    )


REGRESSION_LOSSES = ("mse", "huber")  # training.config.loss


def _regression_loss(m, pred, target, loss: str):
    if loss == "huber":
        return m.op("huber", pred, target, delta=1.0, hint="loss")
    return m.op("mse", pred, target, hint="loss")


def regression(model: Model, seq: int, loss: str = "mse") -> LossProgram:
    """MSE (or Huber, delta 1) of the `prediction` output (a graph network's per-node
    `node_outputs`) against float targets. On synthetic data the targets are a fixed
    smooth function of the inputs (a seeded random projection through tanh), so they
    can be learned."""
    name, pt = _output(model, "prediction", "node_outputs")
    mb = ModelBuilder()
    m = mb.module("RegressionLoss", doc=f"{'Huber' if loss == 'huber' else 'Mean squared'} error against the targets.")
    pred = m.input("prediction", pt)
    target = m.input("targets", pt)
    top = m.ret(_regression_loss(m, pred, target, loss), names=["loss"])
    draw = DataTransform(
        "regression_targets",
        outputs={"targets": "targets"},
        params={"inputs": list(_fed(model)), "shape": list(pt.shape), "seed": 0},
    )
    spec = [InputSpec("prediction", pt, "normal"), InputSpec("targets", pt, "normal")]
    return LossProgram(
        "regression", _finish(mb, top, model, spec), [("output", name), ("batch", "targets")], [draw], seq,
        f"{loss} loss; synthetic targets are tanh of a fixed random projection of the inputs",
    )


def forecasting(model: Model, seq: int, loss: str = "mse") -> LossProgram:
    """MSE (or Huber) of the `prediction` [batch, horizon, channels] against the
    `future_values` that follow the input window. Synthetic windows are smooth
    series (two sines per channel with a random level, amplitude, frequency and
    phase), so the future follows from the past."""
    name, pt = _output(model, "prediction")
    past = model.inputs[0]
    mb = ModelBuilder()
    m = mb.module("ForecastLoss", doc="Error of the forecast against the future values.")
    pred = m.input("prediction", pt)
    future = m.input("future_values", pt)
    top = m.ret(_regression_loss(m, pred, future, loss), names=["loss"])
    series = DataTransform(
        "series_windows", inputs={"past": past.name}, outputs={"future": "future_values"},
        params={"horizon": int(pt.shape[1])},
    )
    spec = [InputSpec("prediction", pt, "normal"), InputSpec("future_values", pt, "normal")]
    return LossProgram(
        "forecasting", _finish(mb, top, model, spec), [("output", name), ("batch", "future_values")], [series], seq,
        f"{loss} loss; synthetic data: sums of sines, the window and the {pt.shape[1]} steps after it",
    )


def reconstruction(model: Model, seq: int) -> LossProgram:
    """MSE of the `reconstruction` against the input window it reconstructs (an
    autoencoder's objective; the model's anomaly score is that error per window)."""
    name, rt = _output(model, "reconstruction")
    window = next((i for i in model.inputs if i.type == rt), None)
    if window is None:
        raise ObjectiveError(f"reconstruction training needs an input shaped like the reconstruction {rt}")
    mb = ModelBuilder()
    m = mb.module("ReconstructionLoss", doc="Mean squared reconstruction error.")
    recon = m.input("reconstruction", rt)
    target = m.input(window.name, rt)
    top = m.ret(m.op("mse", recon, target, hint="loss"), names=["loss"])
    series = DataTransform("series_windows", inputs={"past": window.name}, params={"horizon": 0})
    spec = [InputSpec("reconstruction", rt, "normal"), InputSpec(window.name, rt, "normal")]
    return LossProgram(
        "reconstruction", _finish(mb, top, model, spec), [("output", name), ("batch", window.name)], [series], seq,
        "synthetic windows are sums of sines",
    )


# Reinforcement learning: the data side acts in a toy environment (backends/runtime/
# data.py: `corridor_transitions`, `bandit_rollouts`) with the model the training loop
# hands it (`RUNNERS`: the online weights, and a target network refreshed every
# TARGET_EVERY steps), so the loss graphs see ordinary batch fields.
GAMMA = 0.9  # the corridor is short
TARGET_EVERY = 50
PPO_CLIP, PPO_VALUE, PPO_ENTROPY, PPO_EPOCHS = 0.2, 0.5, 0.01, 4


def value_based(model: Model, seq: int) -> LossProgram:
    """DQN's temporal-difference loss: Huber(Q(s)[a], r + gamma (1 - done) max_a'
    Q_target(s')[a']). The target is computed on the data side with the target
    network (a second weight set, refreshed every TARGET_EVERY steps), so no gradient
    flows into it."""
    name, qt = _output(model, "q_values")
    obs = model.inputs[0]
    rows = TensorType(DType.f32, qt.shape[:-1])
    mb = ModelBuilder()
    m = mb.module("TemporalDifferenceLoss", doc="Huber loss of Q(s, a) against the bootstrapped target.")
    q = m.input("q_values", qt)
    actions = m.input("actions", rows.with_dtype(DType.i64))
    targets = m.input("td_targets", rows)
    q_sa = m.op("take_along", q, actions, hint="q_sa")
    top = m.ret(m.op("huber", q_sa, targets, delta=1.0, hint="loss"), names=["loss"])
    env = DataTransform(
        "corridor_transitions",
        inputs={"observation": obs.name},
        outputs={"actions": "actions", "td_targets": "td_targets"},
        params={"gamma": GAMMA, "target_every": TARGET_EVERY, "runners": ["target"], "q": name, "num_actions": int(qt.shape[-1])},
    )
    spec = [InputSpec("q_values", qt, "normal"), InputSpec("actions", actions.type, "tokens", 0, qt.shape[-1]), InputSpec("td_targets", rows, "normal")]
    return LossProgram(
        "value_based", _finish(mb, top, model, spec), [("output", name), ("batch", "actions"), ("batch", "td_targets")],
        [env], seq, f"DQN, gamma {GAMMA}, target network refreshed every {TARGET_EVERY} steps; synthetic data: the corridor MDP",
    )


def policy_gradient(model: Model, seq: int) -> LossProgram:
    """PPO's clipped surrogate, value and entropy loss:
    -mean(min(r A, clip(r, 1 - eps, 1 + eps) A)) + c_v mse(V, returns) - c_e H,
    r = exp(log pi(a|s) - log pi_old(a|s)). Discrete actions: a categorical over
    `logits`; continuous: a diagonal Gaussian (`mean`, `log_std`), whose log-density
    and entropy leave out the constant 0.5 log(2 pi) (e) per dimension (it cancels in
    r and has no gradient)."""
    top_names = model.top_module.output_names
    _, vt = _output(model, "value")
    obs = model.inputs[0]
    mb = ModelBuilder()
    m = mb.module("ClippedSurrogateLoss", doc="PPO: clipped surrogate + value + entropy.")
    if "logits" in top_names:
        _, lt = _output(model, "logits")
        logits = m.input("logits", lt)
        actions = m.input("actions", vt.with_dtype(DType.i64))
        logp_all = m.op("log_softmax", logits, hint="logp_all")
        logp = m.op("take_along", logp_all, actions, hint="logp")
        plogp = m.op("mul", m.op("softmax", logits, hint="p"), logp_all, hint="plogp")
        entropy = m.op("scale", m.op("mean", plogp, axis=-1, hint="h"), factor=-float(lt.shape[-1]), hint="entropy")
        heads = [("logits", lt)]
        space = {"space": "discrete", "num_actions": int(lt.shape[-1])}
        action_spec = InputSpec("actions", actions.type, "tokens", 0, lt.shape[-1])
    else:
        _, mt = _output(model, "mean")
        mean = m.input("mean", mt)
        log_std = m.input("log_std", mt)
        actions = m.input("actions", mt)
        dims = float(mt.shape[-1])
        z = m.op("div", m.op("sub", actions, mean, hint="d"), m.op("exp", log_std, hint="std"), hint="z")
        per_dim = m.op("add", m.op("scale", m.op("mul", z, z, hint="z2"), factor=0.5, hint="z2"), log_std, hint="nll")
        logp = m.op("scale", m.op("mean", per_dim, axis=-1, hint="nll"), factor=-dims, hint="logp")
        entropy = m.op("scale", m.op("mean", log_std, axis=-1, hint="h"), factor=dims, hint="entropy")
        heads = [("mean", mt), ("log_std", mt)]
        space = {"space": "continuous", "action_dim": int(mt.shape[-1])}
        action_spec = InputSpec("actions", mt, "normal")
    value = m.input("value", vt)
    old = m.input("old_log_probs", vt)
    adv = m.input("advantages", vt)
    returns = m.input("returns", vt)
    ratio = m.op("exp", m.op("sub", logp, old, hint="log_ratio"), hint="ratio")
    s1 = m.op("mul", ratio, adv, hint="s1")
    s2 = m.op("mul", m.op("clip", ratio, low=1.0 - PPO_CLIP, high=1.0 + PPO_CLIP, hint="clipped"), adv, hint="s2")
    pg = m.op("scale", m.op("mean", m.op("minimum", s1, s2, hint="surr"), axis=0, hint="surr"), factor=-1.0, hint="pg")
    vf = m.op("scale", m.op("mse", value, returns, hint="vf"), factor=PPO_VALUE, hint="vf")
    ent = m.op("scale", m.op("mean", entropy, axis=0, hint="ent"), factor=-PPO_ENTROPY, hint="ent")
    top = m.ret(m.op("add", m.op("add", pg, vf, hint="loss"), ent, hint="loss"), names=["loss"])
    env = DataTransform(
        "bandit_rollouts",
        inputs={"observation": obs.name},
        outputs={k: k for k in ("actions", "old_log_probs", "advantages", "returns", "rewards")},
        params={**space, "epochs": PPO_EPOCHS, "runners": ["online"], "seed": 0},
    )
    spec = [InputSpec(n, t, "normal") for n, t in heads] + [action_spec] + [
        InputSpec(n, vt, "normal") for n in ("value", "old_log_probs", "advantages", "returns")
    ]
    sources = [("output", n) for n, _ in heads] + [("batch", "actions"), ("output", "value")] + [
        ("batch", n) for n in ("old_log_probs", "advantages", "returns")
    ]
    return LossProgram(
        "policy_gradient", _finish(mb, top, model, spec), sources, [env], seq,
        f"PPO, clip {PPO_CLIP}, value {PPO_VALUE}, entropy {PPO_ENTROPY}, {PPO_EPOCHS} steps per rollout; "
        "synthetic data: a contextual bandit",
    )


def semantic_segmentation(model: Model, seq: int) -> LossProgram:
    """Per-pixel cross-entropy of class logits [batch, C, H, W] against a label map
    [batch, H, W], plus the soft Dice loss when the model's config says `dice`
    (`objective: [semantic_segmentation, dice]`)."""
    name, lt = _output(model, "logits")
    if lt.rank != 4:
        raise ObjectiveError(f"semantic segmentation needs per-pixel logits [batch, C, H, W], got {lt}")
    classes, h, w = lt.shape[1], lt.shape[2], lt.shape[3]
    dice = bool(model.config.get("dice"))
    mb = ModelBuilder()
    m = mb.module(
        "SegmentationLoss",
        doc="Per-pixel cross-entropy of the class scores" + (" plus the soft Dice loss." if dice else "."),
    )
    logits = m.input("logits", lt)
    labels = m.input("labels", TensorType(DType.i64, (lt.shape[0], h, w)))
    per_pixel = m.op("transpose", logits, perm=(0, 2, 3, 1), hint="per_pixel")
    loss = m.op("cross_entropy", per_pixel, labels, hint="ce")
    if dice:
        loss = m.op("add", loss, m.op("dice_loss", logits, labels, hint="dice"), hint="loss")
    top = m.ret(loss, names=["loss"])
    spec = [InputSpec("logits", lt, "normal"), InputSpec("labels", labels.type, "tokens", 0, classes)]
    draw = DataTransform(
        "segmentation_labels",
        outputs={"labels": "labels"},
        carry=_fed(model, tokens=False),
        params={"classes": classes, "shape": list(labels.type.shape)},
    )
    return LossProgram(
        "semantic_segmentation",
        _finish(mb, top, model, spec),
        [("output", name), ("batch", draw.outputs["labels"])],
        [draw],
        seq,
        "label maps of 4 x 4-pixel blocks on synthetic data; images carry their label as a shift of every channel",
    )


# DETR's loss weights (Carion et al. 2020, section 4): class 1, L1 box 5, GIoU 2; the
# "no object" class weighs 0.1 in the cross-entropy.
DETR_WEIGHTS = {"class": 1.0, "bbox": 5.0, "giou": 2.0, "no_object": 0.1}
MAX_SYNTHETIC_OBJECTS = 4


def _corners(m, box, hint: str):
    """(x0y0, x1y1) [..., 2] of boxes (cx, cy, w, h) [..., 4]."""
    center = m.op("slice", box, axis=-1, start=0, end=2, hint=f"{hint}_c")
    half = m.op("scale", m.op("slice", box, axis=-1, start=2, end=4), factor=0.5, hint=f"{hint}_half")
    return m.op("sub", center, half, hint=f"{hint}_lo"), m.op("add", center, half, hint=f"{hint}_hi")


def _area(m, lo, hi, hint: str):
    wh = m.op("sub", hi, lo)
    return m.op("mul", m.op("select", wh, axis=-1, index=0), m.op("select", wh, axis=-1, index=1), hint=hint)


def _max(m, a, b):
    return m.op("add", b, m.op("relu", m.op("sub", a, b)))


def _min(m, a, b):
    return m.op("sub", a, m.op("relu", m.op("sub", a, b)))


def generalized_iou(m, a, b):
    """GIoU (Rezatofighi et al. 2019) of paired boxes (cx, cy, w, h) [..., 4] -> [...]:
    IoU - (enclosing area - union) / enclosing area."""
    alo, ahi = _corners(m, a, "a")
    blo, bhi = _corners(m, b, "b")
    inter = _area(m, _max(m, alo, blo), _max(m, _min(m, ahi, bhi), _max(m, alo, blo)), "inter")
    union = m.op("sub", m.op("add", _area(m, alo, ahi, "area_a"), _area(m, blo, bhi, "area_b")), inter, hint="union")
    enclosing = _area(m, _min(m, alo, blo), _max(m, ahi, bhi), "enclosing")
    iou = m.op("div", inter, union, hint="iou")
    return m.op("sub", iou, m.op("div", m.op("sub", enclosing, union), enclosing), hint="giou")


def dense_detection(model: Model, seq: int) -> LossProgram:
    """The dense detector's loss (FCOS-style, with a softmax background class): the
    data side assigns each cell to the smallest target box containing its center
    (before the forward: the assignment does not depend on the predictions); the loss
    is cross-entropy over every cell, and over the assigned cells the L1 distance of
    (l, t, r, b) and the squared error of sigmoid(centerness) against FCOS's
    centerness, each summed and divided by the number of assigned cells."""
    lname, lt = _output(model, "logits")
    dname, dt = _output(model, "box_distances")
    cname, ct = _output(model, "centerness")
    classes, cells = lt.shape[-1] - 1, lt.shape[1]
    mb = ModelBuilder()
    m = mb.module("DenseDetectionLoss", doc="Cross-entropy per cell, L1 distances and centerness on assigned cells.")
    logits, dist, ctr = m.input("logits", lt), m.input("box_distances", dt), m.input("centerness", ct)
    cell = TensorType(DType.i64, lt.shape[:2])
    target_classes = m.input("target_classes", cell)
    class_weight = m.input("class_weight", cell.with_dtype(DType.f32))
    target_distances = m.input("target_distances", dt)
    target_centerness = m.input("target_centerness", ct)
    box_weight = m.input("box_weight", ct)
    ce = m.op("masked_cross_entropy", logits, target_classes, class_weight, hint="loss_ce")
    diff = m.op("sub", dist, target_distances)
    l1 = m.op("scale", m.op("mean", m.op("add", m.op("relu", diff), m.op("relu", m.op("scale", diff, factor=-1.0))), axis=-1), factor=4.0)
    loss_box = m.op("mean", m.op("mean", m.op("mul", l1, box_weight), axis=-1), axis=-1, hint="loss_box")
    err = m.op("sub", m.op("sigmoid", ctr), target_centerness)
    loss_ctr = m.op("mean", m.op("mean", m.op("mul", m.op("mul", err, err), box_weight), axis=-1), axis=-1, hint="loss_ctr")
    top = m.ret(m.op("add", ce, m.op("add", loss_box, loss_ctr), hint="loss"), names=["loss"])
    spec = [
        InputSpec("logits", lt, "normal"),
        InputSpec("box_distances", dt, "uniform", 0.0, 1.0),
        InputSpec("centerness", ct, "normal"),
        InputSpec("target_classes", cell, "tokens", 0, classes + 1),
        InputSpec("class_weight", class_weight.type, "uniform", 0.1, 1.0),
        InputSpec("target_distances", dt, "uniform", 0.0, 0.5),
        InputSpec("target_centerness", ct, "uniform", 0.0, 1.0),
        InputSpec("box_weight", ct, "uniform", 0.0, 2.0),
    ]
    draw = DataTransform(
        "detection_targets",
        outputs={"boxes": "boxes", "classes": "classes", "object_mask": "object_mask"},
        carry=_fed(model, tokens=False),
        params={"classes": classes, "max_objects": MAX_SYNTHETIC_OBJECTS},
    )
    side = int(round(cells**0.5))
    assign = DataTransform(
        "dense_assign",
        inputs={"boxes": "boxes", "classes": "classes", "object_mask": "object_mask"},
        outputs={n: n for n in ("target_classes", "class_weight", "target_distances", "target_centerness", "box_weight")},
        params={"classes": classes, "grid": side, "background": DENSE_BACKGROUND_WEIGHT},
    )
    names = ("target_classes", "class_weight", "target_distances", "target_centerness", "box_weight")
    return LossProgram(
        "object_detection",
        _finish(mb, top, model, spec),
        [("output", lname), ("output", dname), ("output", cname)] + [("batch", n) for n in names],
        [draw, assign],
        seq,
        "targets: boxes (cx, cy, w, h) in [0, 1], classes, object_mask per image; each cell is assigned to the "
        "smallest box containing its center, before the forward",
    )


DENSE_BACKGROUND_WEIGHT = 0.25  # background cells' weight in the cross-entropy


def object_detection(model: Model, seq: int) -> LossProgram:
    """DETR's set loss, or the dense detector's loss for a model with box distances."""
    if "box_distances" in model.output_names:
        return dense_detection(model, seq)
    return set_prediction(model, seq)


def _mask_losses(m, masks, target_masks, box_weight):
    """Per matched query, the mean per-pixel sigmoid binary cross-entropy of its mask
    logits and DETR's soft Dice loss 1 - (2 sum(p t) + 1) / (sum(p) + sum(t) + 1)
    (p = sigmoid(logits), t the 0/1 target mask); each summed over matched queries
    and divided by the number of targets, as the box losses (via `box_weight`)."""
    pixels = masks.type.shape[-1] * masks.type.shape[-2]
    zeros = m.op("scale", masks, factor=0.0)
    # log(1 - sigmoid(x)) = log_softmax([0, x])[0], stable; BCE = softplus(x) - x t = -that - x t
    log_not = m.op("select", m.op("log_softmax", m.op("stack", zeros, masks, axis=-1), axis=-1), axis=-1, index=0)
    bce = m.op("sub", m.op("scale", log_not, factor=-1.0), m.op("mul", masks, target_masks), hint="bce")
    per_query = m.op("mean", m.op("mean", bce, axis=-1), axis=-1, hint="bce_per_query")
    loss_mask = m.op("mean", m.op("mean", m.op("mul", per_query, box_weight), axis=-1), axis=-1, hint="loss_mask")

    def total(x):  # sum over the mask's pixels
        return m.op("scale", m.op("mean", m.op("mean", x, axis=-1), axis=-1), factor=float(pixels))

    prob = m.op("sigmoid", masks, hint="mask_prob")
    inter, p_sum, t_sum = total(m.op("mul", prob, target_masks)), total(prob), total(target_masks)
    one = m.op("exp", m.op("scale", inter, factor=0.0), hint="one")
    ratio = m.op(
        "div", m.op("add", m.op("scale", inter, factor=2.0), one), m.op("add", m.op("add", p_sum, t_sum), one), hint="dice_ratio"
    )
    dice = m.op("sub", box_weight, m.op("mul", ratio, box_weight), hint="one_minus_dice")  # (1 - ratio) * weight
    loss_dice = m.op("mean", m.op("mean", dice, axis=-1), axis=-1, hint="loss_dice")
    return loss_mask, loss_dice


def instance_segmentation(model: Model, seq: int) -> LossProgram:
    """DETR's set loss plus the mask losses of the Hungarian-matched queries."""
    return set_prediction(model, seq, masks=True)


def set_prediction(model: Model, seq: int, masks: bool = False) -> LossProgram:
    """DETR's set loss. The data side matches predictions to targets each step (the
    Hungarian algorithm on DETR's matching cost, after the forward pass) and writes
    per-query targets; the loss is then fixed arithmetic: weighted cross-entropy over
    every query (no-object weight 0.1), and over matched queries the L1 and 1 - GIoU
    box losses, each summed and divided by the number of target boxes. With `masks`
    (instance segmentation) the matched queries' masks add _mask_losses (weights 1
    and 1), the matching staying DETR's (class and box costs)."""
    lname, lt = _output(model, "logits")
    bname, bt = _output(model, "pred_boxes")
    classes = lt.shape[-1] - 1
    q = lt.shape[1]
    w = DETR_WEIGHTS
    mb = ModelBuilder()
    m = mb.module(
        "SetLoss",
        doc="DETR's loss on Hungarian-matched per-query targets (class, L1 box, GIoU"
        + (", mask BCE, mask Dice)." if masks else ")."),
    )
    logits, boxes = m.input("logits", lt), m.input("pred_boxes", bt)
    query = TensorType(DType.i64, lt.shape[:2])
    target_classes = m.input("target_classes", query)
    class_weight = m.input("class_weight", query.with_dtype(DType.f32))
    target_boxes = m.input("target_boxes", bt)
    box_weight = m.input("box_weight", query.with_dtype(DType.f32))
    ce = m.op("masked_cross_entropy", logits, target_classes, class_weight, hint="loss_ce")
    diff = m.op("sub", boxes, target_boxes)
    l1 = m.op("add", m.op("relu", diff), m.op("relu", m.op("scale", diff, factor=-1.0)), hint="abs")
    per_query = m.op("scale", m.op("mean", l1, axis=-1), factor=4.0, hint="l1")  # sum over the 4 coordinates
    loss_bbox = m.op("mean", m.op("mean", m.op("mul", per_query, box_weight), axis=-1), axis=-1, hint="loss_bbox")
    giou = generalized_iou(m, boxes, target_boxes)
    giou_term = m.op("sub", box_weight, m.op("mul", giou, box_weight), hint="one_minus_giou")  # (1 - GIoU) * weight
    loss_giou = m.op("mean", m.op("mean", giou_term, axis=-1), axis=-1, hint="loss_giou")
    total = m.op(
        "add",
        m.op("scale", ce, factor=w["class"]),
        m.op("add", m.op("scale", loss_bbox, factor=w["bbox"]), m.op("scale", loss_giou, factor=w["giou"])),
        hint="loss",
    )
    spec = [
        InputSpec("logits", lt, "normal"),
        InputSpec("pred_boxes", bt, "uniform", 0.1, 0.9),
        InputSpec("target_classes", query, "tokens", 0, classes + 1),
        InputSpec("class_weight", class_weight.type, "uniform", 0.1, 1.0),
        InputSpec("target_boxes", bt, "uniform", 0.2, 0.6),
        InputSpec("box_weight", box_weight.type, "uniform", 0.0, 2.0),
    ]
    targets = ["target_classes", "class_weight", "target_boxes", "box_weight"]
    fields, draw_params = ["boxes", "classes", "object_mask"], {}
    if masks:
        mname, mt = _output(model, "pred_masks")
        pred_masks = m.input("pred_masks", mt)
        target_masks = m.input("target_masks", mt)
        loss_mask, loss_dice = _mask_losses(m, pred_masks, target_masks, box_weight)
        total = m.op("add", total, m.op("add", loss_mask, loss_dice), hint="loss_with_masks")
        spec += [InputSpec("pred_masks", mt, "normal"), InputSpec("target_masks", mt, "uniform", 0.0, 1.0)]
        fields.append("masks")
        draw_params = {"mask_resolution": mt.shape[-1]}
    top = m.ret(total, names=["loss"])
    objects = min(MAX_SYNTHETIC_OBJECTS, q)
    draw = DataTransform(
        "detection_targets",
        outputs={n: n for n in fields},
        carry=_fed(model, tokens=False),
        params={"classes": classes, "max_objects": objects, **draw_params},
    )
    match = DataTransform(
        "hungarian_match",
        inputs={n: n for n in fields},
        outputs={n: n for n in targets + (["target_masks"] if masks else [])},
        params={"classes": classes, "cost_class": w["class"], "cost_bbox": w["bbox"], "cost_giou": w["giou"],
                "no_object": w["no_object"]},
        reads=(lname, bname),
    )
    sources = [("output", lname), ("output", bname)] + [("batch", n) for n in targets]  # the loss's input order
    if masks:
        sources += [("output", mname), ("batch", "target_masks")]
    return LossProgram(
        "instance_segmentation" if masks else "object_detection",
        _finish(mb, top, model, spec),
        sources,
        [draw, match],
        seq,
        "targets: boxes (cx, cy, w, h) in [0, 1], classes, object_mask per image"
        + (", masks [objects, R, R] (synthetic: each box's pixels)" if masks else "")
        + "; each step the data side matches them to the predictions (Hungarian, DETR's cost) and the loss "
        "reads per-query targets",
    )


OBJECTIVES: dict[str, Callable[..., LossProgram]] = {
    "masked": masked,
    "autoregressive": autoregressive,
    "classification": classification,
    "diffusion": diffusion,
    "contrastive": contrastive,
    "regression": regression,
    "forecasting": forecasting,
    "reconstruction": reconstruction,
    "value_based": value_based,
    "policy_gradient": policy_gradient,
    "semantic_segmentation": semantic_segmentation,
    "object_detection": object_detection,
    "ranking": ranking,
    "pairwise_ranking": pairwise_ranking,
    "instance_segmentation": instance_segmentation,
}


def objective_name(ctx: CompileContext) -> str:
    training = getattr(ctx.spec, "training", None)
    names = list(training.get("objective") or []) if training is not None else []
    if names:
        return names[0]
    from metagen.compiler.families import FAMILIES

    default = FAMILIES[ctx.family].objective(ctx)
    if default:
        return default
    outputs = ctx.model.output_names
    regression = "prediction" in outputs or "node_outputs" in outputs
    return "classification" if "logits" in outputs else ("regression" if regression else "")


def training_seq_len(ctx: CompileContext) -> int:
    return int(ctx.arch.get("context") or ctx.context_window or 0)


def build_loss(ctx: CompileContext) -> LossProgram:
    """The loss program of the spec's (first) objective; ObjectiveError when the
    objective has no IR loss yet or the model's outputs do not fit it."""
    name = objective_name(ctx)
    if name not in OBJECTIVES:
        raise ObjectiveError(f"objective '{name}' has no loss definition for family '{ctx.family}' yet")
    options = {}
    if name in LOSS_CHOICE:
        config = ctx.spec.training.get("config") if getattr(ctx.spec, "training", None) is not None else None
        options["loss"] = (config.get("loss") if config is not None else None) or "mse"
    from metagen.compiler.families import FAMILIES

    program = OBJECTIVES[name](ctx.model, training_seq_len(ctx), **options)
    program.data = FAMILIES[ctx.family].data_transforms(ctx) + list(program.data)
    return program


LOSS_CHOICE = ("regression", "forecasting")  # objectives that take training.config.loss


# ---------------------------------------------------------------- feasibility

@dataclass(frozen=True)
class Accelerator:
    peak: float  # peak dense (no sparsity) BF16/FP16 tensor FLOP/s
    memory: int | None  # bytes of device memory (the base variant); None: host memory, not checked


_GB = 10**9  # datasheets give decimal GB
# Sources are listed in docs/training.md (throughput and memory per device).
ACCELERATORS: dict[str, Accelerator] = {
    "V100": Accelerator(125e12, 16 * _GB),
    "T4": Accelerator(65e12, 16 * _GB),
    "A10": Accelerator(125e12, 24 * _GB),
    "A10G": Accelerator(125e12, 24 * _GB),
    "A100": Accelerator(312e12, 40 * _GB),
    "L4": Accelerator(121e12, 24 * _GB),
    "L40S": Accelerator(362e12, 48 * _GB),
    "RTX4090": Accelerator(165e12, 24 * _GB),
    "H100": Accelerator(989e12, 80 * _GB),
    "H200": Accelerator(989e12, 141 * _GB),
    "GH200": Accelerator(989e12, 96 * _GB),
    "B200": Accelerator(2250e12, 180 * _GB),
    "MI250X": Accelerator(383e12, 128 * _GB),
    "MI300X": Accelerator(1307e12, 192 * _GB),
    "TPUV4": Accelerator(275e12, 32 * _GB),
    "TPUV5E": Accelerator(197e12, 16 * _GB),
    "TPUV5P": Accelerator(459e12, 95 * _GB),
    "CPU": Accelerator(2e12, None),
}


def accelerator(key: str) -> Accelerator | None:
    """The accelerator `key` names (upper case, no separators): an exact name, else
    the longest name it starts with (A100-80GB is an A100, not an A10). A variant
    that ends in a memory size ("A100-80GB", "V100-32GB") has that memory."""
    if key in ACCELERATORS:
        return ACCELERATORS[key]
    prefixes = [k for k in ACCELERATORS if key.startswith(k)]
    if not prefixes:
        return None
    base = max(prefixes, key=len)
    found = ACCELERATORS[base]
    m = re.fullmatch(r"(\d+)GB", key[len(base):])
    return replace(found, memory=int(m.group(1)) * _GB) if m else found


def accelerator_peak(key: str) -> float | None:
    found = accelerator(key)
    return found.peak if found is not None else None


UTILIZATION = 0.4  # model FLOP utilisation assumed for the time estimate
GPUS_PER_NODE = 8


def _parallel_plan(count: int) -> dict[str, Any]:
    nodes = max(1, math.ceil(count / GPUS_PER_NODE))
    per_node = min(count, GPUS_PER_NODE)
    return {
        "world_size": count,
        "nodes": nodes,
        "nproc_per_node": per_node,
        "torch": f"torchrun --nnodes {nodes} --nproc_per_node {per_node}: FSDP2 fully_shard over {count} ranks",
        "jax": f"Mesh(({count},), ('data',)): batch sharded over {count} devices",
    }


def _human_duration(seconds: float) -> str:
    for unit, size in (("days", 86400.0), ("hours", 3600.0), ("minutes", 60.0)):
        if seconds >= size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.3g} seconds"


def training_memory_per_device(train: dict[str, int], count: int, capacity: int) -> dict[str, Any]:
    """What one device holds when the parallel plan (FSDP2 full sharding, or a
    JAX mesh that shards the same way) spreads weights, gradients and optimizer
    state over `count` devices, at a micro-batch of one sample with activation
    checkpointing: the least a training run needs, so a miss is certain."""
    states = train["weights"] + train["gradients"] + train["optimizer"]
    need = -(-states // count) + train["activations_checkpointed"]
    return {
        "per_device_bytes": need,
        "states_per_device_bytes": -(-states // count),
        "activations_bytes": train["activations_checkpointed"],
        "device_memory_bytes": capacity,
        "fits": need <= capacity,
        "rule": "(weights + gradients + optimizer) / devices + checkpointed activations of one sample",
    }


def training_estimate(ctx: CompileContext) -> dict[str, Any] | None:
    """Training FLOPs and time for the spec's data and hardware; None without a
    training section. Transformers on tokens: 6·N·D. Otherwise (samples): 3 × the
    IR's forward FLOPs per sample × D (backward ≈ 2 × forward)."""
    from metagen.frontend import units

    training = getattr(ctx.spec, "training", None)
    if training is None or ctx.model is None:
        return None
    n = ctx.model.param_count()
    out: dict[str, Any] = {"objective": objective_name(ctx), "parameters": n, "utilization": UTILIZATION}
    compute, data = training.get("compute"), training.get("data")
    size = data.get("size") if data is not None else None
    hardware = compute.get("hardware") if compute is not None else None
    duration = compute.get("duration") if compute is not None else None
    read = (size if isinstance(size, tuple) else units.read_data_size(size)) if size is not None else None
    if read is not None:
        amount, unit = read
        out["data"] = {"amount": amount, "unit": unit}
        if unit == "tokens":
            flops = 6 * n * amount
            out["flops_rule"] = "6 * N * D (D tokens; forward 2ND + backward 4ND)"
        else:
            from metagen.compiler.families import FAMILIES

            work = FAMILIES[ctx.family].workload(ctx, ctx.model)
            per_sample = model_flops(ctx.model, dict(work["bindings"], batch=1))
            flops = 3 * per_sample * amount
            out["forward_flops_per_sample"] = per_sample
            out["flops_rule"] = "3 * forward FLOPs per sample (from the IR) * D samples"
        out["training_flops"] = float(flops)
    elif ctx.model.inputs and ctx.model.inputs[0].kind == "tokens":
        amount = 20 * n
        out["data"] = {"amount": amount, "unit": "tokens", "assumed": "compute-optimal 20 tokens per parameter (Hoffmann et al. 2022)"}
        out["flops_rule"] = "6 * N * D (D tokens; forward 2ND + backward 4ND)"
        out["training_flops"] = float(6 * n * amount)
    if hardware is not None:
        count, kind = hardware if isinstance(hardware, tuple) else units.parse_hardware(hardware)
        key = kind.upper().replace("-", "").replace("_", "")
        acc = accelerator(key)
        peak = acc.peak if acc is not None else None
        out["hardware"] = {"count": count, "accelerator": kind, "peak_flops_each": peak}
        train_mem = (ctx.report.get("memory") or {}).get("training")
        if acc is not None and acc.memory is not None and train_mem is not None:
            out["memory"] = training_memory_per_device(train_mem, count, acc.memory)
        out["parallel_plan"] = _parallel_plan(count)
        if peak is None:
            out["hardware"]["note"] = f"unknown accelerator '{kind}'; no time estimate"
        elif "training_flops" in out:
            seconds = out["training_flops"] / (count * peak * UTILIZATION)
            out["estimated_seconds"] = seconds
            out["estimated"] = _human_duration(seconds)
    if duration is not None:
        budget = duration if isinstance(duration, (int, float)) else units.parse_duration(duration)
        out["duration_seconds"] = float(budget)
        if "estimated_seconds" in out:
            out["fits"] = out["estimated_seconds"] <= budget
            if out["data"]["unit"] == "tokens":
                rate = out["hardware"]["count"] * out["hardware"]["peak_flops_each"] * UTILIZATION
                out["tokens_in_duration"] = float(budget * rate / (6 * n))
    return out


@dataclass(frozen=True)
class EstimateTrainingCompute(Pass):
    """Estimate the training run's compute and memory; warn when its duration
    cannot hold the compute (at training.compute.duration) and when its hardware
    cannot hold the training memory (at training.compute.hardware)."""

    name = "estimate-training-compute"
    requires = frozenset({Fact.MODEL})

    def run(self, ctx: CompileContext) -> PassResult:
        from metagen.frontend.units import UnitError

        try:
            est = training_estimate(ctx)
        except (UnitError, KeyError, ValueError):
            return PassResult(changed=False)  # the spec builder reports malformed values itself
        if est is None:
            return PassResult(changed=False)
        ctx.report["training"] = est
        if est.get("fits") is False:
            # A miss is a miss whether the data size was written or assumed
            # (compute-optimal); the warning says which, so the fix is clear.
            compute = ctx.spec.training.compute
            hw = est["hardware"]
            data = est["data"]
            assumed = (
                f" (data assumed compute-optimal: {data['amount']:.3g} tokens, 20 per parameter; "
                "set training.data.size to say otherwise)"
                if "assumed" in data
                else ""
            )
            ctx.sink.warning(
                compute.loc("duration"),
                f"training.compute.duration: {_human_duration(est['duration_seconds'])} cannot hold "
                f"{est['training_flops']:.3g} FLOPs on {hw['count']}x{hw['accelerator']} at "
                f"{UTILIZATION:.0%} utilisation; it needs about {est['estimated']}{assumed}",
            )
        mem = est.get("memory")
        if mem is not None and not mem["fits"]:
            from metagen.frontend.units import format_bytes

            hw = est["hardware"]
            if mem["activations_bytes"] > mem["device_memory_bytes"]:
                # More devices do not help: the plan shards states, not one sequence.
                fix = (
                    "train at a shorter sequence and extend the context afterwards (as Llama 3 did), or shard "
                    "the sequence (context parallelism, which the generated plan does not do)"
                )
            else:
                fix = "use more or larger accelerators"
            ctx.sink.warning(
                ctx.spec.training.compute.loc("hardware"),
                f"training.compute.hardware: {hw['count']}x{hw['accelerator']} ({format_bytes(mem['device_memory_bytes'])} "
                f"each) cannot hold the training run: each device needs at least {format_bytes(mem['per_device_bytes'])} "
                f"({format_bytes(mem['states_per_device_bytes'])} of fp32 weights, gradients and AdamW moments "
                f"sharded over every device, plus {format_bytes(mem['activations_bytes'])} of one sample's "
                f"checkpointed activations at {training_seq_len(ctx)} tokens); {fix}",
            )
        return PassResult(changed=False)
