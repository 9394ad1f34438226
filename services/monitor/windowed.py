"""Windowed drift tests of a window of rows against a reference profile, corrected across features.

Numeric features (and the score): Kolmogorov-Smirnov against the reference sample
(its p-value is the one corrected), Wasserstein distance, and PSI over the
reference's decile bins. Categorical features: chi-square of the window's
category counts against the reference shares (sparse categories merged; the
p-value corrected), Jensen-Shannon divergence and PSI over the categories.
Benjamini-Hochberg runs over every feature that had enough data. A feature
drifts when its corrected test rejects *and* its PSI reaches the threshold: with
thousands of rows a test rejects for differences nobody cares about, and PSI
alone has no notion of sample noise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from services.monitor import stats
from services.monitor.profiles import CategoricalProfile, FeatureProfile, NumericProfile, category_key

Status = Literal["ok", "drift", "insufficient_data"]
OTHER = "__other__"


@dataclass(frozen=True, slots=True)
class FeatureDrift:
    feature: str
    kind: str
    n: int
    status: Status
    statistics: dict[str, float | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {"feature": self.feature, "kind": self.kind, "n": self.n, "status": self.status,
                "statistics": self.statistics}  # fmt: skip


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def numeric_statistics(profile: NumericProfile, values: NDArray[np.float64]) -> tuple[dict[str, float | None], float]:
    values = np.sort(values)  # once; the statistics' own sorts are then linear passes
    ks = stats.ks_two_sample(reference=profile.sample, current=values)
    counts = stats.bin_counts(values, profile.edges)
    distance = stats.wasserstein(reference=profile.sample, current=values)
    return {
        "ks": _finite(ks.statistic),
        "ks_pvalue": _finite(ks.pvalue),
        "wasserstein": _finite(distance),
        "wasserstein_std": _finite(distance / profile.std) if profile.std > 0 else None,
        "psi": _finite(stats.psi(reference=profile.fractions, current=counts)),
        "mean": float(values.mean()),
    }, ks.pvalue


def categorical_statistics(
    profile: CategoricalProfile, values: NDArray[np.float64] | list[object]
) -> tuple[dict[str, float | None], float]:
    categories = list(profile.shares)
    position = {c: i for i, c in enumerate(categories)}
    current = np.zeros(len(categories) + 1)
    for value in values:
        current[position.get(category_key(value), len(categories))] += 1
    reference = np.array([*profile.shares.values(), 0.0]) * profile.count
    ref_merged, cur_merged = stats.merge_sparse(reference_counts=reference, current_counts=current)
    chi = stats.chi_square(reference_counts=ref_merged, current_counts=cur_merged)
    return {
        "chi2": _finite(chi.statistic),
        "chi2_pvalue": _finite(chi.pvalue),
        "chi2_dof": float(chi.dof),
        "js": _finite(stats.jensen_shannon(reference=reference, current=current)),
        "psi": _finite(stats.psi(reference=reference, current=current)),
        "unseen_share": float(current[-1] / current.sum()) if current.sum() else None,
    }, chi.pvalue


def evaluate(
    profiles: Mapping[str, FeatureProfile],
    columns: Mapping[str, NDArray[np.float64]],
    *,
    min_samples: int,
    alpha: float,
    psi_threshold: float,
) -> list[FeatureDrift]:
    """Test each profiled feature's window column against its reference; BH over those with enough data.

    >>> rng = np.random.default_rng(0)
    >>> ref = NumericProfile.build(rng.normal(size=5000), bins=10, sample_size=1000, rng=rng)
    >>> same, moved = rng.normal(size=2000), rng.normal(1.0, 1.0, size=2000)
    >>> [d.status for d in evaluate({"a": ref, "b": ref, "c": ref}, {"a": same, "b": moved, "c": same[:10]},
    ...                              min_samples=100, alpha=0.01, psi_threshold=0.1)]
    ['ok', 'drift', 'insufficient_data']
    """
    partial: list[tuple[str, str, int, dict[str, float | None], float | None]] = []
    for name, profile in profiles.items():
        column = columns.get(name)
        values = np.empty(0) if column is None else column[np.isfinite(column)]
        kind = "numeric" if isinstance(profile, NumericProfile) else "categorical"
        if values.size < min_samples:
            partial.append((name, kind, int(values.size), {}, None))
            continue
        if isinstance(profile, NumericProfile):
            figures, pvalue = numeric_statistics(profile, values)
        else:
            figures, pvalue = categorical_statistics(profile, values)
        partial.append((name, kind, int(values.size), figures, pvalue))
    corrected = stats.benjamini_hochberg([p for *_, p in partial], alpha=alpha)
    results: list[FeatureDrift] = []
    for (name, kind, n, found, p_raw), (adjusted, rejected) in zip(partial, corrected, strict=True):
        if p_raw is None:
            results.append(FeatureDrift(name, kind, n, "insufficient_data"))
            continue
        psi_value = found.get("psi")
        drifting = rejected and psi_value is not None and psi_value >= psi_threshold
        results.append(FeatureDrift(name, kind, n, "drift" if drifting else "ok", {**found, "p_adjusted": adjusted}))
    return results


def confidence(scores: NDArray[np.float64], *, threshold: float, margin: float, min_samples: int) -> dict[str, object]:
    """Score figures of a window: mean, mean entropy, share near the threshold; ``None`` below the minimum.

    >>> confidence(np.array([0.5, 0.5, 0.9]), threshold=0.5, margin=0.1, min_samples=2)["near_threshold_share"]
    0.6666666666666666
    """
    s = scores[np.isfinite(scores)]
    if s.size < min_samples:
        return {"n": int(s.size), "mean": None, "entropy": None, "near_threshold_share": None}
    return {
        "n": int(s.size),
        "mean": float(s.mean()),
        "entropy": stats.mean_binary_entropy(s),
        "near_threshold_share": stats.near_threshold_share(s, threshold=threshold, margin=margin),
    }
