"""MetaGen's typed graph IR. Imports no torch, jax or onnx: backends depend on it."""

from metagen.ir.types import DType, TensorType, Dim, dim_str  # noqa: F401
from metagen.ir.graph import (  # noqa: F401
    Init,
    InputSpec,
    Layer,
    Model,
    ModuleDef,
    Node,
    Param,
    Repeat,
    Sub,
    Value,
)
