"""The features service on real NATS, Redis and Postgres: stream -> online and offline stores -> reads."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pyarrow.parquet as pq
import pytest
from nats.aio.client import Client

from services.features.catalog import load_views
from services.features.service import FeaturesService
from services.features.settings import FeaturesSettings
from shared.bus import request
from shared.errors import BadRequest, NotFound
from shared.online import open_redis, read_online_features
from shared.settings import CommonSettings
from shared.subjects import Names
from tests.features.helpers import BASE_TS, expected_online, publish_events, publish_label, txn, wait_drained
from tests.features.reference import close

VIEWS = load_views(None)


def _stream(seed: int) -> list[dict[str, Any]]:
    """Transactions over a few cards and merchants, with reordering, late arrivals and duplicates."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    ts = BASE_TS
    for i in range(300):
        ts += rng.randint(0, 40_000)
        jitter = rng.choice([0, 0, 0, -5_000, -50_000, -200_000])  # the last is beyond the 1 min lateness
        out.append(
            txn(
                i,
                f"c{rng.randint(0, 5)}",
                ts + jitter,
                amount=round(rng.uniform(1, 500), 2),
                merchant=f"m{rng.randint(0, 7)}",
                country=rng.choice(["FR", "DE", "US", "GB"]),
            )
        )
    return out


@pytest.fixture(scope="module")
async def service(settings: CommonSettings) -> AsyncIterator[FeaturesService]:
    features = FeaturesSettings(common=settings, fetch_timeout_s=0.2, ack_wait_s=5, lag_poll_s=0.1, batch_size=64)
    svc = FeaturesService(features, VIEWS)
    await svc.start()
    yield svc
    await svc.stop()


@pytest.fixture(scope="module")
async def streamed(service: FeaturesService, nc: Client, names: Names) -> list[dict[str, Any]]:
    js = nc.jetstream()
    events = _stream(7)
    await publish_events(js, names, events)
    duplicates = random.Random(1).sample(events, 40)
    await publish_events(js, names, duplicates, msg_id=False)  # past JetStream's dedup: features must drop them
    await wait_drained(js, names)
    return events + duplicates


async def test_online_state_equals_brute_force(
    streamed: list[dict[str, Any]], settings: CommonSettings, names: Names
) -> None:
    async with open_redis(settings.redis_url) as client:
        for view in VIEWS.values():
            want = expected_online(view, streamed)
            got = await read_online_features(client, names, [(view.name, entity) for entity in want])
            for (entity, vector), stored in zip(want.items(), got, strict=True):
                for name, value in vector.items():
                    assert close(stored.values[name], value, 500), (view.name, entity, name, stored.values[name], value)


async def test_features_get(streamed: list[dict[str, Any]], nc: Client, names: Names) -> None:
    reply = await request(nc, names.features_get, {"entities": ["c1", "nobody"], "views": ["card_velocity"]})
    first, unknown = reply["vectors"]
    assert first["found"] and first["features"]["txn_count_24h"] >= 1
    assert all(age is not None and age > 0 for age in first["freshness_ms"].values())
    assert not unknown["found"]
    assert unknown["features"]["ms_since_last"] == -1.0 and unknown["freshness_ms"]["ms_since_last"] is None
    everything = await request(nc, names.features_get, {"entities": ["c2"]})
    assert {v["view"] for v in everything["vectors"]} == set(VIEWS)
    with pytest.raises(NotFound, match="unknown view"):
        await request(nc, names.features_get, {"entities": ["c1"], "views": ["nope"]})
    with pytest.raises(BadRequest, match="entities"):
        await request(nc, names.features_get, {"entities": []})
    with pytest.raises(BadRequest, match="entities"):
        await request(nc, names.features_get, {"entities": [1, 2]})


async def test_offline_log_holds_each_event_once(streamed: list[dict[str, Any]], service: FeaturesService) -> None:
    count = await service.pool.fetchval("SELECT count(*) FROM features_events")
    assert count == len({e["id"] for e in streamed})
    row = await service.pool.fetchrow("SELECT ts, seq, ingested_ms FROM features_events WHERE id = 'tx5'")
    assert row["ts"] == next(e["ts"] for e in streamed if e["id"] == "tx5")
    assert row["seq"] > 0 and row["ingested_ms"] > BASE_TS
    views = await service.pool.fetch("SELECT name, version FROM features_views")
    assert {(r["name"], r["version"]) for r in views} == {(v.name, v.version) for v in VIEWS.values()}


