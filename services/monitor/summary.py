"""The summary the rollout controller gates on: per-version figures and candidate-vs-stable comparison.

Request ``{"model", "stable", "candidate", "window_s"}`` on ``<ns>.monitor.summary``;
the reply shape is documented in ``docs/monitor.md``. Every figure computed from
fewer than ``min_samples`` values is ``None`` (msgpack nil), never ``nan``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from services.monitor import performance as perf
from services.monitor import stats
from services.monitor.windows import LogSlice
from shared.errors import BadRequest
from shared.subjects import check_token

AGREEMENT_THRESHOLD = 0.5
MAX_WINDOW_S = 7 * 86_400.0


@dataclass(frozen=True, slots=True)
class SummaryRequest:
    model: str
    stable: int
    candidate: int
    window_s: float

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> SummaryRequest:
        model = body.get("model")
        if not isinstance(model, str):
            raise BadRequest("field 'model' must be a string")
        try:
            check_token("model", model)
        except ValueError as error:
            raise BadRequest(str(error)) from error
        versions: list[int] = []
        for key in ("stable", "candidate"):
            value = body.get(key)
            if isinstance(value, bool) or not isinstance(value, int):
                raise BadRequest(f"field '{key}' must be an integer version")
            versions.append(value)
        window_s = body.get("window_s")
        if isinstance(window_s, bool) or not isinstance(window_s, int | float) or not math.isfinite(window_s):
            raise BadRequest("field 'window_s' must be a finite number")
        if not 0 < window_s <= MAX_WINDOW_S:
            raise BadRequest(f"field 'window_s' must be within (0, {MAX_WINDOW_S:g}]")
        return cls(model=model, stable=versions[0], candidate=versions[1], window_s=float(window_s))


def _mean_or_none(values: np.ndarray, min_samples: int) -> float | None:
    return float(values.mean()) if values.size >= min_samples else None


def version_figures(
    part: LogSlice,
    version: int,
    label_of: Callable[[str], float | None],
    min_samples: int,
    *,
    variant: str | None = None,
) -> dict[str, Any]:
    """Counts, rates, latency quantiles, mean score and AUC of one version's records in the slice
    (of one variant's, given ``variant``).

    >>> from services.monitor.windows import PredictionLog
    >>> log = PredictionLog(capacity=10)
    >>> for i in range(4):
    ...     log.append(str(i), 0, 1, 0.2 * i, latency_us=1000 * (i + 1), error=i == 3, degraded=False)
    >>> figures = version_figures(log.since(0), 1, lambda _: None, min_samples=2)
    >>> figures["predictions"], figures["errors"], figures["error_rate"], figures["latency_p50_ms"]
    (4, 1, 0.25, 2.0)
    """
    mine = part.versions == version
    if variant is not None:
        mine &= part.variants == part.variant_code(variant)
    errors = part.errors[mine]
    n = int(mine.sum())
    answered = mine & ~part.errors
    scores = part.scores[answered]
    latency_ms = part.latency_us[answered].astype(np.float64) / 1000.0
    pairs = [
        (float(score), label)
        for id_, score in zip((i for i, m in zip(part.ids, answered, strict=True) if m), scores.tolist(), strict=True)
        if (label := label_of(id_)) is not None
    ]
    auc = None
    if len(pairs) >= min_samples:
        value = perf.roc_auc(scores=[s for s, _ in pairs], labels=[y for _, y in pairs])
        auc = value if math.isfinite(value) else None
    big_enough = n >= min_samples
    return {
        "predictions": n,
        "errors": int(errors.sum()),
        "error_rate": float(errors.mean()) if big_enough else None,
        "degraded_rate": float(part.degraded[mine].mean()) if big_enough else None,
        "latency_p50_ms": float(np.quantile(latency_ms, 0.5)) if latency_ms.size >= min_samples else None,
        "latency_p99_ms": float(np.quantile(latency_ms, 0.99)) if latency_ms.size >= min_samples else None,
        "score_mean": _mean_or_none(scores, min_samples),
        "labelled": len(pairs),
        "auc": auc,
    }


def comparison(part: LogSlice, stable: int, candidate: int, min_samples: int) -> dict[str, Any]:
    """Candidate against stable: paired agreement on requests both scored, and the PSI of their scores.

    >>> from services.monitor.windows import PredictionLog
    >>> log = PredictionLog(capacity=10)
    >>> for i, (s1, s2) in enumerate([(0.1, 0.2), (0.9, 0.4), (0.7, 0.8)]):
    ...     for version, score in ((1, s1), (2, s2)):
    ...         log.append(str(i), 0, version, score, latency_us=1, error=False, degraded=False)
    >>> comparison(log.since(0), 1, 2, min_samples=3)["agreement"]
    0.6666666666666666
    """
    answered = ~part.errors
    stable_scores: dict[str, float] = {}
    candidate_scores: dict[str, float] = {}
    for id_, version, score, ok in zip(part.ids, part.versions.tolist(), part.scores.tolist(), answered.tolist(),
                                       strict=True):  # fmt: skip
        if not ok:
            continue
        if version == stable:
            stable_scores[id_] = score
        elif version == candidate:
            candidate_scores[id_] = score
    matched = stable_scores.keys() & candidate_scores.keys()
    agreement = None
    if len(matched) >= min_samples:
        same = sum(
            (stable_scores[i] >= AGREEMENT_THRESHOLD) == (candidate_scores[i] >= AGREEMENT_THRESHOLD) for i in matched
        )
        agreement = same / len(matched)
    score_psi = None
    if stable != candidate and len(stable_scores) >= min_samples and len(candidate_scores) >= min_samples:
        reference = np.fromiter(stable_scores.values(), dtype=np.float64)
        current = np.fromiter(candidate_scores.values(), dtype=np.float64)
        edges = stats.quantile_edges(reference, bins=10)
        value = stats.psi(reference=stats.bin_counts(reference, edges), current=stats.bin_counts(current, edges))
        score_psi = value if math.isfinite(value) else None
    return {"matched": len(matched), "agreement": agreement, "score_psi": score_psi, "min_samples": min_samples}


def summarize(
    request: SummaryRequest, part: LogSlice, label_of: Callable[[str], float | None], min_samples: int
) -> dict[str, Any]:
    versions = {
        str(v): version_figures(part, v, label_of, min_samples)
        for v in dict.fromkeys((request.stable, request.candidate))
    }
    return {
        "model": request.model,
        "window_s": request.window_s,
        "versions": versions,
        "comparison": comparison(part, request.stable, request.candidate, min_samples),
    }
