"""The platform end to end, every service a subprocess, time compressed (the simulator's clock runs x40).

In order, on one mesh: events in -> offline log and online features (checked
against a brute-force recomputation) -> a version trained on the export serves
predictions -> chargeback labels join them in the monitor -> drift raises an alert
that resolves once the drift stops -> a good canary is promoted -> a bad one (its
scores inverted) is rolled back. Each test builds on the previous one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from nats.aio.msg import Msg

from rtml.demo.broken import inverted
from rtml.demo.stats import LiveStats
from rtml.demo.story import (
    BROKEN_GATES,
    CANARY_GATES,
    FEATURES,
    FRAUD_RATES,
    MODEL,
    _about_amounts,
    export_sources,
    wait_stored,
)
from rtml.demo.traffic import Traffic
from rtml.simulate.publisher import publish
from rtml.simulate.simulator import SimConfig, Simulator
from rtml.train.pipeline import TrainConfig, TrainResult, train
from services.features.catalog import load_views
from shared.bus import request
from shared.codec import decode
from shared.errors import ServiceError
from tests.features.helpers import wait_drained

from .conftest import Mesh, online_mismatches, stored_events

HISTORY_S = 5400.0
WARMUP_S = 1800.0
SPEEDUP = 40.0


@dataclass
class Story:
    """What one test leaves to the next."""

    sim: Simulator
    start_ms: int
    history_end_ms: int
    work: Path
    alerts: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    stats: LiveStats = field(default_factory=LiveStats)
    traffic: Traffic | None = None
    results: dict[int, TrainResult] = field(default_factory=dict)
    start_traffic: Callable[[], None] = lambda: None


@pytest.fixture(scope="module")
async def story(mesh: Mesh, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Story]:
    now_ms = int(time.time() * 1000)
    start_ms = now_ms - int((HISTORY_S + 300 * SPEEDUP) * 1000)
    sim = Simulator(
        SimConfig(
            seed=11, start_ms=start_ms, rate_per_s=1.0, daily_amplitude=0.0, n_cards=200, n_merchants=80,
            fraud_rates=dict(FRAUD_RATES), chargeback_delay_s=300.0, chargeback_delay_sigma=0.2,
            legit_label_delay_s=300.0, id_prefix="e2e",
        )
    )  # fmt: skip
    state = Story(sim, start_ms, start_ms + int(HISTORY_S * 1000), tmp_path_factory.mktemp("e2e"))

    async def on_alert(msg: Msg) -> None:
        state.alerts.append((time.monotonic(), decode(msg.data)))

    subscription = await mesh.nc.subscribe(mesh.names.alerts(">"), cb=on_alert)
    stop = asyncio.Event()
    traffic_task: asyncio.Task[None] | None = None

    def start_traffic() -> None:
        nonlocal traffic_task
        state.traffic = Traffic(
            mesh.nc, mesh.names, iter(sim), state.stats, model=MODEL, speedup=SPEEDUP, redis=mesh.redis
        )
        traffic_task = asyncio.create_task(state.traffic.run(stop))

    state.start_traffic = start_traffic
    try:
        yield state
    finally:
        stop.set()
        if traffic_task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(traffic_task, timeout=30)
        await subscription.unsubscribe()


async def eventually(condition: Callable[[], Any], timeout_s: float, what: str) -> Any:
    """Poll ``condition`` (sync or async) until it returns something truthy."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout_s:.0f}s")
        await asyncio.sleep(0.25)


async def _train(mesh: Mesh, story: Story, end_ms: int, seed: int) -> TrainResult:
    sources = await export_sources(
        mesh.pool, load_views(None), start_ms=story.start_ms + int(WARMUP_S * 1000), end_ms=end_ms,
        folder=story.work, tag=f"s{seed}",
    )  # fmt: skip
    return await asyncio.to_thread(
        train, TrainConfig(export=sources, model=MODEL, kind="mlp", seed=seed, features=FEATURES)
    )


async def test_events_reach_the_offline_log_once_and_the_online_store_exactly(mesh: Mesh, story: Story) -> None:
    published = await publish(mesh.nc.jetstream(), mesh.names, story.sim.until(story.history_end_ms), speedup=0.0)
    await wait_stored(mesh.pool, published.transactions, published.labels, timeout_s=90)
    await wait_drained(mesh.nc.jetstream(), mesh.names, "norm")
    events = await stored_events(mesh.pool)
    assert len(events) == published.transactions
    assert len({e["id"] for e in events}) == len(events)
    assert await mesh.pool.fetchval("SELECT count(*) FROM features_labels") == published.labels
    assert await online_mismatches(mesh.redis, mesh.names, events, ["card_velocity", "card_amount"]) == []


