"""Threshold choice, holdout figures and the time split against brute-force references."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

from rtml.train.dataset import Dataset, time_split
from rtml.train.evaluate import choose_threshold, evaluate

labels_and_scores = st.integers(min_value=2, max_value=60).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(0, 1), min_size=n, max_size=n).filter(lambda ys: 0 < sum(ys) < len(ys)),
        st.lists(st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.5, 0.75, 0.9, 1.0]), min_size=n, max_size=n),
    )
)


@settings(max_examples=150, deadline=None)
@given(labels_and_scores)
def test_chosen_threshold_has_the_best_f1_of_any_cut(case: tuple[list[int], list[float]]) -> None:
    y, s = np.array(case[0]), np.array(case[1])
    threshold = choose_threshold(y, s)
    best = max(f1_score(y, (s >= t).astype(int), zero_division=0) for t in np.unique(s))
    assert f1_score(y, (s >= threshold).astype(int), zero_division=0) == best
    assert threshold in s


@settings(max_examples=100, deadline=None)
@given(labels_and_scores)
def test_figures_match_scikit_learn(case: tuple[list[int], list[float]]) -> None:
    y, s = np.array(case[0]), np.array(case[1])
    figures = evaluate(y, s, 0.5)
    flagged = (s >= 0.5).astype(int)
    assert figures["auc"] == roc_auc_score(y, s)
    assert figures["recall"] == recall_score(y, flagged)
    if flagged.sum():
        assert figures["precision"] == precision_score(y, flagged)
        assert np.isclose(figures["f1"], f1_score(y, flagged))
    else:
        assert np.isnan(figures["precision"])


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 20), min_size=2, max_size=80).filter(lambda ts: len(set(ts)) > 1),
    st.floats(0.05, 0.95),
)
def test_time_split_never_puts_one_time_on_both_sides(stamps: list[int], fraction: float) -> None:
    ts = np.sort(np.array(stamps))
    n = len(ts)
    data = Dataset(np.arange(n).astype(str).astype(object), ts, np.zeros(n, int), np.zeros((n, 1)), ("f",))
    try:
        training, holdout = time_split(data, holdout_fraction=fraction)
    except ValueError:
        # Only when the cut lands on the earliest time, so nothing would be left to train on.
        position = min(n - 1, max(1, round(n * (1 - fraction))))
        assert ts[position] == ts[0]
        return
    assert len(training) + len(holdout) == n
    assert training.ts.max() < holdout.ts.min()
