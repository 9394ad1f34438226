"""Rollout's Prometheus metrics, ``rtml_rollout_...``, on the service's own registry."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from shared.metrics import ServiceMetrics

from .strategy import State

STATE_CODES: dict[State, int] = {
    State.RUNNING: 1,
    State.PAUSED: 2,
    State.SUCCEEDED: 3,
    State.ROLLED_BACK: 4,
    State.ABORTED: 5,
}


class RolloutMetrics:
    def __init__(self, base: ServiceMetrics) -> None:
        registry = base.registry
        self.state = Gauge(
            base.name("state"),
            "Latest rollout state per model: 1 running, 2 paused, 3 succeeded, 4 rolled back, 5 aborted",
            ["model"],
            registry=registry,
        )
        self.step = Gauge(base.name("step"), "Current step index of the model's rollout", ["model"], registry=registry)
        self.weight = Gauge(
            base.name("candidate_weight_pct"), "Candidate traffic weight (percent) now", ["model"], registry=registry
        )
        self.checks = Counter(
            base.name("checks_total"), "Gate checks, by verdict", ["model", "verdict"], registry=registry
        )
        self.transitions = Counter(
            base.name("transitions_total"), "Rollout transitions, by kind", ["model", "kind"], registry=registry
        )
        self.rollbacks = Counter(
            base.name("rollbacks_total"), "Automatic rollbacks, by failing gate", ["model", "gate"], registry=registry
        )
        self.breach_to_routing = Histogram(
            base.name("breach_to_routing_seconds"),
            "Time from the first failing check to the routing change that rolled back",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 30, 60),
            registry=registry,
        )
        self.leader = Gauge(base.name("leader"), "1 while this replica leads the controllers", registry=registry)
        self.monitor_errors = Counter(
            base.name("monitor_errors_total"), "Summary reads that failed (the check holds)", registry=registry
        )

    def observe_state(self, model: str, state: State, step: int, weight_pct: float) -> None:
        self.state.labels(model).set(STATE_CODES[state])
        self.step.labels(model).set(step)
        self.weight.labels(model).set(weight_pct)
