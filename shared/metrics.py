"""Prometheus metrics with stable names, ``rtml_<service>_...``, one registry per service object.

A registry per service (not the process-global one) lets tests run several
services in one process without name clashes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS_S = (
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01,
    0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip


@dataclass
class ServiceMetrics:
    """The metrics every service has; services add their own to ``registry`` via :meth:`name`."""

    service: str
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.requests = Counter(
            self.name("requests_total"), "Requests handled, by endpoint", ["endpoint"], registry=self.registry
        )
        self.errors = Counter(
            self.name("errors_total"), "Requests answered with an error, by endpoint and code",
            ["endpoint", "code"], registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            self.name("request_latency_seconds"), "Time from receipt to reply, by endpoint",
            ["endpoint"], buckets=LATENCY_BUCKETS_S, registry=self.registry,
        )  # fmt: skip
        self.in_flight = Gauge(self.name("in_flight"), "Requests being handled now", registry=self.registry)
        self.up = Gauge(self.name("ready"), "1 when the service is ready to take work", registry=self.registry)

    def name(self, suffix: str) -> str:
        return f"rtml_{self.service}_{suffix}"