async def test_a_version_trained_on_the_export_serves_predictions(mesh: Mesh, story: Story) -> None:
    result = await _train(mesh, story, story.history_end_ms, seed=1)
    version = await mesh.admin.register_result(MODEL, result)
    story.results[version] = result
    await mesh.admin.set_stable(MODEL, version)
    card = (await stored_events(mesh.pool))[-1]["entity"]

    async def served() -> dict[str, Any] | None:
        with contextlib.suppress(ServiceError):
            return await request(mesh.nc, mesh.names.predict(MODEL), {"entity": card, "id": "probe-1"})
        return None

    reply = await eventually(served, 30, "no answer from the model")
    assert (reply["model"], reply["version"], reply["variant"]) == (MODEL, version, "stable")
    assert 0.0 <= reply["score"] <= 1.0
    assert reply["degraded"] is False  # the card's online features are all there
    assert result.holdout["auc"] > 0.5


async def test_labels_join_the_predictions_they_answer(mesh: Mesh, story: Story) -> None:
    story.start_traffic()

    async def labelled() -> int:
        body = await mesh.admin.performance(MODEL)
        if body is None or "1" not in body["versions"]:
            return 0
        return int(body["versions"]["1"]["live"]["all"]["labelled"] or 0)

    joined = await eventually(labelled, 60, "no label joined to a live prediction")
    assert story.traffic is not None
    assert 0 < joined <= len(story.traffic.ledger.predicted)
    assert story.stats.versions[1] > 0 and not story.stats.errors


@pytest.mark.timeout(240)
async def test_drift_raises_an_alert_that_resolves_when_it_stops(mesh: Mesh, story: Story) -> None:
    injected = time.monotonic()
    story.sim.set_drift("amount_shift")

    def raised() -> dict[str, Any] | None:
        for at, body in story.alerts:
            if at >= injected and body.get("event") == "raised" and _about_amounts(body):
                return body
        return None

    alert = await eventually(raised, 90, "no drift alert on the amount features")
    assert alert["model"] == MODEL and alert["version"] == 1
    story.sim.set_drift("amount_shift", enabled=False)
    opened = {b["id"] for at, b in story.alerts if at >= injected and b.get("event") == "raised" and _about_amounts(b)}

    def resolved() -> dict[str, Any] | None:
        for _, body in story.alerts:
            if body.get("event") == "resolved" and body.get("id") in opened:
                return body
        return None

    done = await eventually(resolved, 120, "no amount drift alert resolved after the drift stopped")
    rows = {row["id"]: row for row in await mesh.admin.alerts(MODEL)}
    assert rows[done["id"]]["status"] == "resolved"


async def test_a_good_canary_is_promoted(mesh: Mesh, story: Story) -> None:
    assert story.traffic is not None and story.traffic.last_ts is not None
    result = await _train(mesh, story, story.traffic.last_ts + 1, seed=2)
    version = await mesh.admin.register_result(MODEL, result)
    story.results[version] = result
    body = {"candidate": version, "strategy": "canary", "steps": [50, 100], "dwell_s": 3, "window_s": 15,
            "gates": CANARY_GATES}  # fmt: skip
    created = await mesh.admin.start_rollout(MODEL, body)
    final = await mesh.admin.wait_rollout(MODEL, created["id"], timeout_s=90)
    assert final["state"] == "succeeded", final["report"]
    assert (await mesh.admin.routing(MODEL))["stable"] == version
    seen = story.stats.total_requests
    await eventually(
        lambda: (
            any(r.version == version for r in list(story.stats.replies)[-10:])
            and story.stats.total_requests > seen + 10
        ),
        30,
        "the promoted version does not answer",
    )


async def test_a_bad_canary_is_rolled_back(mesh: Mesh, story: Story) -> None:
    stable = max(story.results)
    good = story.results[stable]
    broken = await mesh.admin.register(MODEL, inverted(good.artifact), good.metadata)
    started = time.monotonic()
    body = {"candidate": broken, "strategy": "canary", "steps": [25, 100], "dwell_s": 60, "window_s": 10,
            "gates": BROKEN_GATES}  # fmt: skip
    created = await mesh.admin.start_rollout(MODEL, body)
    final = await mesh.admin.wait_rollout(MODEL, created["id"], timeout_s=90)
    assert final["state"] == "rolled_back"
    failing = {f["gate"] for f in final["report"]["rollback"]["failing"]}
    assert "psi" in failing
    routing = await mesh.admin.routing(MODEL)
    assert routing["stable"] == stable and routing["mode"] == "stable"
    await eventually(
        lambda: any(b.get("kind") == "rollback" and b.get("candidate") == broken
                    for at, b in story.alerts if at >= started),
        10, "no rollback alert published",
    )  # fmt: skip


def test_the_mesh_log_names_every_service(mesh: Mesh) -> None:
    text = Path(mesh.log_file).read_text(errors="replace")
    for service in ("ingest", "features", "inference", "monitor", "rollout"):
        assert f"[{service}]" in text
