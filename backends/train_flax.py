"""Loss IR + training config -> a standalone JAX/Flax (nnx) training program.

The loss class is lowered from the objective's IR by the flax backend's module
emitter; the data side and the learning-rate schedule are the same numpy code the
torch program runs (backends/runtime/data.py), so both programs see the same
batches and learning rates. The rest is backends/runtime/flax_train.py: the
optimizer is optax, composed to match torch's AdamW step for step (decoupled decay
on matrices only, bias correction, eps outside the square root); the batch is
sharded over a `jax.sharding.Mesh`.
"""

from __future__ import annotations

from typing import Any

from metagen.backends.flax_backend import I64_LINE, FlaxEmitter
from metagen.backends.train_torch import emit_program
from metagen.compiler.objectives import LossProgram
from metagen.ir.graph import Model

# What the lowered loss classes use beyond the runtime's own imports.
LOSS_IMPORTS = (
    "import math",
    "import zlib",
    "import jax",
    "import jax.numpy as jnp",
    "import numpy as np",
    "from flax import nnx",
)


def lower_training_flax(model: Model, loss: LossProgram, cfg: dict[str, Any]) -> str:
    usage = [
        "python train.py --synthetic --steps 100 --log-every 10",
        "python train.py --data tokens.npy --checkpoint-dir ckpt [--resume]",
        f"python train.py --synthetic --devices {cfg['world_size']}  # data mesh over {cfg['world_size']} devices",
    ]
    return emit_program(
        model,
        loss,
        cfg,
        backend="JAX/Flax (nnx)",
        usage=usage,
        emitter=FlaxEmitter(loss.loss),
        loss_imports=LOSS_IMPORTS,
        runtime="flax_train",
        model_tag="flax_model",
        loss_args="rngs=nnx.Rngs(0)",
        preamble=('jax.config.update("jax_default_matmul_precision", "highest")', I64_LINE),
    )
