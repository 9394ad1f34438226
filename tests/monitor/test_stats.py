"""Each drift statistic against scipy/statsmodels (or the textbook formula) on the same random inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps
from scipy.spatial.distance import jensenshannon
from scipy.special import rel_entr
from statsmodels.stats.multitest import multipletests

from services.monitor import stats

TOL = 1e-9
SEEDS = range(25)


def _samples(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n, m = int(rng.integers(5, 400)), int(rng.integers(5, 400))
    a = rng.normal(0, 1, n)
    b = rng.normal(rng.uniform(-0.5, 0.5), rng.uniform(0.5, 2), m)
    if seed % 3 == 0:  # ties
        a, b = np.round(a, 1), np.round(b, 1)
    return a, b


@pytest.mark.parametrize("seed", SEEDS)
def test_ks_matches_scipy(seed: int) -> None:
    a, b = _samples(seed)
    ours = stats.ks_two_sample(reference=a, current=b)
    theirs = sps.ks_2samp(a, b, method="asymp")
    assert ours.statistic == pytest.approx(theirs.statistic, abs=TOL)
    assert ours.pvalue == pytest.approx(theirs.pvalue, abs=TOL)


@pytest.mark.parametrize("seed", SEEDS)
def test_wasserstein_matches_scipy(seed: int) -> None:
    a, b = _samples(seed)
    assert stats.wasserstein(reference=a, current=b) == pytest.approx(sps.wasserstein_distance(a, b), abs=TOL)


def _counts(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1000 + seed)
    k = int(rng.integers(2, 12))
    p = rng.dirichlet(np.ones(k))
    q = rng.dirichlet(np.ones(k))
    return rng.multinomial(int(rng.integers(50, 2000)), p).astype(float), rng.multinomial(
        int(rng.integers(50, 2000)), q
    ).astype(float)


@pytest.mark.parametrize("seed", SEEDS)
def test_chi_square_matches_scipy(seed: int) -> None:
    ref, cur = _counts(seed)
    ref, cur = stats.merge_sparse(reference_counts=ref, current_counts=cur)
    if ref.size < 2:
        pytest.skip("everything merged into one category")
    ours = stats.chi_square(reference_counts=ref, current_counts=cur)
    statistic, pvalue, dof, _ = sps.chi2_contingency(np.vstack([ref, cur]), correction=False)
    assert ours.statistic == pytest.approx(statistic, abs=TOL, rel=TOL)
    assert ours.pvalue == pytest.approx(pvalue, abs=TOL)
    assert ours.dof == dof


@given(
    st.lists(st.integers(0, 60), min_size=2, max_size=15).flatmap(
        lambda ref: st.tuples(st.just(ref), st.lists(st.integers(0, 60), min_size=len(ref), max_size=len(ref)))
    ),
    st.floats(1.0, 10.0),
)
@settings(max_examples=150, deadline=None)
def test_merge_sparse_keeps_totals_and_min_expected(pair: tuple[list[int], list[int]], min_expected: float) -> None:
    ref_in, cur_in = np.array(pair[0], float), np.array(pair[1], float)
    ref, cur = stats.merge_sparse(reference_counts=ref_in, current_counts=cur_in, min_expected=min_expected)
    assert ref.sum() == ref_in.sum() and cur.sum() == cur_in.sum()
    assert ((ref + cur) > 0).all()
    n_ref, n_cur = ref.sum(), cur.sum()
    if n_ref > 0 and n_cur > 0 and ref.size > 1:
        expected = (ref + cur) * min(n_ref, n_cur) / (n_ref + n_cur)
        # at most one bin (the pooled one when everything sparse could not fill it) falls short
        assert (expected < min_expected).sum() <= 1


@pytest.mark.parametrize("seed", SEEDS)
def test_jensen_shannon_matches_scipy(seed: int) -> None:
    ref, cur = _counts(seed)
    expected = jensenshannon(ref / ref.sum(), cur / cur.sum(), base=2) ** 2
    assert stats.jensen_shannon(reference=ref, current=cur) == pytest.approx(expected, abs=TOL)


@pytest.mark.parametrize("seed", SEEDS)
def test_psi_is_symmetric_kl(seed: int) -> None:
    ref, cur = _counts(seed)
    r, c = np.maximum(ref / ref.sum(), 1e-4), np.maximum(cur / cur.sum(), 1e-4)
    expected = float(np.sum(rel_entr(c, r) + rel_entr(r, c)))
    assert stats.psi(reference=ref, current=cur) == pytest.approx(expected, abs=TOL)


@pytest.mark.parametrize("seed", SEEDS)
def test_benjamini_hochberg_matches_statsmodels(seed: int) -> None:
    rng = np.random.default_rng(seed)
    p = rng.uniform(0, 0.2, int(rng.integers(1, 40)))
    ours = stats.benjamini_hochberg(list(p), alpha=0.05)
    reject, adjusted, _, _ = multipletests(p, alpha=0.05, method="fdr_bh")
    assert [r for _, r in ours] == list(reject)
    np.testing.assert_allclose([a for a, _ in ours], adjusted, atol=TOL)


def test_benjamini_hochberg_leaves_out_tests_that_did_not_run() -> None:
    with_gaps = stats.benjamini_hochberg([0.01, None, math.nan, 0.03], alpha=0.05)
    without = stats.benjamini_hochberg([0.01, 0.03], alpha=0.05)
    assert with_gaps[1] == (None, False) and with_gaps[2] == (None, False)
    assert [with_gaps[0], with_gaps[3]] == without


def test_empty_samples_are_nan_not_errors() -> None:
    assert math.isnan(stats.ks_two_sample(reference=[], current=[1.0]).pvalue)
    assert math.isnan(stats.wasserstein(reference=[1.0], current=[]))
    assert math.isnan(stats.chi_square(reference_counts=[0, 0], current_counts=[1, 2]).statistic)
    assert math.isnan(stats.psi(reference=[0, 0], current=[1, 1]))
    assert math.isnan(stats.jensen_shannon(reference=[], current=[]))


@given(st.lists(st.floats(0, 1), min_size=1, max_size=50))
def test_mean_binary_entropy_brute_force(scores: list[float]) -> None:
    expected = float(np.mean([sps.entropy([p, 1 - p], base=2) for p in scores]))
    assert stats.mean_binary_entropy(scores) == pytest.approx(expected, abs=TOL)


def test_bin_counts_match_numpy_histogram_on_interior_edges() -> None:
    rng = np.random.default_rng(3)
    values = rng.normal(size=1000)
    edges = stats.quantile_edges(values, bins=10)
    counts = stats.bin_counts(values, edges)
    assert counts.sum() == 1000 and counts.size == edges.size + 1
    np.testing.assert_allclose(counts, 100, atol=1)
