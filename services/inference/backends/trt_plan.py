"""Host-side planning for the TensorRT backend: profiles, engine cache keys, buffer sizes.

Pure functions, so they are tested on machines without a GPU or TensorRT.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

FLOAT32_BYTES = 4


@dataclass(frozen=True, slots=True)
class Profile:
    """A TensorRT optimization profile for the ``[batch, n_features]`` input: min, opt and max shapes."""

    min_batch: int
    opt_batch: int
    max_batch: int
    n_features: int

    def shapes(self) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
        n = self.n_features
        return (self.min_batch, n), (self.opt_batch, n), (self.max_batch, n)

    def covers(self, batch: int) -> bool:
        return self.min_batch <= batch <= self.max_batch


def profile_for(batch_sizes: Sequence[int], n_features: int) -> Profile:
    """The profile covering every size the batcher releases, tuned for the most common full batch.

    The optimum is the largest preferred size when the policy names any (the batcher
    fills it first), else the maximum.

    >>> profile_for([1, 2, 4, 8, 32], 30)
    Profile(min_batch=1, opt_batch=32, max_batch=32, n_features=30)
    >>> profile_for([8, 16], 4, ).shapes()
    ((1, 4), (16, 4), (16, 4))
    """
    if not batch_sizes or min(batch_sizes) < 1:
        raise ValueError(f"batch sizes must be positive, got {list(batch_sizes)}")
    if n_features < 1:
        raise ValueError(f"n_features must be positive, got {n_features}")
    largest = max(batch_sizes)
    return Profile(min_batch=1, opt_batch=largest, max_batch=largest, n_features=n_features)


def profile_with_preferred(max_batch: int, preferred: Sequence[int], n_features: int) -> Profile:
    """Like :func:`profile_for`, optimising for the largest preferred size when there is one.

    >>> profile_with_preferred(64, [8, 16], 30).opt_batch
    16
    """
    base = profile_for([max_batch, *preferred], n_features)
    opt = max(preferred) if preferred else max_batch
    return Profile(base.min_batch, opt, base.max_batch, n_features)


def engine_cache_key(
    *, onnx_sha256: str, gpu_name: str, compute_capability: tuple[int, int], trt_version: str, fp16: bool,
    profile: Profile,
) -> str:  # fmt: skip
    """A file name for the serialized engine: an engine is only valid for one GPU model and TensorRT version.

    >>> key = engine_cache_key(onnx_sha256="ab" * 32, gpu_name="NVIDIA H200", compute_capability=(9, 0),
    ...     trt_version="10.3.0", fp16=True, profile=Profile(1, 32, 32, 30))
    >>> key.startswith("abababababab-NVIDIA_H200-sm90-trt10.3.0-fp16-")
    True
    >>> key.endswith(".plan")
    True
    """
    gpu = re.sub(r"[^A-Za-z0-9]+", "_", gpu_name).strip("_")
    shape = f"{profile.min_batch}-{profile.opt_batch}-{profile.max_batch}x{profile.n_features}"
    digest = hashlib.sha256(f"{onnx_sha256}|{gpu}|{compute_capability}|{trt_version}|{fp16}|{shape}".encode())
    precision = "fp16" if fp16 else "fp32"
    major, minor = compute_capability
    return f"{onnx_sha256[:12]}-{gpu}-sm{major}{minor}-trt{trt_version}-{precision}-{digest.hexdigest()[:16]}.plan"


@dataclass(frozen=True, slots=True)
class BufferPlan:
    """Pinned host and device buffers for one in-flight batch at the profile's maximum."""

    input_elements: int
    output_elements: int

    @property
    def input_bytes(self) -> int:
        return self.input_elements * FLOAT32_BYTES

    @property
    def output_bytes(self) -> int:
        return self.output_elements * FLOAT32_BYTES

    @property
    def total_bytes(self) -> int:
        return self.input_bytes + self.output_bytes


def buffer_plan(profile: Profile, output_shape: Sequence[int]) -> BufferPlan:
    """Buffer sizes from the engine's output shape, whose dynamic batch dimension (-1) is the maximum.

    >>> buffer_plan(Profile(1, 32, 32, 30), (-1,))
    BufferPlan(input_elements=960, output_elements=32)
    >>> buffer_plan(Profile(1, 8, 16, 4), (-1, 2)).total_bytes
    384
    """
    if not output_shape:
        raise ValueError("the engine output has no dimensions")
    per_row = 1
    for dim in output_shape[1:]:
        if dim < 1:
            raise ValueError(f"only the batch dimension may be dynamic, output shape is {tuple(output_shape)}")
        per_row *= dim
    return BufferPlan(
        input_elements=profile.max_batch * profile.n_features, output_elements=profile.max_batch * per_row
    )