async def test_metrics_and_readiness(streamed: list[dict[str, Any]], service: FeaturesService) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{service.http_port}/metrics") as response:
            text = await response.text()
        async with http.get(f"http://127.0.0.1:{service.http_port}/readyz") as response:
            assert response.status == 200
    assert 'rtml_features_freshness_seconds_bucket{le="0.001",view="card_velocity"}' in text
    assert 'rtml_features_events_total{outcome="duplicate",view="card_amount"}' in text
    assert 'rtml_features_events_total{outcome="late",view="card_amount"}' in text


def _cli(argv: list[str]) -> int:
    import argparse

    from services.features.cli import register

    parser = argparse.ArgumentParser(prog="rtml")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


@pytest.fixture
def cli_env(settings: CommonSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RTML_NAMESPACE", settings.namespace)
    monkeypatch.setenv("RTML_NATS_URL", settings.nats_url)
    monkeypatch.setenv("RTML_REDIS_URL", settings.redis_url)
    monkeypatch.setenv("RTML_DATABASE_URL", settings.database_url)


@pytest.fixture(scope="module")
async def leak_scenario(streamed: list[dict[str, Any]], nc: Client, names: Names) -> dict[str, Any]:
    """Card z: a labelled transaction, then a late arrival from before it and a transaction after it."""
    js = nc.jetstream()
    t = BASE_TS + 10_000_000
    before = [txn(1000, "z", t - 60_000, amount=5.0, merchant="a"), txn(1001, "z", t, amount=7.0, merchant="b")]
    after = [txn(1002, "z", t - 30_000, amount=1000.0, merchant="late"), txn(1003, "z", t + 1, amount=2000.0)]
    await publish_events(js, names, before)
    await publish_label(js, names, "tx1001", 1.0, t + 5)
    await wait_drained(js, names, "labels")
    await wait_drained(js, names)
    await publish_events(js, names, after)
    await wait_drained(js, names)
    return {"t": t, "before": before, "after": after, "streamed": streamed}


def test_export_has_no_leakage(leak_scenario: dict[str, Any], cli_env: None, tmp_path: Path) -> None:
    out = tmp_path / "train.parquet"
    t = leak_scenario["t"]
    code = _cli(["features", "export", "--view", "card_amount", "--start", str(t - 1), "--end", str(t + 1),
                 "--out", str(out)])  # fmt: skip
    assert code == 0
    table = pq.read_table(out).to_pylist()
    assert [(row["event_id"], row["entity"], row["label"]) for row in table] == [("tx1001", "z", 1.0)]
    row = table[0]
    assert row["amount_sum_1h"] == 12.0 and row["amount_max_24h"] == 7.0 and row["amount_last"] == 7.0
    csv_out = tmp_path / "train.csv"
    assert _cli(["features", "export", "--view", "card_diversity", "--start", str(t), "--end", str(t + 1),
                 "--out", str(csv_out)]) == 0  # fmt: skip
    header, values = csv_out.read_text().splitlines()
    assert dict(zip(header.split(","), values.split(","), strict=True))["merchants_1h"] == "2.0"


def test_export_refuses_bad_arguments(cli_env: None, tmp_path: Path) -> None:
    assert _cli(["features", "export", "--view", "nope", "--start", "0", "--end", "1", "--out", "x.csv"]) == 2
    assert _cli(["features", "export", "--view", "card_amount", "--start", "0", "--end", "1", "--out", "x.txt"]) == 2
    assert _cli(["features", "export", "--view", "card_amount", "--start", "5", "--end", "1", "--out", "x.csv"]) == 2


def test_backfill_builds_a_new_view(
    leak_scenario: dict[str, Any],
    settings: CommonSettings,
    cli_env: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import asyncio

    views_file = tmp_path / "views.yaml"
    views_file.write_text(
        "views:\n"
        "  - name: card_new\n    version: 1\n    source: transaction\n    entity: card\n    features:\n"
        "      - {name: n_1h, agg: count, window: 1h}\n"
        "      - {name: countries_1h, agg: distinct_count, field: country, window: 1h}\n"
        "      - {name: amount_std_1h, agg: stddev, field: amount, window: 1h}\n"
    )
    monkeypatch.setenv("RTML_FEATURES_VIEWS", str(views_file))
    assert _cli(["features", "backfill", "--view", "card_new"]) == 0
    view = load_views(str(views_file))["card_new"]
    arrivals = leak_scenario["streamed"] + leak_scenario["before"] + leak_scenario["after"]
    want = expected_online(view, arrivals)

    async def read() -> list[Any]:
        async with open_redis(settings.redis_url) as client:
            return await read_online_features(client, Names(settings.namespace), [("card_new", e) for e in want])

    for (entity, vector), stored in zip(want.items(), asyncio.run(read()), strict=True):
        for name, value in vector.items():
            assert close(stored.values[name], value, 500), (entity, name, stored.values[name], value)
    # a changed definition under the same version is refused
    views_file.write_text(views_file.read_text().replace("window: 1h}", "window: 2h}", 1))
    assert _cli(["features", "backfill", "--view", "card_new"]) == 2


async def test_poison_messages_do_not_stall_the_stream(
    streamed: list[dict[str, Any]], service: FeaturesService, nc: Client, names: Names
) -> None:
    js = nc.jetstream()
    before = service.bad_messages.labels("norm")._value.get()
    nul = txn(2000, "p\x00q", BASE_TS + 5, merchant="bad\x00merchant")
    nul["data"]["note"] = "zero\x00byte"
    nan = txn(2001, "p", BASE_TS + 6, amount=float("nan"))
    far = txn(2002, "p", 2**60)
    await publish_events(js, names, [nul, nan, far, txn(2003, "p", BASE_TS + 7, amount=3.0)])
    await js.publish(names.norm("transaction"), b"\xc1 not msgpack")
    await wait_drained(js, names)
    assert service.bad_messages.labels("norm")._value.get() == before + 2  # ts out of range, not msgpack
    stored = await service.pool.fetchrow("SELECT entity, data FROM features_events WHERE id = 'tx2000'")
    assert stored["entity"] == "p\ufffdq" and "zero\ufffdbyte" in stored["data"]
    assert await service.pool.fetchval("SELECT data->>'amount' FROM features_events WHERE id = 'tx2001'") is None
    vectors = (await request(nc, names.features_get, {"entities": ["p"], "views": ["card_amount"]}))["vectors"]
    assert vectors[0]["features"]["amount_sum_1h"] == 3.0


async def test_script_errors_are_told_apart_from_server_refusals(service: FeaturesService) -> None:
    from redis.exceptions import ResponseError

    from services.features.online import _is_script_error

    failing = service.redis.register_script("return redis.call('INCR', KEYS[1])")
    await service.redis.set(f"{service.names.redis_prefix}not-a-number", "x")
    async with service.redis.pipeline(transaction=False) as pipe:
        await failing(keys=[f"{service.names.redis_prefix}not-a-number"], client=pipe)
        (result,) = await pipe.execute(raise_on_error=False)
    assert isinstance(result, ResponseError) and _is_script_error(result)
    assert not _is_script_error(ResponseError("OOM command not allowed when used memory > 'maxmemory'."))


async def test_scripts_missing_from_redis_are_loaded(service: FeaturesService, names: Names) -> None:
    import secrets

    from services.features.online import OnlineWriter
    from services.features.script import Outcome
    from services.features.views import parse_view
    from shared.messages import Event

    # a view never seen by this Redis: its script's sha is unknown there, so the first EVALSHA gets NOSCRIPT
    name = f"fresh_{secrets.token_hex(4)}"
    view = parse_view({"name": name, "source": "transaction", "entity": "card",
                       "features": [{"name": "n", "agg": "count", "window": "1h"}]})  # fmt: skip
    assert not (
        await service.redis.script_exists(
            OnlineWriter(service.redis, names, {name: view}).by_source["transaction"][0].script.sha
        )
    )[0]
    writer = OnlineWriter(service.redis, names, {name: view})
    applied = await writer.apply(
        [Event("s1", "transaction", "card9", BASE_TS, {}), Event("s2", "transaction", "card9", BASE_TS + 1, {})]
    )
    assert [a.outcome for a in applied] == [Outcome.APPLIED, Outcome.APPLIED]
    (vector,) = await read_online_features(service.redis, names, [(name, "card9")])
    assert vector.values == {"n": 2.0}
