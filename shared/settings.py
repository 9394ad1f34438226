"""Configuration read once from the environment, at the edge.

Each service builds one frozen settings object in ``main()`` and hands it down;
nothing else reads ``os.environ``. A bad value fails at construction with a
message naming the variable and the value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

NAMESPACE_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


class SettingsError(ValueError):
    """A configuration variable is missing or malformed."""

    def __init__(self, variable: str, value: str, reason: str) -> None:
        super().__init__(f"{variable}={value!r}: {reason}")
        self.variable = variable
        self.value = value


def read_url(env: Mapping[str, str], variable: str, default: str, schemes: tuple[str, ...]) -> str:
    value = env.get(variable, default)
    parts = urlsplit(value)
    if parts.scheme not in schemes:
        raise SettingsError(variable, value, f"scheme must be one of {', '.join(schemes)}")
    try:
        port = parts.port
    except ValueError as error:
        raise SettingsError(variable, value, f"bad port ({error})") from error
    if not parts.hostname and not (parts.scheme.startswith("postgres") and "host=" in parts.query):
        raise SettingsError(variable, value, "no host")
    if port == 0:
        raise SettingsError(variable, value, "port 0 is not a port to connect to")
    return value


def read_int(env: Mapping[str, str], variable: str, default: int, *, minimum: int, maximum: int) -> int:
    raw = env.get(variable)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError as error:
        raise SettingsError(variable, raw, "not an integer") from error
    if not minimum <= value <= maximum:
        raise SettingsError(variable, raw, f"must be between {minimum} and {maximum}")
    return value


def read_float(env: Mapping[str, str], variable: str, default: float, *, minimum: float, maximum: float) -> float:
    raw = env.get(variable)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError as error:
        raise SettingsError(variable, raw, "not a number") from error
    if not minimum <= value <= maximum:  # also rejects nan
        raise SettingsError(variable, raw, f"must be between {minimum} and {maximum}")
    return value


def read_namespace(env: Mapping[str, str]) -> str:
    value = env.get("RTML_NAMESPACE", "rtml")
    if not NAMESPACE_PATTERN.match(value):
        raise SettingsError(
            "RTML_NAMESPACE",
            value,
            "must start with a lower-case letter and hold only a-z, 0-9 and _ (at most 40 characters)",
        )
    return value


DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/rtml"


@dataclass(frozen=True, slots=True)
class CommonSettings:
    """What every service needs: where the servers are and which namespace it lives in."""

    nats_url: str = DEFAULT_NATS_URL
    redis_url: str = DEFAULT_REDIS_URL
    database_url: str = DEFAULT_DATABASE_URL
    namespace: str = "rtml"
    admin_token: str = ""
    http_host: str = "127.0.0.1"
    http_port: int = 0
    shutdown_grace_s: float = 10.0
    max_in_flight: int = 1024
    stream_replicas: int = 1

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, service: str, default_http_port: int) -> CommonSettings:
        """Read the shared variables; the HTTP port is ``RTML_<SERVICE>_HTTP_PORT``."""
        port_variable = f"RTML_{service.upper()}_HTTP_PORT"
        return cls(
            nats_url=read_url(env, "RTML_NATS_URL", DEFAULT_NATS_URL, ("nats", "tls", "ws", "wss")),
            redis_url=read_url(env, "RTML_REDIS_URL", DEFAULT_REDIS_URL, ("redis", "rediss", "unix")),
            database_url=read_url(env, "RTML_DATABASE_URL", DEFAULT_DATABASE_URL, ("postgresql", "postgres")),
            namespace=read_namespace(env),
            admin_token=env.get("RTML_ADMIN_TOKEN", ""),
            http_host=env.get("RTML_HTTP_HOST", "127.0.0.1"),
            http_port=read_int(env, port_variable, default_http_port, minimum=0, maximum=65535),
            shutdown_grace_s=read_float(env, "RTML_SHUTDOWN_GRACE_S", 10.0, minimum=0, maximum=600),
            max_in_flight=read_int(env, "RTML_MAX_IN_FLIGHT", 1024, minimum=1, maximum=1_000_000),
            stream_replicas=read_int(env, "RTML_STREAM_REPLICAS", 1, minimum=1, maximum=5),
        )
