"""Live performance figures against scikit-learn on the same random inputs."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics

from services.monitor import performance as perf

TOL = 1e-9


def _data(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(10, 500))
    labels = (rng.random(n) < rng.uniform(0.1, 0.9)).astype(float)
    scores = np.clip(rng.normal(0.3 + 0.4 * labels, 0.25), 0, 1)
    if seed % 4 == 0:
        scores = np.round(scores, 1)  # ties
    return scores, labels


@pytest.mark.parametrize("seed", range(20))
def test_against_sklearn(seed: int) -> None:
    scores, labels = _data(seed)
    if labels.min() != labels.max():
        assert perf.roc_auc(scores=scores, labels=labels) == pytest.approx(
            metrics.roc_auc_score(labels, scores), abs=TOL
        )
    predicted = scores >= 0.5
    precision, recall = perf.precision_recall(scores=scores, labels=labels, threshold=0.5)
    if predicted.any():
        assert precision == pytest.approx(metrics.precision_score(labels, predicted), abs=TOL)
    assert recall == pytest.approx(metrics.recall_score(labels, predicted), abs=TOL)
    assert perf.log_loss(scores=scores, labels=labels) == pytest.approx(
        metrics.log_loss(labels, np.clip(scores, 1e-15, 1 - 1e-15), labels=[0, 1]), abs=TOL
    )
    assert perf.error_rate(scores=scores, labels=labels, threshold=0.5) == pytest.approx(
        1 - metrics.accuracy_score(labels, predicted), abs=TOL
    )


@pytest.mark.parametrize("seed", range(10))
def test_calibration_error_brute_force(seed: int) -> None:
    scores, labels = _data(seed)
    total = 0.0
    for b in range(10):
        inside = [(s, y) for s, y in zip(scores, labels, strict=True) if min(int(s * 10), 9) == b]
        if inside:
            total += len(inside) * abs(np.mean([y for _, y in inside]) - np.mean([s for s, _ in inside]))
    assert perf.calibration_error(scores=scores, labels=labels) == pytest.approx(total / len(scores), abs=TOL)


def test_undefined_figures_are_none_not_nan() -> None:
    figures = perf.performance(scores=[0.9] * 50, labels=[1] * 50, threshold=0.5, min_samples=10)
    assert figures.auc is None and figures.recall == 1.0
    assert perf.performance(scores=[0.1], labels=[0], threshold=0.5, min_samples=10).to_dict()["log_loss"] is None


def test_mismatched_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="2 scores but 1 labels"):
        perf.roc_auc(scores=[0.1, 0.2], labels=[1])
