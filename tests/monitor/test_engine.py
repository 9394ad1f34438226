"""The per-version engine without I/O, and the alert manager's hysteresis on the real Postgres."""

from __future__ import annotations

from typing import Any

import asyncpg
import numpy as np

from services.monitor.alerts import AlertManager, Breach, list_alerts
from services.monitor.engine import AUC_VS_STABLE, DRIFT, PERFORMANCE, ModelMonitor, Signal, VersionMonitor
from services.monitor.profiles import build_reference_profile
from services.monitor.settings import ModelConfig
from shared.messages import PredictionRecord

CONFIG = ModelConfig(window_size=1000, eval_every=500, min_samples=300, perf_min_samples=100, clear_windows=2)


def _profile(version: int = 1) -> Any:
    rng = np.random.default_rng(0)
    n = 4000
    labels = (rng.random(n) < 0.3).astype(float)
    scores = np.clip(0.25 + 0.5 * labels + rng.normal(0, 0.12, n), 0, 1)
    return build_reference_profile(
        model="m", version=version,
        features={"x": rng.normal(size=n), "c": rng.choice([0.0, 1.0, 2.0], n, p=[0.6, 0.3, 0.1])},
        categorical=["c"], scores=scores, labels=labels,
    )  # fmt: skip


def _records(
    rng: np.random.Generator, n: int, *, c_probs: tuple[float, ...] = (0.6, 0.3, 0.1)
) -> list[PredictionRecord]:
    labels = rng.random(n) < 0.3
    scores = np.clip(0.25 + 0.5 * labels + rng.normal(0, 0.12, n), 0, 1)
    return [
        PredictionRecord(id=f"r{i}", model="m", version=1, variant="stable", entity="e", ts=i, score=float(scores[i]),
                         degraded=False, latency_us=1000,
                         features={"x": float(rng.normal()), "c": float(rng.choice(3, p=list(c_probs)))})
        for i in range(n)
    ]  # fmt: skip


def _kinds(signals: list[Signal]) -> set[tuple[str, str, bool]]:
    return {(s.kind, s.feature, s.breach is not None) for s in signals}


def test_no_windowed_result_below_the_minimum_sample() -> None:
    monitor = VersionMonitor("m", 1, _profile(), CONFIG)
    signals = monitor.observe_batch(_records(np.random.default_rng(1), 200))
    assert signals == [] and monitor.last.features == []


def test_a_categorical_shift_drifts_that_feature_only() -> None:
    monitor = VersionMonitor("m", 1, _profile(), CONFIG)
    rng = np.random.default_rng(2)
    calm = monitor.observe_batch(_records(rng, 1000))
    assert all(s.breach is None for s in calm) and {s.feature for s in calm} == {"x", "c", "__score__"}
    shifted = monitor.observe_batch(_records(rng, 1000, c_probs=(0.3, 0.3, 0.4)))
    breaches = {s.feature for s in shifted if s.breach is not None}
    assert breaches == {"c"}
    result = next(f for f in monitor.last.features if f.feature == "c")
    assert result.status == "drift" and result.statistics["chi2_pvalue"] is not None
    assert result.statistics["chi2_pvalue"] < 1e-6


def test_errors_are_counted_and_skip_the_windows() -> None:
    monitor = VersionMonitor("m", 1, _profile(), CONFIG)
    record = PredictionRecord(id="e", model="m", version=1, variant="stable", entity="e", ts=1, score=None,
                              degraded=False, latency_us=10, error_code=503)  # fmt: skip
    assert monitor.observe(record) == [] and (monitor.count, monitor.errors, len(monitor.window)) == (1, 1, 0)


def test_performance_regression_against_training_then_recovery() -> None:
    monitor = VersionMonitor("m", 1, _profile(), CONFIG)
    rng = np.random.default_rng(3)
    signals: list[Signal] = []
    for _ in range(300):  # scores unrelated to labels: AUC about 0.5, far below training
        signals += monitor.observe_label("stable", float(rng.random()), float(rng.random() < 0.3))
    assert (PERFORMANCE, "auc", True) in _kinds(signals)
    assert monitor.last_performance["stable"].auc is not None and monitor.last_performance["stable"].auc < 0.7
    recovered: list[Signal] = []
    for _ in range(5000):
        label = rng.random() < 0.3
        recovered += monitor.observe_label("stable", float(np.clip(0.25 + 0.5 * label + rng.normal(0, 0.12), 0, 1)),
                                           float(label))  # fmt: skip
    assert (PERFORMANCE, "auc", False) in _kinds(recovered[-10:])


def test_candidate_compared_with_stable_on_the_same_window() -> None:
    model = ModelMonitor("m", CONFIG, log_size=100)
    stable, candidate = VersionMonitor("m", 1, _profile(1), CONFIG), VersionMonitor("m", 2, _profile(2), CONFIG)
    model.versions = {1: stable, 2: candidate}
    model.variants = {1: "stable", 2: "candidate"}
    rng = np.random.default_rng(4)
    for _ in range(400):
        label = rng.random() < 0.3
        stable.observe_label("stable", float(np.clip(0.25 + 0.5 * label + rng.normal(0, 0.12), 0, 1)), float(label))
        candidate.observe_label("candidate", float(rng.random()), float(label))
    signals = model.compare_to_stable()
    assert [(s.version, s.feature, s.breach is not None) for s in signals] == [(2, AUC_VS_STABLE, True)]


async def test_hysteresis_dedup_and_resolution(pool: asyncpg.Pool) -> None:
    published: list[tuple[str, dict[str, Any], str]] = []

    async def publish(kind: str, body: dict[str, Any], msg_id: str) -> None:
        published.append((kind, body, msg_id))

    manager = AlertManager(pool, publish, clear_windows=lambda _: 3)
    await manager.setup()
    key = (DRIFT, "m", 1, "x")
    breach = Breach("psi", 0.4, 0.1, "last 1000 predictions")
    await manager.breach(key, breach)
    await manager.breach(key, breach)
    await manager.clean(key, "w")
    await manager.clean(key, "w")
    await manager.breach(key, Breach("psi", 0.5, 0.1, "last 1000 predictions"))  # the clean streak restarts
    await manager.clean(key, "w")
    await manager.clean(key, "w")
    assert manager.is_open(key)
    rows = await list_alerts(pool, open_only=True, model="m")
    assert len(rows) == 1 and rows[0]["observations"] == 3 and rows[0]["value"] == 0.5
    await manager.clean(key, "w")
    assert not manager.is_open(key)
    assert await list_alerts(pool, open_only=True, model="m") == []
    assert [(body["event"], msg_id.endswith(body["event"])) for _, body, msg_id in published] == [
        ("raised", True), ("resolved", True),
    ]  # fmt: skip

    # a second replica (or a restart) sees the open alert and never duplicates it
    await manager.breach(key, breach)
    other = AlertManager(pool, publish, clear_windows=lambda _: 3)
    await other.setup()
    assert other.is_open(key)
    fresh = AlertManager(pool, publish, clear_windows=lambda _: 3)
    fresh._open.clear()  # as if it had started before the alert was raised
    await fresh.breach(key, breach)
    assert len(await list_alerts(pool, open_only=True, model="m")) == 1
