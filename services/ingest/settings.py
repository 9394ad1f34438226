"""Ingest configuration, read once from the environment in ``main()``.

=============================  ==========  ============================================================
variable                       default     meaning
=============================  ==========  ============================================================
RTML_INGEST_HTTP_PORT          8101        HTTP port (health, metrics, ``POST /v1/events``)
RTML_INGEST_SCHEMAS            (none)      comma-separated YAML files / Python modules of extra schemas
RTML_INGEST_BATCH              256         messages fetched per pull
RTML_INGEST_FETCHERS           2           concurrent pull loops per replica
RTML_INGEST_MAX_EVENT_BYTES    65536       larger inputs are dead-lettered as ``oversize``
RTML_INGEST_MAX_DEPTH          8           deeper nesting is dead-lettered as ``too_deep``
RTML_INGEST_MAX_SKEW_S         300         events further in the future are ``from_future``
RTML_INGEST_MAX_AGE_S          604800      older events are ``too_old`` (0 disables the check)
RTML_INGEST_MAX_DELIVER        5           deliveries of a crashing message before it is dead-lettered
RTML_INGEST_BACKOFF_S          0.5         first redelivery delay after a crash (doubles, up to 30 s)
RTML_INGEST_ACK_WAIT_S         30          server redelivers an input not acked within this time
RTML_INGEST_MAX_BODY_BYTES     4194304     HTTP bodies above this get 413
RTML_INGEST_MAX_HTTP_EVENTS    10000       more events than this in one HTTP body get 413
=============================  ==========  ============================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from services.ingest.schema import SchemaError, SchemaRegistry, build_registry
from services.ingest.validate import Limits
from shared.settings import CommonSettings, SettingsError, read_float, read_int

SERVICE = "ingest"
DEFAULT_HTTP_PORT = 8101


@dataclass(frozen=True, slots=True)
class IngestSettings:
    common: CommonSettings = field(default_factory=CommonSettings)
    schema_sources: tuple[str, ...] = ()
    batch: int = 256
    fetchers: int = 2
    max_event_bytes: int = 64 * 1024
    max_depth: int = 8
    max_skew_s: float = 300.0
    max_age_s: float = 7 * 86_400.0
    max_deliver: int = 5
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    ack_wait_s: float = 30.0
    fetch_wait_s: float = 0.5
    publish_timeout_s: float = 5.0
    max_body_bytes: int = 4 << 20
    max_http_events: int = 10_000

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> IngestSettings:
        raw_sources = env.get("RTML_INGEST_SCHEMAS", "")
        sources = tuple(part.strip() for part in raw_sources.split(",") if part.strip())
        settings = cls(
            common=CommonSettings.from_env(env, service=SERVICE, default_http_port=DEFAULT_HTTP_PORT),
            schema_sources=sources,
            batch=read_int(env, "RTML_INGEST_BATCH", 256, minimum=1, maximum=10_000),
            fetchers=read_int(env, "RTML_INGEST_FETCHERS", 2, minimum=1, maximum=64),
            max_event_bytes=read_int(env, "RTML_INGEST_MAX_EVENT_BYTES", 64 * 1024, minimum=64, maximum=1 << 20),
            max_depth=read_int(env, "RTML_INGEST_MAX_DEPTH", 8, minimum=2, maximum=64),
            max_skew_s=read_float(env, "RTML_INGEST_MAX_SKEW_S", 300.0, minimum=0, maximum=86_400 * 365),
            max_age_s=read_float(env, "RTML_INGEST_MAX_AGE_S", 7 * 86_400.0, minimum=0, maximum=86_400 * 36_500),
            max_deliver=read_int(env, "RTML_INGEST_MAX_DELIVER", 5, minimum=1, maximum=100),
            backoff_s=read_float(env, "RTML_INGEST_BACKOFF_S", 0.5, minimum=0, maximum=600),
            ack_wait_s=read_float(env, "RTML_INGEST_ACK_WAIT_S", 30.0, minimum=1, maximum=3600),
            max_body_bytes=read_int(env, "RTML_INGEST_MAX_BODY_BYTES", 4 << 20, minimum=1024, maximum=1 << 30),
            max_http_events=read_int(env, "RTML_INGEST_MAX_HTTP_EVENTS", 10_000, minimum=1, maximum=1_000_000),
        )
        try:
            settings.registry()
        except SchemaError as error:
            raise SettingsError("RTML_INGEST_SCHEMAS", raw_sources, str(error)) from error
        return settings

    @property
    def limits(self) -> Limits:
        return Limits(max_skew_ms=round(self.max_skew_s * 1000), max_age_ms=round(self.max_age_s * 1000))

    def registry(self) -> SchemaRegistry:
        return build_registry(self.schema_sources)
