"""Training: a point-in-time export in, a verified ONNX model with its reference profile registered out."""
