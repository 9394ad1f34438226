"""Backends: ONNX Runtime against a direct numpy evaluation; TensorRT host logic without a GPU."""

from __future__ import annotations

import numpy as np
import pytest

from services.inference.backends import BackendUnavailable, make_backend
from services.inference.backends.onnx import OnnxBackend
from services.inference.backends.trt_plan import Profile, buffer_plan, engine_cache_key, profile_with_preferred
from tests.onnx_factory import logistic_model


def test_onnx_backend_matches_the_formula() -> None:
    rng = np.random.default_rng(1)
    weights, bias = rng.standard_normal(5), 0.3
    backend = OnnxBackend(intra_op_threads=1)
    backend.load(logistic_model(weights, bias), 5)
    backend.warm_up([1, 4], rounds=1)
    x = rng.standard_normal((7, 5)).astype(np.float32)
    expected = 1.0 / (1.0 + np.exp(-(x.astype(np.float64) @ weights + bias)))
    np.testing.assert_allclose(backend.run(x), expected, rtol=1e-5)


def test_onnx_backend_refuses_a_width_mismatch() -> None:
    with pytest.raises(ValueError, match=r"expected \[batch, 4\]"):
        OnnxBackend().load(logistic_model(np.ones(3), 0.0), 4)


def test_unknown_backend_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        make_backend("cuda")


def test_tensorrt_absent_is_a_clear_error() -> None:
    try:
        import pycuda.driver  # noqa: F401
        import tensorrt  # noqa: F401
    except ImportError:
        backend = make_backend("tensorrt", max_batch_size=8)
        with pytest.raises(BackendUnavailable, match="needs the tensorrt and pycuda packages"):
            backend.load(logistic_model(np.ones(3), 0.0), 3)
    else:
        pytest.skip("tensorrt and pycuda are installed here")


def test_tensorrt_runs_on_a_gpu() -> None:
    pytest.importorskip("tensorrt")
    pytest.importorskip("pycuda.driver")
    rng = np.random.default_rng(2)
    weights = rng.standard_normal(6)
    backend = make_backend("tensorrt", max_batch_size=16)
    backend.load(logistic_model(weights, -0.1), 6)
    backend.warm_up([1, 16], rounds=1)
    x = rng.standard_normal((9, 6)).astype(np.float32)
    expected = 1.0 / (1.0 + np.exp(-(x.astype(np.float64) @ weights - 0.1)))
    np.testing.assert_allclose(backend.run(x), expected, atol=2e-3)  # FP16 where the GPU has it


def test_trt_profile_buffers_and_cache_keys() -> None:
    profile = profile_with_preferred(64, [16, 32], 30)
    assert profile.shapes() == ((1, 30), (32, 30), (64, 30))
    assert profile.covers(1) and profile.covers(64) and not profile.covers(65)
    plan = buffer_plan(profile, (-1, 1))
    assert (plan.input_bytes, plan.output_bytes) == (64 * 30 * 4, 64 * 4)
    with pytest.raises(ValueError, match="only the batch dimension"):
        buffer_plan(profile, (-1, -1))
    common = {"onnx_sha256": "0" * 64, "gpu_name": "NVIDIA H200", "compute_capability": (9, 0), "profile": profile}
    keys = {
        engine_cache_key(trt_version="10.3", fp16=True, **common),  # type: ignore[arg-type]
        engine_cache_key(trt_version="10.4", fp16=True, **common),  # type: ignore[arg-type]
        engine_cache_key(trt_version="10.3", fp16=False, **common),  # type: ignore[arg-type]
        engine_cache_key(trt_version="10.3", fp16=True, **{**common, "gpu_name": "NVIDIA L4"}),  # type: ignore[arg-type]
        engine_cache_key(trt_version="10.3", fp16=True, **{**common, "profile": Profile(1, 8, 8, 30)}),  # type: ignore[arg-type]
    }
    assert len(keys) == 5 and all("/" not in key for key in keys)
