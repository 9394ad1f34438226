"""The demo's pure pieces: percentiles against numpy, the live window, the summary, the broken model."""

from __future__ import annotations

import doctest

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtml.demo import broken, cli, rest, stats, story, view
from rtml.demo.broken import inverted
from rtml.demo.stats import LiveStats, Reply, percentile
from rtml.demo.story import Story
from tests.onnx_factory import logistic_model


@pytest.mark.parametrize("module", [broken, cli, rest, stats, story, view])
def test_doctests(module: object) -> None:
    failures, _ = doctest.testmod(module)  # type: ignore[arg-type]
    assert failures == 0


@given(
    values=st.lists(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), min_size=1, max_size=200),
    q=st.floats(min_value=0, max_value=100),
)
def test_percentile_matches_numpy(values: list[float], q: float) -> None:
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)), rel=1e-9, abs=1e-6)


def test_percentile_refuses_a_bad_rank() -> None:
    with pytest.raises(ValueError, match="q must be"):
        percentile([1.0], 101)


def test_the_window_forgets_old_replies_but_the_totals_do_not() -> None:
    live = LiveStats(window_s=5)
    for second in range(10):
        live.record(Reply(at_s=float(second), latency_ms=10.0 * (second + 1), version=1, variant="stable"))
    live.record(Reply(at_s=9.5, latency_ms=2000.0, version=None, variant="error", error_code=504))
    snap = live.snapshot(now_s=10.0, started_s=0.0)
    assert snap.requests_per_s == pytest.approx(6 / 5)  # seconds 5..9 and the error
    assert snap.p50_ms == pytest.approx(80.0)  # 60, 70, 80, 90, 100: errors carry no latency
    assert snap.errors == 1 and snap.total_requests == 11
    assert live.errors == {504: 1} and live.versions == {1: 10}
    assert len(live.all_latencies_ms) == 10


def test_inverted_model_scores_one_minus_the_original() -> None:
    weights = np.array([0.5, -1.0, 2.0])
    original = logistic_model(weights, 0.3)
    rows = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
    before = ort.InferenceSession(original).run(None, {"x": rows})[0]
    after = ort.InferenceSession(inverted(original)).run(None, {"x": rows})[0]
    assert after.shape == before.shape == (64,)
    np.testing.assert_allclose(after, 1.0 - before, atol=1e-6)


def test_the_story_is_complete_only_with_all_three_outcomes() -> None:
    told = Story()
    assert not told.complete
    told.alert_raised = told.v2_promoted = True
    assert not told.complete
    told.v3_rolled_back = True
    assert told.complete


def test_the_summary_lists_every_stage_in_order() -> None:
    told = Story()
    told.add("drift alert", "raised", "5.0 s after injection")
    told.add("canary v3", "rolled back", "failing: psi")
    plain = cli.render_summary(told, plain=True).splitlines()
    assert plain[0].split() == ["stage", "outcome", "measured"]
    assert plain[2].startswith("drift alert") and plain[3].startswith("canary v3")
    boxed = cli.render_summary(told, plain=False)
    assert "drift alert" in boxed and "rolled back" in boxed
