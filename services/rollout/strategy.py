"""Rollout strategies as a pure state machine: a check's verdict in, the next state (and its event) out.

A rollout runs through ``steps``: canary weights (5, 25, 50, 100 by default), one
shadow step (stable answers, a share is mirrored) or one blue-green step (the
candidate answers everything). All gates passing for ``dwell_s`` advances a step;
after the last step a canary or blue-green candidate becomes stable, and a shadow
run ends with a report, traffic back to stable alone. A gate failing for
``fail_checks`` consecutive checks rolls back. A held check (too little data)
neither passes nor fails: it restarts the dwell clock and leaves the failure count
as it was.

Nothing here does I/O; the controller persists what :func:`decide` returns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from shared.errors import BadRequest, ServiceError
from shared.routing import Mode

from .gates import GateConfig, GateResult, Outcome, verdict


class Conflict(ServiceError):
    """The request conflicts with the rollout's state (HTTP 409)."""

    def __init__(self, message: str) -> None:
        super().__init__(409, message)


class Strategy(StrEnum):
    SHADOW = "shadow"
    CANARY = "canary"
    BLUEGREEN = "bluegreen"


class State(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"


ACTIVE_STATES = (State.RUNNING, State.PAUSED)
DEFAULT_CANARY_STEPS = (5.0, 25.0, 50.0, 100.0)
DEFAULT_GATES: dict[Strategy, tuple[str, ...]] = {
    # A shadow run scores the same requests twice, so agreement is measurable.
    Strategy.SHADOW: ("latency", "errors", "degraded", "psi", "agreement", "performance"),
    Strategy.CANARY: ("latency", "errors", "degraded", "psi", "performance"),
    # Blue-green leaves stable no traffic: no same-window PSI; stable's baseline stands in elsewhere.
    Strategy.BLUEGREEN: ("latency", "errors", "degraded", "performance"),
}


@dataclass(frozen=True, slots=True)
class RolloutSpec:
    strategy: Strategy
    steps: tuple[float, ...]
    dwell_s: float
    shadow_share: float = 0.0
    window_s: float = 60.0
    gates: GateConfig = field(default_factory=GateConfig)

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> RolloutSpec:
        """Validate a request body's strategy part; a 400 naming the field otherwise."""
        raw = body.get("strategy")
        try:
            strategy = Strategy(str(raw))
        except ValueError as error:
            raise BadRequest(f"strategy must be one of {[s.value for s in Strategy]}, got {raw!r}") from error
        dwell = _number(body, "dwell_s", 300.0, low=0.0, high=7 * 86_400.0)
        window = _number(body, "window_s", 60.0, low=1.0, high=86_400.0)
        shadow_share = 0.0
        if strategy is Strategy.CANARY:
            raw_steps = body.get("steps", list(DEFAULT_CANARY_STEPS))
            if not isinstance(raw_steps, list) or not raw_steps or len(raw_steps) > 20:
                raise BadRequest("steps must be a list of 1 to 20 weights in percent")
            steps: list[float] = []
            for weight in raw_steps:
                if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 < weight <= 100:
                    raise BadRequest(f"steps must hold weights within (0, 100], got {weight!r}")
                if steps and weight <= steps[-1]:
                    raise BadRequest("steps must increase")
                steps.append(float(weight))
            if steps[-1] != 100.0:
                raise BadRequest("steps must end at 100")
        elif strategy is Strategy.SHADOW:
            shadow_share = _number(body, "shadow_share", 1.0, low=0.0, high=1.0)
            if shadow_share <= 0.0:
                raise BadRequest("shadow_share must be within (0, 1]")
            # A shadow run lasts ``duration_s``: one step whose dwell is the duration.
            dwell = _number(body, "duration_s", dwell, low=0.0, high=7 * 86_400.0)
            steps = [0.0]
        else:
            steps = [100.0]
        raw_gates = body.get("gates", {})
        gates = GateConfig.from_dict(
            raw_gates if raw_gates is not None else {}, default_enabled=DEFAULT_GATES[strategy]
        )
        return cls(strategy, tuple(steps), dwell, shadow_share, window, gates)

    def to_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy.value,
            "steps": list(self.steps),
            "dwell_s": self.dwell_s,
            "shadow_share": self.shadow_share,
            "window_s": self.window_s,
            "gates": self.gates.to_dict(),
        }

    @classmethod
    def from_stored(cls, body: Mapping[str, Any]) -> RolloutSpec:
        gates = dict(body["gates"])
        return cls(
            strategy=Strategy(body["strategy"]),
            steps=tuple(float(s) for s in body["steps"]),
            dwell_s=float(body["dwell_s"]),
            shadow_share=float(body["shadow_share"]),
            window_s=float(body["window_s"]),
            gates=GateConfig.from_dict(gates),
        )


