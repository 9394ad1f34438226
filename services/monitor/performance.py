"""Binary-classifier performance from (score, label) pairs: pure keyword-only functions.

Labels are 0/1 (any non-zero label counts as positive). Each returns ``nan``
where undefined (no pairs, or AUC with a single class); tested against
scikit-learn on the same inputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.stats import rankdata


def _pairs(scores: ArrayLike, labels: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = (np.asarray(labels, dtype=np.float64).ravel() != 0).astype(np.float64)
    if s.shape != y.shape:
        raise ValueError(f"{s.size} scores but {y.size} labels")
    return s, y


def roc_auc(*, scores: ArrayLike, labels: ArrayLike) -> float:
    """Area under the ROC curve: the Mann-Whitney statistic with mid-ranks for ties.

    >>> roc_auc(scores=[0.1, 0.4, 0.35, 0.8], labels=[0, 0, 1, 1])
    0.75
    """
    s, y = _pairs(scores, labels)
    positives = float(y.sum())
    negatives = float(y.size) - positives
    if positives == 0 or negatives == 0:
        return math.nan
    ranks = rankdata(s)
    return float((ranks[y == 1].sum() - positives * (positives + 1) / 2.0) / (positives * negatives))


def precision_recall(*, scores: ArrayLike, labels: ArrayLike, threshold: float) -> tuple[float, float]:
    """Precision and recall of ``score >= threshold`` as the positive prediction.

    >>> precision_recall(scores=[0.2, 0.6, 0.7, 0.9], labels=[0, 0, 1, 1], threshold=0.5)
    (0.6666666666666666, 1.0)
    """
    s, y = _pairs(scores, labels)
    predicted = s >= threshold
    true_positive = float(np.sum(predicted & (y == 1)))
    precision = true_positive / float(predicted.sum()) if predicted.any() else math.nan
    recall = true_positive / float(y.sum()) if y.any() else math.nan
    return precision, recall


def error_rate(*, scores: ArrayLike, labels: ArrayLike, threshold: float) -> float:
    """Share of pairs misclassified at the threshold.

    >>> error_rate(scores=[0.2, 0.6, 0.7, 0.9], labels=[0, 0, 1, 1], threshold=0.5)
    0.25
    """
    s, y = _pairs(scores, labels)
    if s.size == 0:
        return math.nan
    return float(np.mean((s >= threshold) != (y == 1)))


def log_loss(*, scores: ArrayLike, labels: ArrayLike, epsilon: float = 1e-15) -> float:
    """Mean negative log-likelihood of the labels under Bernoulli(score), scores clipped to ``[eps, 1 - eps]``.

    >>> round(log_loss(scores=[0.5, 0.5], labels=[0, 1]), 6)
    0.693147
    """
    s, y = _pairs(scores, labels)
    if s.size == 0:
        return math.nan
    p = np.clip(s, epsilon, 1.0 - epsilon)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log(1.0 - p)))


def calibration_error(*, scores: ArrayLike, labels: ArrayLike, bins: int = 10) -> float:
    """Expected calibration error over ``bins`` equal-width score bins.

    Notes
    -----
    ``ECE = sum_b (n_b / n) |mean(y in b) - mean(score in b)|``; a score of exactly
    1.0 falls in the last bin.

    >>> round(calibration_error(scores=[0.1, 0.1, 0.9, 0.9], labels=[0, 0, 1, 1]), 12)
    0.1
    """
    s, y = _pairs(scores, labels)
    if s.size == 0:
        return math.nan
    index = np.minimum((np.clip(s, 0.0, 1.0) * bins).astype(np.int64), bins - 1)
    counts = np.bincount(index, minlength=bins).astype(np.float64)
    label_sums = np.bincount(index, weights=y, minlength=bins)
    score_sums = np.bincount(index, weights=s, minlength=bins)
    filled = counts > 0
    gaps = np.abs(label_sums[filled] - score_sums[filled])
    return float(gaps.sum() / s.size)


@dataclass(frozen=True, slots=True)
class Performance:
    """The live figures of one version (and variant) over its labelled window; ``None`` below the minimum."""

    labelled: int
    auc: float | None
    precision: float | None
    recall: float | None
    log_loss: float | None
    calibration_error: float | None
    error_rate: float | None

    def to_dict(self) -> dict[str, float | int | None]:
        return {
            "labelled": self.labelled,
            "auc": self.auc,
            "precision": self.precision,
            "recall": self.recall,
            "log_loss": self.log_loss,
            "calibration_error": self.calibration_error,
            "error_rate": self.error_rate,
        }


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def performance(*, scores: ArrayLike, labels: ArrayLike, threshold: float, min_samples: int) -> Performance:
    """Every figure at once; each is ``None`` below ``min_samples`` pairs or where undefined.

    >>> performance(scores=[0.9], labels=[1], threshold=0.5, min_samples=10).auc is None
    True
    """
    s, y = _pairs(scores, labels)
    if s.size < min_samples:
        return Performance(int(s.size), None, None, None, None, None, None)
    precision, recall = precision_recall(scores=s, labels=y, threshold=threshold)
    return Performance(
        labelled=int(s.size),
        auc=_finite(roc_auc(scores=s, labels=y)),
        precision=_finite(precision),
        recall=_finite(recall),
        log_loss=_finite(log_loss(scores=s, labels=y)),
        calibration_error=_finite(calibration_error(scores=s, labels=y)),
        error_rate=_finite(error_rate(scores=s, labels=y, threshold=threshold)),
    )
