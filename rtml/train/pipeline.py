"""The training run: export -> time split -> fit -> ONNX -> verify -> evaluate -> profile -> register.

:func:`train` is everything but the registration and touches nothing but the
export file, so it is tested without servers; :func:`register` stores the result
as the model's next version through :func:`shared.registry.register_version`.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from rtml.train import model as models
from rtml.train.dataset import Dataset, DatasetError, Source, load_export, time_split
from rtml.train.evaluate import choose_threshold, evaluate
from services.monitor.profiles import build_reference_profile
from shared.registry import FeatureSpec, ModelMetadata

log = structlog.get_logger(__name__)
ONLINE_SEPARATORS = (".", ":")


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """``export``: one file, or :class:`Source` files (one per feature view) joined on the event id."""

    export: Path | tuple[Source, ...]
    model: str = "fraud"
    kind: str = "mlp"
    since_ms: int | None = None
    until_ms: int | None = None
    holdout_fraction: float = 0.2
    threshold: float | None = None
    seed: int = 0
    features: tuple[str, ...] = ()
    entity_from: Mapping[str, str] = field(default_factory=dict)
    atol: float = 1e-5
    min_positives: int = 5
    description: str = ""


@dataclass(frozen=True, slots=True)
class TrainResult:
    artifact: bytes
    metadata: ModelMetadata
    train_rows: int
    holdout_rows: int
    train_until_ms: int
    holdout_from_ms: int
    max_onnx_error: float

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.artifact).hexdigest()

    @property
    def holdout(self) -> dict[str, Any]:
        return {k[len("holdout_") :]: v for k, v in self.metadata.training_metrics.items() if k.startswith("holdout_")}


def feature_specs(columns: Sequence[str], *, entity_from: Mapping[str, str] | None = None) -> list[FeatureSpec]:
    """One spec per export column, in order: ``view.field`` (or ``view:field``) is read online, the rest
    come with the request.

    >>> [(s.source, s.view, s.field) for s in feature_specs(["card_velocity.txn_count_1h", "amount"])]
    [('online', 'card_velocity', 'txn_count_1h'), ('request', None, None)]
    """
    specs = []
    for name in columns:
        view, field_name = None, None
        for separator in ONLINE_SEPARATORS:
            if separator in name:
                view, _, field_name = name.partition(separator)
                break
        if view and field_name:
            specs.append(
                FeatureSpec(
                    name=name,
                    source="online",
                    view=view,
                    field=field_name,
                    entity_from=(entity_from or {}).get(view),
                    default=0.0,
                )
            )
        else:
            specs.append(FeatureSpec(name=name, source="request"))
    return specs


def _check(part: Dataset, what: str, minimum: int) -> None:
    if part.positives < minimum or len(part) - part.positives < minimum:
        raise DatasetError(
            f"the {what} rows hold {part.positives} frauds and {len(part) - part.positives} legitimate ones; "
            f"need at least {minimum} of each (widen --since/--until or lower --holdout)"
        )


def train(config: TrainConfig) -> TrainResult:
    """Fit, export, verify and evaluate a version; :class:`DatasetError` or ``ValueError`` explain a refusal."""
    started = time.monotonic()
    data = load_export(config.export, since_ms=config.since_ms, until_ms=config.until_ms, features=config.features)
    training, holdout = time_split(data, holdout_fraction=config.holdout_fraction)
    _check(training, "training", config.min_positives)
    _check(holdout, "holdout", 1)
    pipeline = models.fit(config.kind, training.x, training.y, seed=config.seed)
    artifact = models.export(pipeline, len(data.features))
    # Every row, training and holdout, must score the same in ONNX Runtime as in scikit-learn.
    max_error = models.verify(artifact, pipeline, data.x, atol=config.atol)
    train_scores = models.onnx_scores(artifact, training.x)
    holdout_scores = models.onnx_scores(artifact, holdout.x)
    threshold = config.threshold if config.threshold is not None else choose_threshold(training.y, train_scores)
    figures = evaluate(holdout.y, holdout_scores, threshold)
    train_figures = evaluate(training.y, train_scores, threshold)
    metrics: dict[str, Any] = {f"holdout_{k}": v for k, v in figures.items()}
    metrics.update({f"train_{k}": v for k, v in train_figures.items()})
    metrics.update(
        kind=config.kind,
        train_from_ms=int(training.ts[0]),
        train_until_ms=int(training.ts[-1]),
        holdout_from_ms=int(holdout.ts[0]),
        holdout_until_ms=int(holdout.ts[-1]),
        max_onnx_error=max_error,
        fit_s=round(time.monotonic() - started, 3),
    )
    # The monitor's own profile builder, so the monitor reads exactly what it expects.
    profile = build_reference_profile(
        model=config.model,
        version=0,  # the registry assigns the number; the monitor reads it from there
        features={name: data.x[:, i] for i, name in enumerate(data.features)},
        scores=np.r_[train_scores, holdout_scores],
        metrics={k: v for k, v in figures.items() if k in ("auc", "precision", "recall", "f1")},
        threshold=threshold,
        seed=config.seed,
    ).to_dict()
    metadata = ModelMetadata(
        features=feature_specs(data.features, entity_from=config.entity_from),
        threshold=float(min(1.0, max(0.0, threshold))),
        training_metrics=_json_safe(metrics),
        reference_profile=profile,
        description=config.description
        or f"{config.kind} on {len(training)} rows, holdout AUC {figures['auc']:.3f} on {len(holdout)} later rows",
    )
    log.info("train_done", model=config.model, **{k: metrics[k] for k in ("holdout_auc", "holdout_precision")})
    return TrainResult(
        artifact=artifact,
        metadata=metadata,
        train_rows=len(training),
        holdout_rows=len(holdout),
        train_until_ms=int(training.ts[-1]),
        holdout_from_ms=int(holdout.ts[0]),
        max_onnx_error=max_error,
    )


def _json_safe(values: Mapping[str, Any]) -> dict[str, Any]:
    """NaN is not JSON: undefined figures are stored as ``None``."""
    return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in values.items()}
