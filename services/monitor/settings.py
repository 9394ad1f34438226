"""Monitor configuration, read once from the environment in ``main()``.

=================================  =========  ==============================================================
variable                           default    meaning
=================================  =========  ==============================================================
RTML_MONITOR_HTTP_PORT             8104       HTTP port (health, metrics, the drift/performance/alerts API)
RTML_MONITOR_BATCH                 500        messages fetched per pull
RTML_MONITOR_WINDOW_SIZE           5000       count window of the windowed drift tests (per version)
RTML_MONITOR_WINDOW_S              0          time window instead (seconds, 0 = count window only)
RTML_MONITOR_EVAL_EVERY            1000       predictions between two windowed evaluations
RTML_MONITOR_MIN_SAMPLES           500        below this a drift test is "insufficient data"
RTML_MONITOR_ALPHA                 0.01       false discovery rate of the windowed tests (Benjamini-Hochberg)
RTML_MONITOR_PSI_THRESHOLD         0.1        a significant test must also move the PSI this far
RTML_MONITOR_CLEAR_WINDOWS         3          clean evaluations in a row before an alert resolves
RTML_MONITOR_FAMILY_ALPHA          0.05       expected false alarms of the detector bank per horizon
RTML_MONITOR_HORIZON_EVENTS        100000     the horizon of that budget
RTML_MONITOR_MEAN_SHIFT_STD        0.25       smallest numeric mean shift the bank is tuned for
RTML_MONITOR_SHARE_SHIFT_STD       0.25       smallest category share change (indicator std units)
RTML_MONITOR_ERROR_RATE_SHIFT      0.03       smallest rise of the error rate
RTML_MONITOR_NEAR_MARGIN           0.1        "near the threshold" means within this of it
RTML_MONITOR_PERF_WINDOW           5000       labelled predictions in the rolling performance window
RTML_MONITOR_PERF_MIN_SAMPLES      200        below this the performance figures are None
RTML_MONITOR_PERF_MARGIN           0.05       AUC drop (vs training or vs stable) that raises an alert
RTML_MONITOR_SUMMARY_MIN_SAMPLES   30         below this a summary figure is None
RTML_MONITOR_LOG_SIZE              200000     predictions kept for summaries (ring buffer per replica)
RTML_MONITOR_REBUILD_S             600        on start, windows are rebuilt from this much of the stream
RTML_MONITOR_JOIN_RETENTION_S      2592000    predictions and labels older than this leave the join tables
RTML_MONITOR_MODELS                {}         JSON per-model overrides, e.g. {"fraud": {"window_size": 2000}}
=================================  =========  ==============================================================

Per-model overrides accept the lower-case names of the ``MODEL_KEYS`` fields.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from services.monitor.detectors.bank import BankConfig
from shared.settings import CommonSettings, SettingsError, read_float, read_int

SERVICE = "monitor"
DEFAULT_HTTP_PORT = 8104


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """What can differ between models: windows, thresholds, minimum samples, bank tuning."""

    window_size: int = 5000
    window_s: float = 0.0
    eval_every: int = 1000
    min_samples: int = 500
    alpha: float = 0.01
    psi_threshold: float = 0.1
    clear_windows: int = 3
    family_alpha: float = 0.05
    horizon_events: int = 100_000
    mean_shift_std: float = 0.25
    share_shift_std: float = 0.25
    error_rate_shift: float = 0.03
    near_margin: float = 0.1
    perf_window: int = 5000
    perf_min_samples: int = 200
    perf_margin: float = 0.05

    def __post_init__(self) -> None:
        checks: dict[str, tuple[float, float]] = {
            "window_size": (10, 10_000_000), "window_s": (0, 86_400 * 30), "eval_every": (1, 10_000_000),
            "min_samples": (2, 10_000_000), "alpha": (1e-12, 1.0), "psi_threshold": (0, 100),
            "clear_windows": (1, 1000), "near_margin": (0, 1), "perf_window": (10, 10_000_000),
            "perf_min_samples": (2, 10_000_000), "perf_margin": (0, 1),
        }  # fmt: skip
        for name, (low, high) in checks.items():
            value = getattr(self, name)
            if not low <= value <= high:
                raise ValueError(f"{name} must be between {low} and {high}, got {value}")
        if self.min_samples > self.window_size:
            raise ValueError(f"min_samples ({self.min_samples}) exceeds window_size ({self.window_size})")
        self.bank  # validates the bank's fields  # noqa: B018

    @property
    def bank(self) -> BankConfig:
        return BankConfig(
            family_alpha=self.family_alpha,
            horizon_events=self.horizon_events,
            mean_shift_std=self.mean_shift_std,
            share_shift_std=self.share_shift_std,
            error_rate_shift=self.error_rate_shift,
        )

    def with_overrides(self, overrides: Mapping[str, Any]) -> ModelConfig:
        known = {f.name: f.type for f in fields(self)}
        unknown = set(overrides) - set(known)
        if unknown:
            raise ValueError(f"unknown model settings {sorted(unknown)}")
        converted: dict[str, Any] = {}
        for name, value in overrides.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name} must be a number, got {value!r}")
            converted[name] = int(value) if known[name] == "int" else float(value)
        return replace(self, **converted)


MODEL_KEYS = tuple(f.name for f in fields(ModelConfig))


@dataclass(frozen=True, slots=True)
class MonitorSettings:
    common: CommonSettings = field(default_factory=CommonSettings)
    defaults: ModelConfig = field(default_factory=ModelConfig)
    per_model: Mapping[str, ModelConfig] = field(default_factory=dict)
    batch: int = 500
    fetch_wait_s: float = 0.2
    summary_min_samples: int = 30
    log_size: int = 200_000
    rebuild_s: float = 600.0
    label_cache: int = 200_000
    join_retention_s: float = 30 * 86_400.0

    def model(self, name: str) -> ModelConfig:
        return self.per_model.get(name, self.defaults)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> MonitorSettings:
        def env_int(suffix: str, default: int, low: int, high: int) -> int:
            return read_int(env, f"RTML_MONITOR_{suffix}", default, minimum=low, maximum=high)

        def env_float(suffix: str, default: float, low: float, high: float) -> float:
            return read_float(env, f"RTML_MONITOR_{suffix}", default, minimum=low, maximum=high)

        base = ModelConfig()
        values: dict[str, Any] = {
            "window_size": env_int("WINDOW_SIZE", base.window_size, 10, 10_000_000),
            "window_s": env_float("WINDOW_S", base.window_s, 0, 86_400 * 30),
            "eval_every": env_int("EVAL_EVERY", base.eval_every, 1, 10_000_000),
            "min_samples": env_int("MIN_SAMPLES", base.min_samples, 2, 10_000_000),
            "alpha": env_float("ALPHA", base.alpha, 1e-12, 1.0),
            "psi_threshold": env_float("PSI_THRESHOLD", base.psi_threshold, 0, 100),
            "clear_windows": env_int("CLEAR_WINDOWS", base.clear_windows, 1, 1000),
            "family_alpha": env_float("FAMILY_ALPHA", base.family_alpha, 1e-9, 1.0),
            "horizon_events": env_int("HORIZON_EVENTS", base.horizon_events, 1, 10**12),
            "mean_shift_std": env_float("MEAN_SHIFT_STD", base.mean_shift_std, 1e-3, 100),
            "share_shift_std": env_float("SHARE_SHIFT_STD", base.share_shift_std, 1e-3, 100),
            "error_rate_shift": env_float("ERROR_RATE_SHIFT", base.error_rate_shift, 1e-4, 1),
            "near_margin": env_float("NEAR_MARGIN", base.near_margin, 0, 1),
            "perf_window": env_int("PERF_WINDOW", base.perf_window, 10, 10_000_000),
            "perf_min_samples": env_int("PERF_MIN_SAMPLES", base.perf_min_samples, 2, 10_000_000),
            "perf_margin": env_float("PERF_MARGIN", base.perf_margin, 0, 1),
        }
        try:
            defaults = ModelConfig(**values)
        except ValueError as error:
            raise SettingsError("RTML_MONITOR_*", "", str(error)) from error
        raw_models = env.get("RTML_MONITOR_MODELS", "{}")
        try:
            parsed = json.loads(raw_models)
            if not isinstance(parsed, dict) or not all(isinstance(v, dict) for v in parsed.values()):
                raise ValueError("must be a JSON object of model name -> object of settings")
            per_model = {str(name): defaults.with_overrides(overrides) for name, overrides in parsed.items()}
        except ValueError as error:
            raise SettingsError("RTML_MONITOR_MODELS", raw_models, str(error)) from error
        return cls(
            common=CommonSettings.from_env(env, service=SERVICE, default_http_port=DEFAULT_HTTP_PORT),
            defaults=defaults,
            per_model=per_model,
            batch=env_int("BATCH", 500, 1, 10_000),
            summary_min_samples=env_int("SUMMARY_MIN_SAMPLES", 30, 1, 10_000_000),
            log_size=env_int("LOG_SIZE", 200_000, 1000, 50_000_000),
            rebuild_s=env_float("REBUILD_S", 600.0, 0, 86_400 * 7),
            join_retention_s=env_float("JOIN_RETENTION_S", 30 * 86_400.0, 3600, 86_400 * 3650),
        )
