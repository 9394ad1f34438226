"""The strategy state machine: advancing, holding, rolling back, manual actions, policy shapes."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.rollout.gates import GateConfig, GateResult, Outcome
from services.rollout.strategy import (
    Conflict,
    Progress,
    RolloutSpec,
    State,
    Strategy,
    decide,
    manual,
    policy_shape,
)
from shared.errors import BadRequest
from shared.routing import Mode, RoutingPolicy

CANARY = RolloutSpec(Strategy.CANARY, (5.0, 25.0, 50.0, 100.0), dwell_s=10, gates=GateConfig(fail_checks=2))


def check(outcome: Outcome) -> list[GateResult]:
    return [GateResult("latency", outcome, 1.0, 2.0)]


def test_good_canary_walks_every_step_then_promotes() -> None:
    progress = Progress(State.RUNNING, 0, 0)
    weights = [CANARY.steps[0]]
    now = 0
    kinds = []
    while progress.active:
        now += 1000
        decision = decide(CANARY, progress, check(Outcome.PASS), now)
        progress = decision.progress
        if decision.event is not None:
            kinds.append(decision.event.kind)
            weights.append(policy_shape(CANARY, progress, stable=1, candidate=2)["canary_weight_pct"])
    assert kinds == ["step_started", "step_started", "step_started", "promoted"]
    assert weights == [5.0, 25.0, 50.0, 100.0, 0.0]
    assert policy_shape(CANARY, progress, stable=1, candidate=2)["stable"] == 2


def test_dwell_counts_from_the_first_pass_and_a_hold_restarts_it() -> None:
    p = decide(CANARY, Progress(State.RUNNING, 0, 0), check(Outcome.PASS), 1000).progress
    assert p.pass_since_ms == 1000
    p = decide(CANARY, p, check(Outcome.HOLD), 9000).progress
    assert p.pass_since_ms is None
    p = decide(CANARY, p, check(Outcome.PASS), 10_000).progress
    decision = decide(CANARY, p, check(Outcome.PASS), 19_999)
    assert decision.event is None  # 9.999 s of passing is not the 10 s dwell
    assert decide(CANARY, decision.progress, check(Outcome.PASS), 20_000).progress.step == 1


def test_rollback_after_consecutive_failures_with_evidence() -> None:
    p = Progress(State.RUNNING, 2, 0)
    first = decide(CANARY, p, check(Outcome.FAIL), 1000)
    assert first.progress.state is State.RUNNING
    assert first.event is not None and first.event.kind == "gate_failed"
    second = decide(CANARY, first.progress, check(Outcome.FAIL), 2000)
    assert second.progress.state is State.ROLLED_BACK
    assert second.event is not None and second.event.policy
    assert second.event.detail["first_fail_ms"] == 1000
    assert second.event.detail["failing"][0]["gate"] == "latency"
    assert policy_shape(CANARY, second.progress, stable=1, candidate=2)["mode"] is Mode.STABLE


def test_a_pass_clears_the_failure_streak() -> None:
    p = decide(CANARY, Progress(State.RUNNING, 0, 0), check(Outcome.FAIL), 1000).progress
    p = decide(CANARY, p, check(Outcome.PASS), 2000).progress
    assert (p.failures, p.first_fail_ms) == (0, None)
    assert decide(CANARY, p, check(Outcome.FAIL), 3000).progress.state is State.RUNNING


@given(st.lists(st.sampled_from([Outcome.PASS, Outcome.FAIL, Outcome.HOLD]), max_size=60),
       st.integers(min_value=1, max_value=4))  # fmt: skip
def test_against_a_reference_walk(outcomes: list[Outcome], fail_checks: int) -> None:
    """Each check 1 s apart, dwell 3 s: compare with a direct reading of the rules."""
    spec = RolloutSpec(Strategy.CANARY, (10.0, 100.0), dwell_s=3, gates=GateConfig(fail_checks=fail_checks))
    progress = Progress(State.RUNNING, 0, 0)
    ref_state, ref_step, streak, passing = "running", 0, 0, 0
    for i, outcome in enumerate(outcomes, start=1):
        progress = decide(spec, progress, check(outcome), i * 1000).progress
        if ref_state != "running":
            continue
        if outcome is Outcome.FAIL:
            streak, passing = streak + 1, 0
            if streak >= fail_checks:
                ref_state = "rolled_back"
        elif outcome is Outcome.HOLD:
            passing = 0
        else:
            streak, passing = 0, passing + 1
            if passing >= 4:  # first pass at t, dwell 3 s satisfied at t+3 s: the 4th consecutive pass
                passing = 0
                if ref_step + 1 < len(spec.steps):
                    ref_step += 1
                else:
                    ref_state = "succeeded"
        assert (progress.state.value, progress.step) == (ref_state, ref_step)


def test_paused_rollout_does_not_advance_but_still_rolls_back() -> None:
    paused = manual(CANARY, Progress(State.RUNNING, 1, 0), "pause", 0, reason="look").progress
    p = paused
    for t in range(1, 30):
        p = decide(CANARY, p, check(Outcome.PASS), t * 1000).progress
    assert (p.state, p.step) == (State.PAUSED, 1)
    p = decide(CANARY, p, check(Outcome.FAIL), 40_000).progress
    p = decide(CANARY, p, check(Outcome.FAIL), 41_000).progress
    assert p.state is State.ROLLED_BACK


@pytest.mark.parametrize(
    ("state", "action"),
    [(State.RUNNING, "resume"), (State.PAUSED, "pause"), (State.SUCCEEDED, "abort"), (State.ABORTED, "promote")],
)
def test_manual_actions_refused_in_the_wrong_state(state: State, action: str) -> None:
    with pytest.raises(Conflict):
        manual(CANARY, Progress(state, 0, 0), action, 0, reason="x")


def test_manual_promote_and_abort() -> None:
    promoted = manual(CANARY, Progress(State.RUNNING, 0, 0), "promote", 5, reason="ok")
    assert promoted.progress.state is State.SUCCEEDED
    aborted = manual(CANARY, Progress(State.PAUSED, 2, 0), "abort", 5, reason="no")
    assert aborted.progress.state is State.ABORTED
    assert aborted.event is not None and aborted.event.policy


def test_shadow_and_bluegreen_policies_are_valid_routing_policies() -> None:
    shadow = RolloutSpec.from_dict({"strategy": "shadow", "shadow_share": 0.5, "duration_s": 60})
    assert shadow.dwell_s == 60 and "agreement" in shadow.gates.enabled
    shape = policy_shape(shadow, Progress(State.RUNNING, 0, 0), stable=1, candidate=2)
    assert RoutingPolicy(model="m", **shape).route("e").version == 1
    done = decide(shadow, Progress(State.RUNNING, 0, 0, pass_since_ms=0), check(Outcome.PASS), 60_000)
    assert done.event is not None and done.event.kind == "shadow_completed"
    assert policy_shape(shadow, done.progress, stable=1, candidate=2)["stable"] == 1
    bluegreen = RolloutSpec.from_dict({"strategy": "bluegreen", "dwell_s": 5})
    assert "psi" not in bluegreen.gates.enabled
    shape = policy_shape(bluegreen, Progress(State.RUNNING, 0, 0), stable=1, candidate=2)
    assert RoutingPolicy(model="m", **shape).route("anyone").version == 2


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"strategy": "yolo"}, "strategy"),
        ({"strategy": "canary", "steps": [5, 3, 100]}, "steps"),
        ({"strategy": "canary", "steps": [5, 50]}, "steps"),
        ({"strategy": "canary", "steps": [0, 100]}, "steps"),
        ({"strategy": "canary", "dwell_s": -1}, "dwell_s"),
        ({"strategy": "shadow", "shadow_share": 0}, "shadow_share"),
        ({"strategy": "canary", "gates": {"max_psi": "high"}}, "max_psi"),
        ({"strategy": "canary", "window_s": True}, "window_s"),
    ],
)
def test_bad_specs_name_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(BadRequest, match=field):
        RolloutSpec.from_dict(body)


def test_spec_round_trips_through_storage() -> None:
    spec = RolloutSpec.from_dict({"strategy": "canary", "steps": [1, 10, 100], "gates": {"max_psi": 0.3}})
    assert RolloutSpec.from_stored(spec.to_dict()) == spec