def _number(body: Mapping[str, Any], key: str, default: float, *, low: float, high: float) -> float:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise BadRequest(f"{key} must be a number within [{low:g}, {high:g}], got {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True)
class Progress:
    """The mutable part of a rollout: where it is and the counters of its current step."""

    state: State
    step: int
    step_started_ms: int
    pass_since_ms: int | None = None
    failures: int = 0
    first_fail_ms: int | None = None

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES


@dataclass(frozen=True, slots=True)
class Event:
    """A transition worth recording in the timeline (and, when ``policy`` is set, publishing)."""

    kind: str
    reason: str
    detail: dict[str, Any] = field(default_factory=dict)
    policy: bool = False  # the routing policy changes with this event


@dataclass(frozen=True, slots=True)
class Decision:
    progress: Progress
    event: Event | None


def decide(spec: RolloutSpec, progress: Progress, results: Sequence[GateResult], now_ms: int) -> Decision:
    """The next progress after one check whose gate results are ``results``.

    A paused rollout does not advance, but a failing gate still rolls it back:
    pausing hands promotion to the operator, not safety.
    """
    if not progress.active:
        return Decision(progress, None)
    outcome = verdict(results)
    if outcome is Outcome.FAIL:
        failures = progress.failures + 1
        first_fail = progress.first_fail_ms if progress.first_fail_ms is not None else now_ms
        failing = [r.to_dict() for r in results if r.outcome is Outcome.FAIL]
        if failures >= spec.gates.fail_checks:
            gates = ", ".join(r["gate"] for r in failing)
            return Decision(
                replace(
                    progress, state=State.ROLLED_BACK, failures=failures, first_fail_ms=first_fail, pass_since_ms=None
                ),
                Event(
                    "rolled_back",
                    f"gate {gates} failed {failures} consecutive checks",
                    {"failing": failing, "first_fail_ms": first_fail, "check_ms": now_ms},
                    policy=True,
                ),
            )
        return Decision(
            replace(progress, failures=failures, first_fail_ms=first_fail, pass_since_ms=None),
            Event("gate_failed", f"{len(failing)} gate(s) failing, check {failures} of {spec.gates.fail_checks}",
                  {"failing": failing, "check_ms": now_ms}),
        )  # fmt: skip
    if outcome is Outcome.HOLD:
        return Decision(replace(progress, pass_since_ms=None), None)
    # A pass clears the failure streak.
    passing = replace(progress, failures=0, first_fail_ms=None)
    since = passing.pass_since_ms if passing.pass_since_ms is not None else now_ms
    passing = replace(passing, pass_since_ms=since)
    if progress.state is State.PAUSED or now_ms - since < spec.dwell_s * 1000:
        return Decision(passing, None)
    return advance(spec, passing, now_ms, reason=f"all gates passed for {spec.dwell_s:g} s")


def advance(spec: RolloutSpec, progress: Progress, now_ms: int, *, reason: str) -> Decision:
    """Move to the next step, or finish after the last one."""
    if progress.step + 1 < len(spec.steps):
        step = progress.step + 1
        return Decision(
            Progress(State.RUNNING if progress.state is State.RUNNING else progress.state, step, now_ms),
            Event("step_started", reason, {"step": step, "weight_pct": spec.steps[step]}, policy=True),
        )
    return finish(spec, progress, now_ms, reason=reason)


def finish(spec: RolloutSpec, progress: Progress, now_ms: int, *, reason: str) -> Decision:
    done = Progress(State.SUCCEEDED, progress.step, progress.step_started_ms)
    kind = "shadow_completed" if spec.strategy is Strategy.SHADOW else "promoted"
    return Decision(done, Event(kind, reason, {"step": progress.step}, policy=True))


def policy_shape(spec: RolloutSpec, progress: Progress, *, stable: int, candidate: int) -> dict[str, Any]:
    """The routing policy fields this state calls for (``model``/``revision`` are the caller's).

    >>> spec = RolloutSpec(Strategy.CANARY, (5.0, 100.0), dwell_s=1)
    >>> policy_shape(spec, Progress(State.RUNNING, 0, 0), stable=1, candidate=2)["canary_weight_pct"]
    5.0
    >>> policy_shape(spec, Progress(State.SUCCEEDED, 1, 0), stable=1, candidate=2)["stable"]
    2
    """
    if progress.state is State.SUCCEEDED:
        winner = stable if spec.strategy is Strategy.SHADOW else candidate
        return {"stable": winner, "mode": Mode.STABLE, "candidate": None, "canary_weight_pct": 0.0, "shadow_share": 0.0}
    if progress.state in (State.ROLLED_BACK, State.ABORTED):
        return {"stable": stable, "mode": Mode.STABLE, "candidate": None, "canary_weight_pct": 0.0, "shadow_share": 0.0}
    if spec.strategy is Strategy.SHADOW:
        return {
            "stable": stable,
            "mode": Mode.SHADOW,
            "candidate": candidate,
            "canary_weight_pct": 0.0,
            "shadow_share": spec.shadow_share,
        }
    if spec.strategy is Strategy.BLUEGREEN:
        return {"stable": stable, "mode": Mode.BLUEGREEN, "candidate": candidate, "canary_weight_pct": 100.0,
                "shadow_share": 0.0}  # fmt: skip
    return {
        "stable": stable,
        "mode": Mode.CANARY,
        "candidate": candidate,
        "canary_weight_pct": spec.steps[progress.step],
        "shadow_share": 0.0,
    }


ACTIONS = ("promote", "pause", "resume", "abort")


def manual(spec: RolloutSpec, progress: Progress, action: str, now_ms: int, *, reason: str) -> Decision:
    """An operator's action; :class:`Conflict` when the rollout's state does not allow it.

    >>> spec = RolloutSpec(Strategy.CANARY, (5.0, 100.0), dwell_s=1)
    >>> manual(spec, Progress(State.RUNNING, 0, 0), "pause", 5, reason="x").progress.state
    <State.PAUSED: 'paused'>
    """
    if not progress.active:
        raise Conflict(f"the rollout is {progress.state.value}; {action} needs a running or paused rollout")
    if action == "pause":
        if progress.state is State.PAUSED:
            raise Conflict("the rollout is already paused")
        return Decision(replace(progress, state=State.PAUSED, pass_since_ms=None), Event("paused", reason))
    if action == "resume":
        if progress.state is State.RUNNING:
            raise Conflict("the rollout is not paused")
        return Decision(replace(progress, state=State.RUNNING, pass_since_ms=None), Event("resumed", reason))
    if action == "abort":
        return Decision(replace(progress, state=State.ABORTED), Event("aborted", reason, policy=True))
    if action == "promote":
        if spec.strategy is Strategy.SHADOW:
            raise Conflict("a shadow run ends with a report; start a canary or blue-green rollout to promote")
        return finish(spec, progress, now_ms, reason=reason)
    raise BadRequest(f"action must be one of {list(ACTIONS)}, got {action!r}")
