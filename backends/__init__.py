"""Backends lower the IR to PyTorch source, Flax source and ONNX graphs."""
