"""The monitor end to end on the real NATS and Postgres: drift alerts raise once and resolve, summaries, labels."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import asyncpg
import nats
import numpy as np
import pytest

from services.monitor import stats
from services.monitor.profiles import build_reference_profile, ensure_profile_table, store_profile
from services.monitor.service import MonitorService
from services.monitor.settings import ModelConfig, MonitorSettings
from shared.bus import connect, request
from shared.codec import decode, encode
from shared.db import open_pool
from shared.errors import BadRequest
from shared.settings import CommonSettings
from shared.subjects import Names

MODEL = "fraud"
FEATURES = ("x0", "x1", "x2")
CONFIG = ModelConfig(window_size=1000, eval_every=250, min_samples=200, clear_windows=3, perf_min_samples=50)
WAIT_S = 60.0


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll until ``check`` holds; fail naming ``what`` after a generous bound (a hang guard, not a timing claim)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while not await check():
        if loop.time() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        await asyncio.sleep(0.1)


@pytest.fixture(scope="module")
async def pool(settings: CommonSettings) -> AsyncIterator[asyncpg.Pool]:
    async with open_pool(settings.database_url, schema=settings.namespace) as opened:
        await ensure_profile_table(opened)
        rng = np.random.default_rng(0)
        n = 5000
        profile = build_reference_profile(
            model=MODEL, version=1,
            features={**{name: rng.normal(size=n) for name in FEATURES}, "c": rng.choice([1.0, 2.0, 3.0], n)},
            categorical=["c"], scores=rng.uniform(size=n), labels=(rng.uniform(size=n) < 0.5).astype(float),
        )  # fmt: skip
        await store_profile(opened, profile)
        yield opened


@pytest.fixture(scope="module")
async def client(settings: CommonSettings) -> AsyncIterator[nats.aio.client.Client]:
    async with connect(settings.nats_url, name="monitor-test-client") as nc:
        yield nc


def _settings(common: CommonSettings) -> MonitorSettings:
    return MonitorSettings(common=common, defaults=CONFIG, summary_min_samples=20)


@pytest.fixture(scope="module")
async def monitor(settings: CommonSettings, pool: asyncpg.Pool) -> AsyncIterator[MonitorService]:
    service = MonitorService(_settings(settings))
    await service.start()
    yield service
    await service.stop()


class Stream:
    """Publishes prediction records like inference does; ``ts`` is now so time windows see them."""

    def __init__(self, client: Any, names: Names, seed: int) -> None:
        self.client = client
        self.names = names
        self.rng = np.random.default_rng(seed)
        self.sent = 0

    async def send(self, n: int, *, shift: float = 0.0, version: int = 1, variant: str = "stable",
                   prefix: str = "p", error_every: int = 0) -> list[dict[str, Any]]:  # fmt: skip
        records = []
        now = int(time.time() * 1000)
        for i in range(n):
            x = self.rng.normal(size=len(FEATURES))
            x[0] += shift
            error = error_every > 0 and i % error_every == 0
            record = {
                "id": f"{prefix}{self.sent}", "model": MODEL, "version": version, "variant": variant,
                "entity": f"e{self.sent % 100}", "ts": now, "score": None if error else float(self.rng.uniform()),
                "degraded": i % 10 == 0, "latency_us": int(self.rng.integers(500, 5000)),
                "features": {**dict(zip(FEATURES, x.tolist(), strict=True)), "c": float(self.rng.choice([1, 2, 3]))},
                "error_code": 503 if error else None,
            }  # fmt: skip
            records.append(record)
            self.sent += 1
            await self.client.publish(self.names.predictions(MODEL), encode(record))
        await self.client.flush()
        return records


async def _open_alerts(monitor: MonitorService) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{monitor.http_port}/alerts?open=true&model={MODEL}"
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        assert response.status == 200
        return list((await response.json())["alerts"])


async def test_shift_raises_one_alert_that_resolves(
    monitor: MonitorService, client: Any, names: Names, pool: asyncpg.Pool
) -> None:
    announced: list[dict[str, Any]] = []

    async def on_alert(msg: Any) -> None:
        announced.append(decode(msg.data))

    subscription = await client.subscribe(names.alerts(">"), cb=on_alert)
    stream = Stream(client, names, seed=1)
    await stream.send(2000)
    await eventually(lambda: _consumed(monitor, 2000), "the first 2000 predictions")
    assert await _open_alerts(monitor) == []

    await stream.send(3000, shift=1.5)
    await eventually(lambda: _consumed(monitor, 5000), "the shifted predictions")
    open_now = await _open_alerts(monitor)
    assert [(a["kind"], a["feature"]) for a in open_now] == [("drift", "x0")]
    assert open_now[0]["observations"] > 1  # the persistent drift refreshed the one alert, no new ones

    await stream.send(4000)
    await eventually(lambda: _consumed(monitor, 9000), "the recovered predictions")
    assert await _open_alerts(monitor) == []
    rows = await pool.fetch("SELECT kind, feature, status FROM monitor_alerts WHERE model = $1", MODEL)
    assert [tuple(r) for r in rows] == [("drift", "x0", "resolved")]
    await client.flush()
    await subscription.unsubscribe()
    assert [(a["event"], a["feature"]) for a in announced] == [("raised", "x0"), ("resolved", "x0")]

    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{monitor.http_port}/models/{MODEL}/drift") as response:
            drift = await response.json()
        async with http.get(f"http://127.0.0.1:{monitor.http_port}/metrics") as response:
            metrics_text = await response.text()
    features = {f["feature"]: f for f in drift["versions"]["1"]["features"]}
    assert set(features) == {"x0", "x1", "x2", "c", "__score__"}
    assert all(f["status"] == "ok" for f in features.values())
    assert drift["versions"]["1"]["confidence"]["near_threshold_share"] == pytest.approx(0.2, abs=0.06)
    assert 'rtml_monitor_drift_statistic{feature="x0",model="fraud",statistic="psi",version="1"}' in metrics_text


async def _consumed(monitor: MonitorService, n: int) -> bool:
    return monitor.consumed >= n


async def test_summary_for_the_rollout_controller(monitor: MonitorService, client: Any, names: Names) -> None:
    stream = Stream(client, names, seed=2)
    start = monitor.consumed
    stable = await stream.send(300, version=1, variant="stable", prefix="s", error_every=30)
    candidate = await stream.send(200, version=2, variant="candidate", prefix="k")
    # shadow runs of version 2 on 100 of the stable requests: same ids
    shadow = []
    for record in stable[:100]:
        mirrored = {**record, "version": 2, "variant": "shadow", "score": float(stream.rng.uniform()),
                    "error_code": None}  # fmt: skip
        shadow.append(mirrored)
        await client.publish(names.predictions(MODEL), encode(mirrored))
    await client.flush()
    await eventually(lambda: _consumed(monitor, start + 600), "the rollout predictions")

    reply = await request(
        client, f"{names.namespace}.monitor.summary", {"model": MODEL, "stable": 1, "candidate": 2, "window_s": 600}
    )
    assert set(reply) == {"model", "window_s", "versions", "comparison"}
    v2 = reply["versions"]["2"]
    assert v2["predictions"] == 300 and v2["errors"] == 0 and v2["error_rate"] == 0.0
    answered_v2 = [r for r in candidate + shadow if r["score"] is not None]
    assert v2["score_mean"] == pytest.approx(np.mean([r["score"] for r in answered_v2]))
    assert v2["latency_p99_ms"] == pytest.approx(np.quantile([r["latency_us"] / 1000 for r in answered_v2], 0.99))
    v1 = reply["versions"]["1"]
    assert v1["errors"] >= 10  # this test's 10 plus none from the drift test
    comparison = reply["comparison"]
    paired = [(s, m) for s, m in zip(stable[:100], shadow, strict=True) if s["score"] is not None]
    assert comparison["matched"] == len(paired)
    assert comparison["agreement"] == pytest.approx(
        np.mean([(s["score"] >= 0.5) == (m["score"] >= 0.5) for s, m in paired])
    )
    assert comparison["min_samples"] == 20 and comparison["score_psi"] is not None

    url = f"http://127.0.0.1:{monitor.http_port}/models/{MODEL}/versions/2/summary?window_s=600"
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        by_variant = (await response.json())["variants"]
    assert {name: f["predictions"] for name, f in by_variant.items()} == {"candidate": 200, "shadow": 100}

    # too few predictions in a short window: None, not nan
    empty = await request(
        client, f"{names.namespace}.monitor.summary", {"model": "nobody", "stable": 1, "candidate": 2, "window_s": 5}
    )
    assert empty["versions"]["1"]["error_rate"] is None and empty["comparison"]["agreement"] is None
    with pytest.raises(BadRequest, match="window_s"):
        await request(client, f"{names.namespace}.monitor.summary", {"model": MODEL, "stable": 1, "candidate": 2})


def test_psi_in_summary_uses_stable_deciles() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.uniform(size=500), rng.uniform(size=500) ** 2
    edges = stats.quantile_edges(a, bins=10)
    assert stats.psi(reference=stats.bin_counts(a, edges), current=stats.bin_counts(b, edges)) > 0.1


async def test_labels_join_predictions_for_live_performance(
    monitor: MonitorService, client: Any, names: Names, pool: asyncpg.Pool
) -> None:
    stream = Stream(client, names, seed=3)
    start = monitor.consumed
    records = await stream.send(200, version=1, prefix="L")
    await eventually(lambda: _consumed(monitor, start + 200), "the labelled predictions")
    js = client.jetstream()
    for i, record in enumerate(records):
        label = 1.0 if record["score"] >= 0.5 else 0.0  # a perfect model
        body = {"id": record["id"], "label": label, "ts": record["ts"], "event_id": f"lab{i}"}
        await js.publish(names.labels("label"), encode(body), headers={"Nats-Msg-Id": f"lab{i}"})
    # a redelivered label (new msg id, same event id) and a label for nothing we know
    await js.publish(names.labels("label"), encode({"id": records[0]["id"], "label": 1.0, "ts": 1, "event_id": "lab0"}))
    await js.publish(names.labels("label"), encode({"id": "unknown", "label": 1.0, "ts": 1, "event_id": "nope"}))

    async def joined() -> bool:
        return await pool.fetchval("SELECT count(*) FROM monitor_labels") == 201

    await eventually(joined, "the labels to be stored")
    await eventually(lambda: _labelled(monitor, 200), "the labels to be joined")
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{monitor.http_port}/models/{MODEL}/performance") as response:
            body = await response.json()
        async with http.get(f"http://127.0.0.1:{monitor.http_port}/models/{MODEL}/versions/1/summary") as response:
            summary = await response.json()
        async with http.get(f"http://127.0.0.1:{monitor.http_port}/models/{MODEL}/versions/x/summary") as response:
            assert response.status == 400
        async with http.get(f"http://127.0.0.1:{monitor.http_port}/models/nobody/drift") as response:
            assert response.status == 404
    live = body["versions"]["1"]["live"]["stable"]
    assert live["labelled"] == 200 and live["auc"] == 1.0 and live["error_rate"] == 0.0
    assert summary["labelled"] == 200 and summary["auc"] == 1.0
    assert set(summary["variants"]) == {"stable"} and summary["variants"]["stable"]["labelled"] == 200


async def _labelled(monitor: MonitorService, n: int) -> bool:
    version = monitor.models[MODEL].versions[1]
    return sum(len(w) for w in version.labelled.values()) >= n


async def test_bad_records_are_counted_and_skipped(monitor: MonitorService, client: Any, names: Names) -> None:
    start = monitor.consumed
    bad = monitor.monitor_metrics.bad_messages.labels("predictions")
    before = bad._value.get()
    await client.publish(names.predictions(MODEL), b"\xc1 not msgpack")
    await client.publish(names.predictions(MODEL), encode({"id": "x", "model": MODEL}))  # fields missing
    nested = {"id": "n", "model": MODEL, "version": 1, "variant": "stable", "entity": "e", "ts": 1, "score": 0.5,
              "degraded": False, "latency_us": 1, "features": {"x0": {"deep": 1}}}  # fmt: skip
    await client.publish(names.predictions(MODEL), encode(nested))
    await Stream(client, names, seed=5).send(10, prefix="after-bad")
    await eventually(lambda: _consumed(monitor, start + 10), "the good records after the bad ones")

    async def counted() -> bool:
        return bool(bad._value.get() - before == 3)

    await eventually(counted, "the three bad records to be counted")


async def test_restart_rebuilds_windows_and_keeps_alerts(
    monitor: MonitorService, settings: CommonSettings, pool: asyncpg.Pool
) -> None:
    # give the first replica's acks a moment to reach the server, then start a second one from scratch
    await asyncio.sleep(0.5)
    before = len(monitor.models[MODEL].log)
    second = MonitorService(_settings(settings))
    await second.start()
    try:
        assert second.rebuilt >= 9000
        assert len(second.models[MODEL].log) == before
        assert second.models[MODEL].versions[1].last.features  # windows were evaluated again
        assert second.consumed == 0  # nothing replayed counted as new
        assert second.labels_rebuilt == 200  # the joined labels, from Postgres
        assert second.models[MODEL].versions[1].performance("stable").auc == 1.0
        assert await pool.fetchval("SELECT count(*) FROM monitor_alerts") == 1
    finally:
        await second.stop()


async def test_a_malformed_stored_profile_does_not_stop_the_stream(
    monitor: MonitorService, client: Any, names: Names, pool: asyncpg.Pool
) -> None:
    await pool.execute(
        "INSERT INTO monitor_profiles (model, version, profile) VALUES ($1, 9, $2::jsonb)",
        MODEL, json.dumps({"model": MODEL, "version": 9, "features": [{"name": "x", "kind": "histogram"}]}),
    )  # fmt: skip
    start = monitor.consumed
    await Stream(client, names, seed=6).send(5, version=9, prefix="bad-profile")
    await eventually(lambda: _consumed(monitor, start + 5), "the records of the version with a broken profile")
    assert monitor.models[MODEL].versions[9].profile is None
