"""The monitor's Prometheus metrics, ``rtml_monitor_...``, on the service's own registry."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from shared.metrics import ServiceMetrics


class MonitorMetrics:
    def __init__(self, base: ServiceMetrics) -> None:
        registry = base.registry
        self.predictions = Counter(
            base.name("predictions_total"), "Prediction records consumed, by model", ["model"], registry=registry
        )
        self.labels = Counter(
            base.name("labels_total"), "Labels consumed, by outcome (joined, unmatched, duplicate)", ["outcome"],
            registry=registry,
        )  # fmt: skip
        self.bad_messages = Counter(
            base.name("bad_messages_total"), "Messages that could not be decoded, by stream", ["stream"],
            registry=registry,
        )  # fmt: skip
        self.drift = Gauge(
            base.name("drift_statistic"), "Last windowed drift statistic, by model, version, feature and statistic",
            ["model", "version", "feature", "statistic"], registry=registry,
        )  # fmt: skip
        self.detector_alarms = Counter(
            base.name("detector_alarms_total"), "Streaming detector alarms, by model and feature",
            ["model", "feature"], registry=registry,
        )  # fmt: skip
        self.confidence = Gauge(
            base.name("confidence"), "Score figures of the last window (mean, entropy, near_threshold_share)",
            ["model", "version", "figure"], registry=registry,
        )  # fmt: skip
        self.performance = Gauge(
            base.name("performance"), "Live performance over the labelled window, by version, variant and metric",
            ["model", "version", "variant", "metric"], registry=registry,
        )  # fmt: skip
        self.alerts_open = Gauge(base.name("alerts_open"), "Alerts open now", registry=registry)
        self.alerts_raised = Counter(base.name("alerts_raised_total"), "Alerts raised", ["kind"], registry=registry)
        self.alerts_resolved = Counter(
            base.name("alerts_resolved_total"), "Alerts resolved", ["kind"], registry=registry
        )
