"""Small ONNX models built with onnx's own helpers, for tests and benchmarks."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def logistic_model(weights: np.ndarray, bias: float, *, opset: int = 17) -> bytes:
    """``sigmoid(x @ weights + bias)`` over a float32 ``[batch, n]`` input named ``x``; output ``score [batch]``."""
    n = int(weights.shape[0])
    w = numpy_helper.from_array(weights.astype(np.float32).reshape(n, 1), name="w")
    b = numpy_helper.from_array(np.array([bias], dtype=np.float32), name="b")
    shape = numpy_helper.from_array(np.array([-1], dtype=np.int64), name="flat")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["xw"]),
        helper.make_node("Add", ["xw", "b"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["prob"]),
        helper.make_node("Reshape", ["prob", "flat"], ["score"]),
    ]
    graph = helper.make_graph(
        nodes,
        "logistic",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", n])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch"])],
        initializer=[w, b, shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())
