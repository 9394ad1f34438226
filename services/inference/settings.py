"""The inference service's configuration, read once from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from services.inference.backends import BACKENDS
from shared.settings import CommonSettings, SettingsError, read_float, read_int

SERVICE = "inference"
DEFAULT_HTTP_PORT = 8103


@dataclass(frozen=True, slots=True)
class InferenceSettings:
    common: CommonSettings
    backend: str = "onnx"
    intra_op_threads: int = 1
    warm_up_rounds: int = 3
    features_timeout_s: float = 0.05
    log_max_pending: int = 100_000
    trt_cache_dir: str = ""

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise SettingsError("RTML_INFERENCE_BACKEND", self.backend, f"must be one of {', '.join(BACKENDS)}")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> InferenceSettings:
        return cls(
            common=CommonSettings.from_env(env, service=SERVICE, default_http_port=DEFAULT_HTTP_PORT),
            backend=env.get("RTML_INFERENCE_BACKEND", "onnx"),
            intra_op_threads=read_int(env, "RTML_INFERENCE_INTRA_OP_THREADS", 1, minimum=1, maximum=256),
            warm_up_rounds=read_int(env, "RTML_INFERENCE_WARM_UP_ROUNDS", 3, minimum=0, maximum=1000),
            features_timeout_s=read_float(env, "RTML_INFERENCE_FEATURES_TIMEOUT_MS", 50.0, minimum=1, maximum=10_000)
            / 1000.0,
            log_max_pending=read_int(env, "RTML_INFERENCE_LOG_MAX_PENDING", 100_000, minimum=1, maximum=10_000_000),
            trt_cache_dir=env.get("RTML_INFERENCE_TRT_CACHE_DIR", ""),
        )
