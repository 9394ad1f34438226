"""The features service's configuration, read once from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from shared.settings import CommonSettings, read_float, read_int

DEFAULT_HTTP_PORT = 8102


@dataclass(frozen=True, slots=True)
class FeaturesSettings:
    """``common`` plus the stream, batching and lag bounds of the features service.

    >>> FeaturesSettings.from_env({"RTML_FEATURES_BATCH": "0"})
    Traceback (most recent call last):
    ...
    shared.settings.SettingsError: RTML_FEATURES_BATCH='0': must be between 1 and 10000
    """

    common: CommonSettings
    views_path: str | None = None
    # the largest batch: below full load batches are what arrives during a store (tens of events),
    # so the bound only matters behind a backlog, where bigger batches cost less per event
    batch_size: int = 4000
    fetch_timeout_s: float = 0.5
    ack_wait_s: float = 30.0
    max_lag_msgs: int = 100_000
    lag_poll_s: float = 1.0
    max_entities: int = 1000
    retry_max_s: float = 5.0
    # batches whose online store may be under way at once: the next goes to Redis while one runs
    stores_in_flight: int = 2
    max_ack_pending: int = 0  # 0: stores_in_flight + 2 batches (finishing, being stored, gathered behind)
    offline_linger_s: float = 0.05  # how long an offline write waits to take later batches' rows along
    # how long a batch waits after its first message for more (consumer.py): fewer, fuller batches
    # below full load, for this much more latency
    linger_s: float = 0.002

    @property
    def ack_pending_cap(self) -> int:
        """The consumer's max_ack_pending: as configured, or room for every batch one replica holds."""
        return self.max_ack_pending or (self.stores_in_flight + 2) * self.batch_size

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> FeaturesSettings:
        return cls(
            common=CommonSettings.from_env(env, service="features", default_http_port=DEFAULT_HTTP_PORT),
            views_path=env.get("RTML_FEATURES_VIEWS") or None,
            batch_size=read_int(env, "RTML_FEATURES_BATCH", 4000, minimum=1, maximum=10_000),
            fetch_timeout_s=read_float(env, "RTML_FEATURES_FETCH_TIMEOUT_S", 0.5, minimum=0.01, maximum=30),
            ack_wait_s=read_float(env, "RTML_FEATURES_ACK_WAIT_S", 30.0, minimum=1, maximum=3600),
            max_lag_msgs=read_int(env, "RTML_FEATURES_MAX_LAG", 100_000, minimum=1, maximum=1_000_000_000),
            lag_poll_s=read_float(env, "RTML_FEATURES_LAG_POLL_S", 1.0, minimum=0.05, maximum=60),
            max_entities=read_int(env, "RTML_FEATURES_MAX_ENTITIES", 1000, minimum=1, maximum=100_000),
            retry_max_s=read_float(env, "RTML_FEATURES_RETRY_MAX_S", 5.0, minimum=0.1, maximum=300),
            stores_in_flight=read_int(env, "RTML_FEATURES_STORES_IN_FLIGHT", 2, minimum=1, maximum=8),
            max_ack_pending=read_int(env, "RTML_FEATURES_MAX_ACK_PENDING", 0, minimum=0, maximum=1_000_000),
            offline_linger_s=read_float(env, "RTML_FEATURES_OFFLINE_LINGER_S", 0.05, minimum=0, maximum=5),
            linger_s=read_float(env, "RTML_FEATURES_LINGER_S", 0.002, minimum=0, maximum=1),
        )
