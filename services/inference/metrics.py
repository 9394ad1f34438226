"""The inference service's own Prometheus metrics, ``rtml_inference_...``."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram

from shared.metrics import LATENCY_BUCKETS_S, ServiceMetrics

BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
STAGES = ("features", "queue", "model", "total")


class InferenceMetrics:
    def __init__(self, base: ServiceMetrics) -> None:
        registry = base.registry
        self.stage_seconds = Histogram(
            base.name("stage_seconds"), "Latency per stage (features, queue, model, total)",
            ["model", "version", "variant", "stage"], buckets=LATENCY_BUCKETS_S, registry=registry,
        )  # fmt: skip
        self.batch_size = Histogram(
            base.name("batch_size"), "Rows per batch run", ["model", "version"],
            buckets=BATCH_SIZE_BUCKETS, registry=registry,
        )  # fmt: skip
        self.queue_depth = Gauge(
            base.name("queue_depth"), "Requests queued in the batcher", ["model", "version"], registry=registry
        )
        self.shed = Counter(
            base.name("shed_total"), "Requests shed with 429 (queue full)", ["model", "version", "variant"],
            registry=registry,
        )  # fmt: skip
        self.timeouts = Counter(
            base.name("timeouts_total"), "Requests answered 504 (deadline passed)", ["model", "version", "variant"],
            registry=registry,
        )  # fmt: skip
        self.predictions = Counter(
            base.name("predictions_total"), "Scores answered or computed for shadows",
            ["model", "version", "variant"], registry=registry,
        )  # fmt: skip
        self.degraded = Counter(
            base.name("degraded_total"), "Predictions made with defaults for missing features",
            ["model", "version", "reason"], registry=registry,
        )  # fmt: skip
        self.loads = Counter(
            base.name("model_loads_total"), "Model version loads, by outcome (ok, refused)", ["model", "outcome"],
            registry=registry,
        )  # fmt: skip
        self.loaded = Gauge(base.name("loaded_versions"), "Model versions loaded", ["model"], registry=registry)
        self.log_dropped = Counter(
            base.name("prediction_log_dropped_total"), "Prediction records dropped (log backlog full)",
            registry=registry,
        )  # fmt: skip
        self.shadow_dropped = Counter(
            base.name("shadow_dropped_total"), "Shadow runs skipped (shadow queue full or version not loaded)",
            ["model"], registry=registry,
        )  # fmt: skip


@dataclass(slots=True)
class VariantMetrics:
    """Children bound once per (model, version, variant), so the hot path does no label lookups."""

    features: Histogram
    queue: Histogram
    model: Histogram
    total: Histogram
    predictions: Counter
    shed: Counter
    timeouts: Counter

    @classmethod
    def bind(cls, metrics: InferenceMetrics, model: str, version: int, variant: str) -> VariantMetrics:
        labels = (model, str(version), variant)
        stage = metrics.stage_seconds
        return cls(
            features=stage.labels(*labels, "features"),
            queue=stage.labels(*labels, "queue"),
            model=stage.labels(*labels, "model"),
            total=stage.labels(*labels, "total"),
            predictions=metrics.predictions.labels(*labels),
            shed=metrics.shed.labels(*labels),
            timeouts=metrics.timeouts.labels(*labels),
        )
