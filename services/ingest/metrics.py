"""Ingest's Prometheus metrics, all ``rtml_ingest_...``, on the service's own registry."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from shared.metrics import LATENCY_BUCKETS_S, ServiceMetrics

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)


class IngestMetrics:
    def __init__(self, base: ServiceMetrics) -> None:
        registry = base.registry
        self.accepted = Counter(
            base.name("events_accepted_total"), "Events normalized and published, by type", ["type"], registry=registry
        )
        self.rejected = Counter(
            base.name("events_rejected_total"), "Events dead-lettered, by type and reason", ["type", "reason"],
            registry=registry,
        )  # fmt: skip
        self.unknown_fields = Counter(
            base.name("unknown_fields_total"), "Undeclared fields dropped, by type", ["type"], registry=registry
        )
        self.crashes = Counter(
            base.name("handler_crashes_total"), "Inputs whose handling raised unexpectedly, by type", ["type"],
            registry=registry,
        )  # fmt: skip
        self.publish_failures = Counter(
            base.name("publish_failures_total"), "Output publishes not acked by JetStream (input redelivered later)",
            registry=registry,
        )  # fmt: skip
        self.lag = Gauge(
            base.name("consumer_lag"), "Inputs in the events stream not yet delivered to the durable consumer",
            registry=registry,
        )  # fmt: skip
        self.latency = Histogram(
            base.name("intake_latency_seconds"), "From the event's publish (stream time) to its output's ack, by type",
            ["type"], buckets=LATENCY_BUCKETS_S, registry=registry,
        )  # fmt: skip
        self.batch_size = Histogram(
            base.name("batch_size"), "Inputs per fetched batch", buckets=BATCH_BUCKETS, registry=registry
        )
        self.http_events = Counter(
            base.name("http_events_total"), "Events posted over HTTP, by outcome", ["outcome"], registry=registry
        )
