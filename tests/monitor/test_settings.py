"""Monitor settings from the environment: defaults, validation naming the variable, per-model overrides."""

from __future__ import annotations

import pytest

from services.monitor.settings import ModelConfig, MonitorSettings
from shared.settings import SettingsError


def test_defaults() -> None:
    settings = MonitorSettings.from_env({})
    assert settings.common.http_port == 8104
    assert settings.defaults == ModelConfig()
    assert settings.model("anything") is settings.defaults


def test_per_model_overrides() -> None:
    settings = MonitorSettings.from_env(
        {"RTML_MONITOR_WINDOW_SIZE": "4000", "RTML_MONITOR_MODELS": '{"fraud": {"window_size": 2000, "alpha": 0.001}}'}
    )
    assert settings.model("fraud").window_size == 2000 and settings.model("fraud").alpha == 0.001
    assert settings.model("fraud").eval_every == settings.defaults.eval_every
    assert settings.model("other").window_size == 4000


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"RTML_MONITOR_WINDOW_SIZE": "abc"}, "RTML_MONITOR_WINDOW_SIZE"),
        ({"RTML_MONITOR_ALPHA": "2"}, "RTML_MONITOR_ALPHA"),
        ({"RTML_MONITOR_MODELS": "[1]"}, "RTML_MONITOR_MODELS"),
        ({"RTML_MONITOR_MODELS": '{"m": {"nope": 1}}'}, "RTML_MONITOR_MODELS"),
        ({"RTML_MONITOR_MODELS": '{"m": {"window_size": "big"}}'}, "RTML_MONITOR_MODELS"),
        ({"RTML_MONITOR_WINDOW_SIZE": "100", "RTML_MONITOR_MIN_SAMPLES": "500"}, "RTML_MONITOR_*"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError) as raised:
        MonitorSettings.from_env(env)
    assert raised.value.variable == variable
