"""The spec's `training` section -> training programs and the training report.

`metagen synth` calls `training_files`; it returns the training program of each
backend that has a training emitter in the registry (torch, flax: `train.py` beside
the backend's model.py) and blueprint/training_report.json.
A compilation whose objective has no loss definition yet gets the report only,
with the reason.
"""

from __future__ import annotations

import math
import posixpath
from typing import Any

from metagen.compiler.objectives import (
    LossProgram,
    ObjectiveError,
    build_loss,
    objective_name,
    training_estimate,
)
from metagen.pipeline import Compilation

DEFAULTS = {
    "optimizer": "adamw",
    "schedule": "cosine",
    "learning_rate": 3e-4,
    "tiny_learning_rate": 3e-3,
    "weight_decay": 0.1,
    "betas": [0.9, 0.95],
    "eps": 1e-8,
    "grad_clip": 1.0,
    "min_lr_ratio": 0.1,
    "warmup_fraction": 0.05,
    "batch_size": 32,
    "tiny_batch_size": 8,
    "steps": 1000,
}


def training_config(comp: Compilation, loss: LossProgram, seed: int) -> dict[str, Any]:
    """Every hyper-parameter the training programs use, resolved from the spec.

    Missing keys take DEFAULTS; `steps` is derived from the data size when the spec
    gives neither steps nor epochs... or from epochs x data size when it gives epochs.
    """
    ctx = comp.ctx
    spec = ctx.spec
    training = getattr(spec, "training", None)
    cfg = training.get("config") if training is not None else None
    given = (lambda k: cfg.get(k)) if cfg is not None else (lambda k: None)
    tiny = bool(ctx.options.tiny)
    batch = given("batch_size") or (DEFAULTS["tiny_batch_size"] if tiny else DEFAULTS["batch_size"])
    est = ctx.report.get("training") or {}
    data = est.get("data") or {}
    per_step = batch * (loss.seq_len if data.get("unit") == "tokens" and loss.seq_len else 1)
    steps = given("steps")
    if steps is None and data.get("amount") and "assumed" not in data:
        steps = max(1, math.ceil(data["amount"] * (given("epochs") or 1) / per_step))
    steps = steps or DEFAULTS["steps"]
    lr = given("learning_rate")
    if lr is None:
        lr = DEFAULTS["tiny_learning_rate"] if tiny else DEFAULTS["learning_rate"]
    warmup = given("warmup") if given("warmup") is not None else given("warmup_steps")  # the original vocabulary's spelling
    repro = getattr(spec, "reproducibility", None)
    plan = est.get("parallel_plan") or {"world_size": 1, "nodes": 1, "nproc_per_node": 1}
    return {
        "objective": loss.objective,
        "seq_len": loss.seq_len,
        "batch_size": int(batch),
        "steps": int(steps),
        "epochs": given("epochs"),
        "optimizer": given("optimizer") or DEFAULTS["optimizer"],
        "schedule": given("schedule") or DEFAULTS["schedule"],
        "learning_rate": float(lr),
        "min_lr_ratio": DEFAULTS["min_lr_ratio"],
        "warmup": None if warmup is None else int(warmup),
        "warmup_fraction": DEFAULTS["warmup_fraction"],
        "weight_decay": float(given("weight_decay") if given("weight_decay") is not None else DEFAULTS["weight_decay"]),
        "betas": list(DEFAULTS["betas"]),
        "eps": DEFAULTS["eps"],
        "grad_clip": DEFAULTS["grad_clip"],
        "seed": int(seed),
        "deterministic": bool(repro.get("deterministic", True)) if repro is not None else True,
        "hardware": (training.compute.get("hardware") if training is not None and training.get("compute") else None),
        "world_size": plan["world_size"],
        "nodes": plan["nodes"],
        "nproc_per_node": plan["nproc_per_node"],
        "data": loss.data_table(),
    }


def training_report(comp: Compilation, seed: int) -> tuple[dict[str, Any], LossProgram | None, dict | None]:
    ctx = comp.ctx
    report: dict[str, Any] = {"estimate": ctx.report.get("training")}
    try:
        loss = build_loss(ctx)
    except ObjectiveError as exc:
        report["programs"] = None
        report["reason"] = f"objective '{objective_name(ctx)}': {exc}"
        return report, None, None
    cfg = training_config(comp, loss, seed)
    report["loss"] = loss.describe()
    report["config"] = cfg
    report["programs"] = [program_path(b) for b in _trainable(None)]
    return report, loss, cfg


def _trainable(backends):
    """The backends to write a training program for: `backends`, or every registry
    backend that has a training emitter."""
    from metagen.backends import registry

    return [b for b in (registry.BACKENDS.values() if backends is None else backends) if b.training]


def program_path(backend) -> str:
    """Where a backend's training program goes in a synth run: beside its model."""
    return posixpath.join(posixpath.dirname(backend.synth_path), "train.py")


def training_files(comp: Compilation, seed: int, backends=None) -> dict[str, bytes]:
    """The training program of each backend in `backends` (registry records; default:
    every backend with a training emitter) and blueprint/training_report.json."""
    from metagen.artifacts import _json
    from metagen.backends.registry import resolve

    report, loss, cfg = training_report(comp, seed)
    files: dict[str, bytes] = {}
    if loss is not None:
        programs = []
        for backend in _trainable(backends):
            path = program_path(backend)
            files[path] = resolve(backend.training)(comp.model, loss, cfg).encode("utf-8")
            programs.append(path)
        report["programs"] = programs
    files["blueprint/training_report.json"] = _json(report, "blueprint/training_report.json", comp.spec.loc())
    return files
