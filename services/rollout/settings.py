"""Rollout's configuration, read once from the environment in ``main()``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from shared.settings import CommonSettings, SettingsError, read_float, read_int

DEFAULT_HTTP_PORT = 8105


def read_bool(env: Mapping[str, str], variable: str, default: bool) -> bool:
    raw = env.get(variable)
    if raw is None:
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off", ""):
        return False
    raise SettingsError(variable, raw, "must be true or false (1/0, yes/no, on/off)")


@dataclass(frozen=True, slots=True)
class RolloutSettings:
    """``RTML_ROLLOUT_*`` beside the common settings; see docs/rollout.md."""

    common: CommonSettings
    check_interval_s: float = 5.0
    summary_timeout_s: float = 2.0
    protect_reads: bool = False
    max_artifact_bytes: int = 256 << 20

    def __post_init__(self) -> None:
        if self.check_interval_s <= 0:
            raise SettingsError("RTML_ROLLOUT_CHECK_INTERVAL_S", str(self.check_interval_s), "must be positive")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RolloutSettings:
        """Build from the environment.

        >>> RolloutSettings.from_env({"RTML_ROLLOUT_CHECK_INTERVAL_S": "1"}).check_interval_s
        1.0
        >>> RolloutSettings.from_env({"RTML_ROLLOUT_PROTECT_READS": "maybe"})
        Traceback (most recent call last):
        ...
        shared.settings.SettingsError: RTML_ROLLOUT_PROTECT_READS='maybe': must be true or false (1/0, yes/no, on/off)
        """
        return cls(
            common=CommonSettings.from_env(env, service="rollout", default_http_port=DEFAULT_HTTP_PORT),
            check_interval_s=read_float(env, "RTML_ROLLOUT_CHECK_INTERVAL_S", 5.0, minimum=0.05, maximum=3600),
            summary_timeout_s=read_float(env, "RTML_ROLLOUT_SUMMARY_TIMEOUT_S", 2.0, minimum=0.05, maximum=60),
            protect_reads=read_bool(env, "RTML_ROLLOUT_PROTECT_READS", False),
            max_artifact_bytes=read_int(env, "RTML_ROLLOUT_MAX_ARTIFACT_MB", 256, minimum=1, maximum=4096) << 20,
        )
