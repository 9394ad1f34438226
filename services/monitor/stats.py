"""Two-sample drift statistics: pure keyword-only functions over numpy arrays.

Each returns ``nan`` where it is undefined (an empty sample); callers turn a
sample below their minimum size into "insufficient data" before calling. Every
function is tested against scipy/statsmodels (or the textbook formula) on the
same inputs in ``tests/monitor/test_stats.py``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

FloatArray = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class TestResult:
    """A test statistic with its p-value (and degrees of freedom where the test has them)."""

    statistic: float
    pvalue: float
    dof: int = 0

    __test__ = False  # not a pytest class


def _sorted(values: ArrayLike) -> FloatArray:
    # a stable (merge) sort is linear on input that is already sorted, as reference samples are
    return np.sort(np.asarray(values, dtype=np.float64).ravel(), kind="stable")


def ks_two_sample(*, reference: ArrayLike, current: ArrayLike) -> TestResult:
    """Two-sided Kolmogorov-Smirnov test of two samples.

    Notes
    -----
    ``D = sup_x |F_ref(x) - F_cur(x)|`` over the pooled sample points (right-continuous
    empirical CDFs, so ties are handled). The p-value is Smirnov's asymptotic
    distribution, ``kstwo.sf(D, round(n m / (n + m)))``, which is what scipy's
    ``ks_2samp(method="asymp")`` reports.

    >>> r = ks_two_sample(reference=[1, 2, 3, 4], current=[3, 4, 5, 6])
    >>> r.statistic
    0.5
    """
    a, b = _sorted(reference), _sorted(current)
    if a.size == 0 or b.size == 0:
        return TestResult(math.nan, math.nan)
    pooled = np.sort(np.concatenate([a, b]), kind="stable")  # sorted lookups are cache-friendly
    diff = np.searchsorted(a, pooled, side="right") / a.size - np.searchsorted(b, pooled, side="right") / b.size
    d = float(np.max(np.abs(diff)))
    m, n = sorted((float(a.size), float(b.size)), reverse=True)
    en = round(m * n / (m + n))
    p = float(np.clip(sps.kstwo.sf(d, en), 0.0, 1.0))
    return TestResult(d, p)


def wasserstein(*, reference: ArrayLike, current: ArrayLike) -> float:
    """First Wasserstein (earth mover's) distance between two empirical distributions.

    Notes
    -----
    ``W1 = integral |F_ref(x) - F_cur(x)| dx``, evaluated exactly as a sum over the
    gaps between consecutive pooled sample points.

    >>> wasserstein(reference=[0.0, 1.0], current=[1.0, 2.0])
    1.0
    """
    a, b = _sorted(reference), _sorted(current)
    if a.size == 0 or b.size == 0:
        return math.nan
    pooled = np.sort(np.concatenate([a, b]), kind="stable")  # two sorted runs: a linear merge
    gaps = np.diff(pooled)
    cdf_a = np.searchsorted(a, pooled[:-1], side="right") / a.size
    cdf_b = np.searchsorted(b, pooled[:-1], side="right") / b.size
    return float(np.sum(np.abs(cdf_a - cdf_b) * gaps))


def merge_sparse(
    *, reference_counts: ArrayLike, current_counts: ArrayLike, min_expected: float = 5.0
) -> tuple[FloatArray, FloatArray]:
    """Merge categories whose expected count under homogeneity is below ``min_expected``.

    Categories are taken from the sparsest up and pooled into one "other" bin
    until that bin (and every remaining one) reaches ``min_expected``, the
    usual condition for the chi-square approximation. Categories empty in both
    samples are dropped.

    >>> ref, cur = merge_sparse(reference_counts=[50, 40, 3, 3], current_counts=[45, 45, 4, 2])
    >>> ref.tolist(), cur.tolist()
    ([50.0, 40.0, 6.0], [45.0, 45.0, 6.0])
    """
    ref = np.asarray(reference_counts, dtype=np.float64).ravel()
    cur = np.asarray(current_counts, dtype=np.float64).ravel()
    if ref.shape != cur.shape:
        raise ValueError(f"reference has {ref.size} categories, current {cur.size}")
    keep = (ref + cur) > 0
    ref, cur = ref[keep], cur[keep]
    n_ref, n_cur = ref.sum(), cur.sum()
    if ref.size == 0 or n_ref == 0 or n_cur == 0:
        return ref, cur
    totals = ref + cur
    # the smaller sample's expected count is the binding one
    expected = totals * min(n_ref, n_cur) / (n_ref + n_cur)
    order = np.argsort(expected, kind="stable")
    pooled_ref = pooled_cur = pooled_exp = 0.0
    merged: list[int] = []
    for index in order:
        if expected[index] >= min_expected and (not merged or pooled_exp >= min_expected):
            break
        merged.append(int(index))
        pooled_ref += ref[index]
        pooled_cur += cur[index]
        pooled_exp += expected[index]
    if len(merged) <= 1:
        return ref, cur
    rest = np.setdiff1d(np.arange(ref.size), merged)
    return np.append(ref[rest], pooled_ref), np.append(cur[rest], pooled_cur)


def chi_square(*, reference_counts: ArrayLike, current_counts: ArrayLike) -> TestResult:
    """Pearson's chi-square test of homogeneity of two count vectors (a 2 x k table).

    Notes
    -----
    ``X2 = sum_ij (O_ij - E_ij)^2 / E_ij`` with ``E_ij = row_i col_j / N``, on
    ``k - 1`` degrees of freedom, without continuity correction: scipy's
    ``chi2_contingency(table, correction=False)``. Merge sparse categories first
    with :func:`merge_sparse`.

    >>> r = chi_square(reference_counts=[10, 10], current_counts=[10, 10])
    >>> r.statistic, r.pvalue, r.dof
    (0.0, 1.0, 1)
    """
    ref = np.asarray(reference_counts, dtype=np.float64).ravel()
    cur = np.asarray(current_counts, dtype=np.float64).ravel()
    keep = (ref + cur) > 0
    table = np.vstack([ref[keep], cur[keep]])
    if table.shape[1] < 2 or table[0].sum() == 0 or table[1].sum() == 0:
        return TestResult(math.nan, math.nan)
    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / table.sum()
    statistic = float(np.sum((table - expected) ** 2 / expected))
    dof = table.shape[1] - 1
    return TestResult(statistic, float(sps.chi2.sf(statistic, dof)), dof)


def _fractions(values: ArrayLike) -> FloatArray:
    counts = np.asarray(values, dtype=np.float64).ravel()
    total = counts.sum()
    return counts / total if total > 0 else np.full(counts.shape, math.nan)


def jensen_shannon(*, reference: ArrayLike, current: ArrayLike) -> float:
    """Jensen-Shannon divergence in bits (0 identical, 1 disjoint) of two count or frequency vectors.

    Notes
    -----
    ``JS = (KL(p || m) + KL(q || m)) / 2`` with ``m = (p + q) / 2``, base 2. This
    is the square of scipy's ``jensenshannon(p, q, base=2)`` distance.

    >>> jensen_shannon(reference=[1, 0], current=[0, 1])
    1.0
    """
    p, q = _fractions(reference), _fractions(current)
    if p.size == 0 or np.isnan(p).any() or np.isnan(q).any():
        return math.nan
    m = (p + q) / 2.0
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p = np.where(p > 0, p * np.log2(p / m), 0.0)
        kl_q = np.where(q > 0, q * np.log2(q / m), 0.0)
    return float(max(0.0, (kl_p.sum() + kl_q.sum()) / 2.0))


def psi(*, reference: ArrayLike, current: ArrayLike, epsilon: float = 1e-4) -> float:
    """Population stability index of two count or frequency vectors over the same bins.

    Notes
    -----
    ``PSI = sum_i (c_i - r_i) ln(c_i / r_i)`` over bin shares, each share floored
    at ``epsilon`` so an empty bin costs a large but finite amount. It is the
    symmetric KL divergence ``KL(c || r) + KL(r || c)``. Rule of thumb: < 0.1
    stable, 0.1-0.25 moderate shift, > 0.25 major shift.

    >>> round(psi(reference=[50, 50], current=[50, 50]), 12)
    0.0
    """
    r, c = _fractions(reference), _fractions(current)
    if r.size == 0 or np.isnan(r).any() or np.isnan(c).any():
        return math.nan
    r = np.maximum(r, epsilon)
    c = np.maximum(c, epsilon)
    return float(np.sum((c - r) * np.log(c / r)))


def quantile_edges(sample: ArrayLike, *, bins: int = 10) -> FloatArray:
    """Interior cut points at the sample's ``1/bins .. (bins-1)/bins`` quantiles, duplicates removed.

    >>> quantile_edges(np.arange(10.0), bins=2).tolist()
    [4.5]
    """
    values = np.asarray(sample, dtype=np.float64).ravel()
    if values.size == 0:
        return np.empty(0)
    return np.unique(np.quantile(values, np.linspace(0.0, 1.0, bins + 1)[1:-1]))


def bin_counts(values: ArrayLike, edges: ArrayLike) -> FloatArray:
    """Counts in the ``len(edges) + 1`` bins ``(-inf, e0], (e0, e1], ..., (e_last, inf)``.

    >>> bin_counts([0, 1, 2, 3], [1.5]).tolist()
    [2.0, 2.0]
    """
    index = np.searchsorted(np.asarray(edges, dtype=np.float64), np.asarray(values, dtype=np.float64), side="left")
    return np.bincount(index, minlength=len(np.asarray(edges)) + 1).astype(np.float64)


def benjamini_hochberg(pvalues: Sequence[float | None], *, alpha: float) -> list[tuple[float | None, bool]]:
    """Benjamini-Hochberg adjusted p-values and rejections over the tests that ran.

    ``None`` (or ``nan``) marks a test that did not run (insufficient data); it is
    left out of the family and answered ``(None, False)``. Uses statsmodels'
    ``multipletests(method="fdr_bh")``.

    >>> benjamini_hochberg([0.01, None, 0.04], alpha=0.05)
    [(0.02, True), (None, False), (0.04, True)]
    """
    ran = [i for i, p in enumerate(pvalues) if p is not None and not math.isnan(p)]
    out: list[tuple[float | None, bool]] = [(None, False)] * len(pvalues)
    if not ran:
        return out
    reject, adjusted, _, _ = multipletests([pvalues[i] for i in ran], alpha=alpha, method="fdr_bh")
    for position, i in enumerate(ran):
        out[i] = (float(adjusted[position]), bool(reject[position]))
    return out


def mean_binary_entropy(scores: ArrayLike) -> float:
    """Mean entropy in bits of Bernoulli(score) over the scores; 1.0 means every score sits at 0.5.

    >>> mean_binary_entropy([0.5, 0.5])
    1.0
    """
    p = np.clip(np.asarray(scores, dtype=np.float64).ravel(), 0.0, 1.0)
    if p.size == 0:
        return math.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(np.where(p > 0, p * np.log2(p), 0.0) + np.where(p < 1, (1 - p) * np.log2(1 - p), 0.0))
    return float(h.mean())


def near_threshold_share(scores: ArrayLike, *, threshold: float, margin: float) -> float:
    """Share of scores within ``margin`` of the decision threshold.

    >>> near_threshold_share([0.1, 0.45, 0.55, 0.9], threshold=0.5, margin=0.1)
    0.5
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    if s.size == 0:
        return math.nan
    return float(np.mean(np.abs(s - threshold) <= margin))
