"""Stand-ins for the names a generated train.py binds before its runtime code.

In train.py, `TRAIN` (every resolved hyper-parameter, and the objective's data
transforms under "data") and `LOSS_SOURCES` (where each loss input comes from) are
tables the emitter writes, `M` is the sibling model.py loaded by
`data._load_sibling`, and `LOSS` is the objective's loss module lowered from the IR.
Here they are empty so the runtime modules import and can be tested (tests bind
them with monkeypatch). The emitter drops every `metagen` import when it copies a
runtime module, so this file never reaches a program.
"""

from typing import Any

TRAIN: dict[str, Any] = {}
LOSS_SOURCES: list[list[str]] = []
M: Any = None
LOSS: Any = None
