"""MetaGen: a compiler from model specifications to PyTorch, JAX/Flax and ONNX."""

__version__ = "0.1.0"
