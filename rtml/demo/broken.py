"""The deliberately broken version of the story: a good model with its scores turned upside down.

The inverted model loads, has the right inputs and answers fast: nothing but the
monitor's figures (its score distribution against stable's) can tell it is wrong,
which is the point of showing the automatic rollback.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper


def inverted(artifact: bytes) -> bytes:
    """``artifact`` with one more node: ``score = 1 - score`` (same input, same output name and shape).

    >>> from onnx import TensorProto
    >>> node = helper.make_node("Sigmoid", ["x"], ["score"])
    >>> graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b"])],
    ...                           [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["b"])])
    >>> model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    >>> import onnxruntime
    >>> session = onnxruntime.InferenceSession(inverted(model.SerializeToString()))
    >>> [round(float(v), 3) for v in session.run(None, {"x": np.array([0.0, 10.0], dtype=np.float32)})[0]]
    [0.5, 0.0]
    """
    model = onnx.load_from_string(artifact)
    graph = model.graph
    if len(graph.output) != 1:
        raise ValueError(f"expected one output, found {len(graph.output)}")
    output = graph.output[0].name
    original = f"{output}_original"
    for node in graph.node:
        node.output[:] = [original if name == output else name for name in node.output]
    graph.initializer.append(numpy_helper.from_array(np.array(1.0, dtype=np.float32), name="inverted_one"))
    graph.node.append(helper.make_node("Sub", ["inverted_one", original], [output]))
    onnx.checker.check_model(model)
    serialized: bytes = model.SerializeToString()
    return serialized
