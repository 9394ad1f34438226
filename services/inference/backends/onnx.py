"""ONNX Runtime on CPU: the default backend."""

from __future__ import annotations

from collections.abc import Sequence

import onnxruntime as ort

from services.inference.backends import FloatArray, to_scores, warm_up_runs


class OnnxBackend:
    """One ``InferenceSession`` with all graph optimizations and a fixed intra-op thread count."""

    name = "onnx"
    runs_in_thread = False  # a small CPU model runs in microseconds; a thread hop would cost more

    def __init__(self, *, intra_op_threads: int = 1) -> None:
        self.intra_op_threads = intra_op_threads
        self._session: ort.InferenceSession | None = None
        self._input = ""
        self._output = ""
        self.n_features = 0

    def load(self, artifact: bytes, n_features: int) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.intra_op_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        session = ort.InferenceSession(artifact, sess_options=options, providers=["CPUExecutionProvider"])
        inputs = session.get_inputs()
        if len(inputs) != 1:
            raise ValueError(f"the model takes {len(inputs)} inputs, expected one float32 [batch, n]")
        width = inputs[0].shape[1] if len(inputs[0].shape) == 2 else None
        if width != n_features:
            raise ValueError(f"the model input is {inputs[0].shape}, expected [batch, {n_features}]")
        self._input = inputs[0].name
        self._output = session.get_outputs()[0].name
        self.n_features = n_features
        self._session = session

    def warm_up(self, batch_sizes: Sequence[int], rounds: int = 3) -> None:
        warm_up_runs(self.run, self.n_features, batch_sizes, rounds)

    def run(self, batch: FloatArray) -> FloatArray:
        if self._session is None:
            raise RuntimeError("the model is not loaded")
        (output,) = self._session.run([self._output], {self._input: batch})
        return to_scores(output, batch.shape[0])
