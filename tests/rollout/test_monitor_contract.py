"""Contract with the monitor: its real summary builder's output, read by rollout's gates.

The monitor's ``summarize`` (services/monitor/summary.py) is fed prediction
records for a stable and a candidate version; rollout parses the result and its
gates must catch a score shift (PSI) and a slow candidate (latency), pass a good
one, and hold on too little data.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from services.rollout.gates import GATE_NAMES, GateConfig, Outcome, evaluate, verdict
from services.rollout.summary import Summary

summary_module = pytest.importorskip("services.monitor.summary")
windows = pytest.importorskip("services.monitor.windows")

MIN_SAMPLES = 30


def monitor_summary(*, shift: float = 0.0, slow_us: int = 0, n: int = 400) -> dict[str, Any]:
    rng = np.random.default_rng(5)
    log = windows.PredictionLog(capacity=4 * n)
    for i in range(n):
        base = float(rng.beta(2, 5))
        latency = int(rng.integers(800, 1500))
        # shadow-style: both versions score the same request id
        log.append(f"r{i}", 1000 + i, 1, base, latency_us=latency, error=False, degraded=False)
        log.append(f"r{i}", 1000 + i, 2, min(1.0, base + shift), latency_us=latency + slow_us, error=False,
                   degraded=False)  # fmt: skip
    request = summary_module.SummaryRequest(model="m", stable=1, candidate=2, window_s=60.0)
    return dict(summary_module.summarize(request, log.since(0), lambda _: None, MIN_SAMPLES))


CONFIG = GateConfig(min_predictions=MIN_SAMPLES, min_matched=MIN_SAMPLES, enabled=GATE_NAMES)


def judge(body: dict[str, Any]) -> dict[str, Outcome]:
    results = evaluate(Summary.from_dict(body), stable=1, candidate=2, config=CONFIG)
    return {r.gate: r.outcome for r in results} | {"verdict": verdict(results)}


def test_good_candidate_passes() -> None:
    assert judge(monitor_summary())["verdict"] is Outcome.PASS


def test_shifted_scores_fail_psi_and_agreement() -> None:
    outcome = judge(monitor_summary(shift=0.45))
    assert outcome["psi"] is Outcome.FAIL
    assert outcome["latency"] is Outcome.PASS


def test_slow_candidate_fails_latency() -> None:
    outcome = judge(monitor_summary(slow_us=50_000))
    assert outcome["latency"] is Outcome.FAIL
    assert outcome["psi"] is Outcome.PASS


def test_too_little_data_holds() -> None:
    assert judge(monitor_summary(n=10))["verdict"] is Outcome.HOLD
