"""Settings: defaults, and a bad value fails naming the variable."""

from __future__ import annotations

import pytest

from shared.settings import CommonSettings, SettingsError


def read(env: dict[str, str]) -> CommonSettings:
    return CommonSettings.from_env(env, service="inference", default_http_port=8103)


def test_defaults() -> None:
    settings = read({})
    assert settings.nats_url == "nats://127.0.0.1:4222"
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.database_url == "postgresql://postgres@127.0.0.1:5432/rtml"
    assert settings.namespace == "rtml"
    assert settings.http_port == 8103


def test_reads_every_variable() -> None:
    settings = read(
        {
            "RTML_NATS_URL": "nats://nats:4222",
            "RTML_REDIS_URL": "redis://cache:6380/2",
            "RTML_DATABASE_URL": "postgresql://u:p@db:5433/x",
            "RTML_NAMESPACE": "team_a",
            "RTML_ADMIN_TOKEN": "s3cret",
            "RTML_INFERENCE_HTTP_PORT": "9000",
            "RTML_SHUTDOWN_GRACE_S": "2.5",
        }
    )
    assert (settings.namespace, settings.http_port, settings.shutdown_grace_s) == ("team_a", 9000, 2.5)
    assert settings.admin_token == "s3cret"


@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        ("RTML_NATS_URL", "http://x:4222", "scheme"),
        ("RTML_NATS_URL", "nats://x:99999", "bad port"),
        ("RTML_REDIS_URL", "redis://:6379", "no host"),
        ("RTML_DATABASE_URL", "mysql://x/db", "scheme"),
        ("RTML_NAMESPACE", "Has.Dots", "lower-case"),
        ("RTML_NAMESPACE", "", "lower-case"),
        ("RTML_INFERENCE_HTTP_PORT", "eighty", "not an integer"),
        ("RTML_INFERENCE_HTTP_PORT", "70000", "between"),
        ("RTML_SHUTDOWN_GRACE_S", "nan", "between"),
        ("RTML_MAX_IN_FLIGHT", "0", "between"),
    ],
)
def test_bad_value_names_the_variable(variable: str, value: str, reason: str) -> None:
    with pytest.raises(SettingsError, match=reason) as raised:
        read({variable: value})
    assert raised.value.variable == variable
    assert variable in str(raised.value) and repr(value) in str(raised.value)


def test_settings_are_frozen() -> None:
    settings = read({})
    with pytest.raises(AttributeError):
        settings.namespace = "other"  # type: ignore[misc]
