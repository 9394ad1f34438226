"""Model backends behind one small interface: ``load``, ``warm_up``, ``run(batch) -> scores``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

from shared.errors import Unavailable

FloatArray = npt.NDArray[np.float32]
BACKENDS = ("onnx", "tensorrt")


class BackendUnavailable(Unavailable):
    """The configured backend cannot run on this machine (a library or device is missing)."""


class Backend(Protocol):
    name: str
    runs_in_thread: bool  # True when run() blocks on a device: call it off the event loop

    def load(self, artifact: bytes, n_features: int) -> None:
        """Build a runnable model from the ONNX bytes; raises on an artifact it cannot load."""

    def warm_up(self, batch_sizes: Sequence[int], rounds: int = 3) -> None:
        """Run ``rounds`` dummy batches at each size so the first real request pays no setup."""

    def run(self, batch: FloatArray) -> FloatArray:
        """Scores, one float per row of the float32 ``[batch, n_features]`` input."""


def warm_up_runs(
    run: Callable[[FloatArray], FloatArray], n_features: int, batch_sizes: Sequence[int], rounds: int
) -> None:
    """Run ``rounds`` seeded random batches of each size through ``run`` (any backend's warm-up)."""
    rng = np.random.default_rng(0)
    for size in batch_sizes:
        batch = rng.standard_normal((size, n_features)).astype(np.float32)
        for _ in range(rounds):
            run(batch)


def make_backend(
    kind: str,
    *,
    intra_op_threads: int = 1,
    max_batch_size: int = 32,
    preferred_batch_sizes: Sequence[int] = (),
    concurrent_batches: int = 2,
    cache_dir: str = "",
) -> Backend:
    """The backend named ``kind``; a clear 503-style error (at load) when it is asked for and absent."""
    if kind == "onnx":
        from services.inference.backends.onnx import OnnxBackend

        return OnnxBackend(intra_op_threads=intra_op_threads)
    if kind == "tensorrt":
        from services.inference.backends.tensorrt import TensorRTBackend

        return TensorRTBackend(
            max_batch_size=max_batch_size, preferred_batch_sizes=preferred_batch_sizes,
            streams=concurrent_batches, cache_dir=cache_dir,
        )  # fmt: skip
    raise ValueError(f"unknown backend {kind!r}; choose one of {', '.join(BACKENDS)}")


def to_scores(output: npt.NDArray[np.generic], rows: int) -> FloatArray:
    """One score per row from a model output: ``[n]``, ``[n, 1]``, or ``[n, k]`` (last column, e.g. P(class 1)).

    >>> to_scores(np.array([[0.2, 0.8], [0.6, 0.4]]), 2).tolist()
    [0.800000011920929, 0.4000000059604645]
    """
    array = np.asarray(output, dtype=np.float32).reshape(rows, -1)
    return np.ascontiguousarray(array[:, -1])
