"""Holdout figures: ROC AUC, and precision and recall at the decision threshold.

The threshold is chosen on the training rows (never on the holdout it is judged
on): the score that maximizes F1 = 2PR / (P + R), flagging ``score >= threshold``.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import roc_auc_score


def confusion(y: np.ndarray, scores: np.ndarray, threshold: float) -> tuple[int, int, int, int]:
    """``(tp, fp, fn, tn)`` flagging ``score >= threshold``.

    >>> confusion(np.array([1, 0, 1, 0]), np.array([0.9, 0.8, 0.2, 0.1]), 0.5)
    (1, 1, 1, 1)
    """
    flagged = scores >= threshold
    positive = y == 1
    return (
        int(np.sum(flagged & positive)),
        int(np.sum(flagged & ~positive)),
        int(np.sum(~flagged & positive)),
        int(np.sum(~flagged & ~positive)),
    )


def choose_threshold(y: np.ndarray, scores: np.ndarray) -> float:
    """The candidate score with the highest F1 (ties: the higher threshold, fewer alerts).

    Sorting once makes every candidate's counts a cumulative sum: flagging the top
    ``k`` scores gives ``tp_k = sum(y[:k])`` and ``fp_k = k - tp_k``.

    >>> choose_threshold(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    0.35
    """
    if y.sum() == 0:
        raise ValueError("no positive rows: a threshold cannot be chosen")
    order = np.argsort(-scores, kind="stable")
    ranked, sorted_y = scores[order], y[order]
    tp = np.cumsum(sorted_y)
    k = np.arange(1, len(y) + 1)
    # Only the last of a run of equal scores is a real cut.
    last = np.r_[ranked[1:] != ranked[:-1], True]
    precision = tp / k
    recall = tp / y.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(tp > 0, 2 * precision * recall / (precision + recall), 0.0)
    f1 = np.where(last, f1, -1.0)
    best = np.flatnonzero(f1 == f1.max())[0]
    return float(ranked[best])


def evaluate(y: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """AUC, precision, recall, F1 and counts at ``threshold``; ``nan`` where undefined."""
    tp, fp, fn, _ = confusion(y, scores, threshold)
    both = 0 < y.sum() < len(y)
    precision = tp / (tp + fp) if tp + fp else math.nan
    recall = tp / (tp + fn) if tp + fn else math.nan
    f1 = 2 * precision * recall / (precision + recall) if tp else (0.0 if tp + fp and tp + fn else math.nan)
    return {
        "auc": float(roc_auc_score(y, scores)) if both else math.nan,
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "threshold": float(threshold),
        "rows": float(len(y)),
        "positives": float(y.sum()),
        "flagged": float(tp + fp),
    }
