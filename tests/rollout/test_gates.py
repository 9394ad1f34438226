"""Gates against hand-computed thresholds, and properties: missing data never passes, never reads as zero."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.rollout.gates import GATE_NAMES, GateConfig, Outcome, evaluate, verdict
from services.rollout.summary import Summary, VersionFigures
from shared.errors import BadRequest

ALL_GATES = GateConfig(enabled=GATE_NAMES)


def figures(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "predictions": 1000, "errors": 0, "error_rate": 0.0, "degraded_rate": 0.0, "latency_p50_ms": 2.0,
        "latency_p99_ms": 10.0, "score_mean": 0.3, "labelled": 0, "auc": None,
    }  # fmt: skip
    body.update(overrides)
    return body


def summary(stable: dict[str, Any], candidate: dict[str, Any], **comparison: Any) -> Summary:
    comp = {"matched": 500, "agreement": 0.97, "score_psi": 0.01, "min_samples": 100} | comparison
    return Summary.from_dict({"model": "m", "window_s": 30, "versions": {"1": stable, "2": candidate},
                              "comparison": comp})  # fmt: skip


def outcomes(s: Summary, config: GateConfig = ALL_GATES, baseline: VersionFigures | None = None) -> dict[str, Outcome]:
    return {r.gate: r.outcome for r in evaluate(s, stable=1, candidate=2, config=config, baseline=baseline)}


def test_healthy_candidate_passes_every_gate_but_performance_without_labels() -> None:
    result = outcomes(summary(figures(), figures()))
    assert result == {"latency": Outcome.PASS, "errors": Outcome.PASS, "degraded": Outcome.PASS,
                      "psi": Outcome.PASS, "agreement": Outcome.PASS, "performance": Outcome.SKIP}  # fmt: skip


def test_latency_threshold_is_ratio_plus_slack() -> None:
    # stable p99 10 ms, ratio 1.5, slack 5 -> limit 20 ms
    assert outcomes(summary(figures(), figures(latency_p99_ms=20.0)))["latency"] is Outcome.PASS
    results = evaluate(summary(figures(), figures(latency_p99_ms=20.5)), stable=1, candidate=2, config=ALL_GATES)
    latency = next(r for r in results if r.gate == "latency")
    assert latency.outcome is Outcome.FAIL
    assert latency.value == 20.5
    assert latency.threshold == 20.0


@pytest.mark.parametrize(
    ("candidate", "gate"),
    [
        (figures(error_rate=0.02), "errors"),
        (figures(degraded_rate=0.2), "degraded"),
    ],
)
def test_rate_gates_fail_beyond_their_increase(candidate: dict[str, Any], gate: str) -> None:
    assert outcomes(summary(figures(), candidate))[gate] is Outcome.FAIL


def test_shifted_scores_fail_psi_and_agreement() -> None:
    result = outcomes(summary(figures(), figures(), score_psi=0.8, agreement=0.5))
    assert result["psi"] is Outcome.FAIL
    assert result["agreement"] is Outcome.FAIL


def test_performance_gate_once_labels_exist() -> None:
    stable = figures(labelled=500, auc=0.80)
    assert outcomes(summary(stable, figures(labelled=500, auc=0.78)))["performance"] is Outcome.PASS
    assert outcomes(summary(stable, figures(labelled=500, auc=0.70)))["performance"] is Outcome.FAIL
    assert outcomes(summary(stable, figures(labelled=10, auc=0.10)))["performance"] is Outcome.SKIP


def test_too_little_traffic_holds() -> None:
    result = outcomes(summary(figures(), figures(predictions=50, latency_p99_ms=900.0)))
    assert result["latency"] is Outcome.HOLD
    assert verdict(evaluate(summary(figures(), figures(predictions=50)), stable=1, candidate=2,
                            config=ALL_GATES)) is Outcome.HOLD  # fmt: skip


def test_baseline_stands_in_for_a_stable_without_traffic() -> None:
    s = summary(figures(predictions=0, latency_p99_ms=None), figures(latency_p99_ms=40.0))
    assert outcomes(s)["latency"] is Outcome.HOLD
    baseline = VersionFigures.from_dict(figures())
    assert outcomes(s, baseline=baseline)["latency"] is Outcome.FAIL


def test_psi_is_skipped_when_stable_has_no_traffic_of_its_own() -> None:
    """At a canary's 100 % step stable answers nothing: PSI cannot be computed, and must not hold forever."""
    s = summary(figures(predictions=0, latency_p99_ms=None), figures(), score_psi=None)
    result = outcomes(s, baseline=VersionFigures.from_dict(figures()))
    assert result["psi"] is Outcome.SKIP
    assert result["latency"] is Outcome.PASS  # the baseline still judges the rest
    assert outcomes(s)["psi"] is Outcome.HOLD  # without a baseline, too little traffic holds everything


OPTIONAL_FIGURES = ("error_rate", "degraded_rate", "latency_p99_ms")


@given(
    missing=st.sets(st.sampled_from(OPTIONAL_FIGURES), min_size=1),
    side=st.sampled_from(["stable", "candidate"]),
    value=st.floats(min_value=0, max_value=1e4, allow_nan=False),
)
def test_a_missing_figure_never_passes_its_gate(missing: set[str], side: str, value: float) -> None:
    """A ``None`` figure holds its gate whatever the other side's figure is (so never read as 0)."""
    gate_of = {"error_rate": "errors", "degraded_rate": "degraded", "latency_p99_ms": "latency"}
    holes = dict.fromkeys(missing)
    present = {k: value for k in OPTIONAL_FIGURES if k not in missing}
    stable, candidate = (figures(**holes), figures(**present)) if side == "stable" else (
        figures(**present), figures(**holes))  # fmt: skip
    result = outcomes(summary(stable, candidate))
    for name in missing:
        assert result[gate_of[name]] is Outcome.HOLD


@given(
    stable_p99=st.floats(min_value=0, max_value=1e4),
    candidate_p99=st.floats(min_value=0, max_value=1e4),
    ratio=st.floats(min_value=0, max_value=10),
    slack=st.floats(min_value=0, max_value=100),
)
def test_latency_gate_matches_its_definition(
    stable_p99: float, candidate_p99: float, ratio: float, slack: float
) -> None:
    config = GateConfig(max_p99_ratio=ratio, p99_slack_ms=slack, enabled=("latency",))
    s = summary(figures(latency_p99_ms=stable_p99), figures(latency_p99_ms=candidate_p99))
    expected = Outcome.FAIL if candidate_p99 > stable_p99 * ratio + slack else Outcome.PASS
    assert outcomes(s, config)["latency"] is expected


def test_nan_figures_are_missing_not_zero() -> None:
    s = Summary.from_dict({"model": "m", "window_s": 1, "versions": {"2": figures(latency_p99_ms=float("nan"))}})
    assert s.figures(2).latency_p99_ms is None


@pytest.mark.parametrize(
    ("body", "field"),
    [({"max_psi": "x"}, "max_psi"), ({"fail_checks": 0}, "fail_checks"), ({"bogus": 1}, "bogus"),
     ({"enabled": ["latency", "vibes"]}, "enabled"), ({"min_agreement": 2}, "min_agreement")],
)  # fmt: skip
def test_bad_gate_settings_name_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(BadRequest, match=field):
        GateConfig.from_dict(body)


def test_malformed_summary_is_a_bad_request() -> None:
    with pytest.raises(BadRequest, match="predictions"):
        Summary.from_dict({"versions": {"1": {"predictions": "many"}}})
