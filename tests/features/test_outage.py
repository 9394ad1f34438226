"""Redis and Postgres going away mid-stream: nothing is acked unstored, nothing is lost, it catches up."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import pytest
from nats.aio.client import Client

from services.features.catalog import load_views
from services.features.service import FeaturesService
from services.features.settings import FeaturesSettings
from shared.bus import request
from shared.errors import Unavailable
from shared.online import open_redis, read_online_features
from shared.settings import CommonSettings
from shared.subjects import Names
from tests.features.helpers import BASE_TS, expected_online, publish_events, txn, wait_drained
from tests.features.proxy import Proxy
from tests.features.reference import close

VIEWS = load_views(None)


def _via(url: str, port: int) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    netloc = (parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else "") + f"{host}:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


@pytest.fixture(scope="module")
async def proxies(settings: CommonSettings) -> AsyncIterator[dict[str, Proxy]]:
    redis_url, db_url = urlsplit(settings.redis_url), urlsplit(settings.database_url)
    out = {
        "redis": Proxy(redis_url.hostname or "127.0.0.1", redis_url.port or 6379),
        "postgres": Proxy(db_url.hostname or "127.0.0.1", db_url.port or 5432),
    }
    for proxy in out.values():
        await proxy.open()
    yield out
    for proxy in out.values():
        await proxy.close()


@pytest.fixture(scope="module")
async def service(settings: CommonSettings, proxies: dict[str, Proxy]) -> AsyncIterator[FeaturesService]:
    common = replace(
        settings,
        redis_url=_via(settings.redis_url, proxies["redis"].port),
        database_url=_via(settings.database_url, proxies["postgres"].port),
    )
    features = FeaturesSettings(
        common=common,
        fetch_timeout_s=0.2,
        ack_wait_s=3,
        lag_poll_s=0.1,
        batch_size=16,
        max_lag_msgs=10,
        retry_max_s=0.3,
    )
    svc = FeaturesService(features, VIEWS)
    await svc.start()
    yield svc
    await svc.stop()


async def _until(predicate: Any, what: str, timeout_s: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def _ready_status(service: FeaturesService) -> int:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{service.http_port}/readyz") as response:
        return response.status


async def _assert_online_matches(settings: CommonSettings, names: Names, arrivals: list[dict[str, Any]]) -> None:
    async with open_redis(settings.redis_url) as client:
        for view in VIEWS.values():
            want = expected_online(view, arrivals)
            got = await read_online_features(client, names, [(view.name, entity) for entity in want])
            for (entity, vector), stored in zip(want.items(), got, strict=True):
                for name, value in vector.items():
                    assert close(stored.values[name], value, 500), (view.name, entity, name)


def _batch(start: int, n: int) -> list[dict[str, Any]]:
    return [
        txn(i, f"c{i % 4}", BASE_TS + 1000 * i, amount=float(i % 50), merchant=f"m{i % 3}")
        for i in range(start, start + n)
    ]


@pytest.mark.parametrize("store", ["redis", "postgres"])
async def test_store_outage_loses_nothing(
    store: str,
    service: FeaturesService,
    *,
    proxies: dict[str, Proxy],
    nc: Client,
    settings: CommonSettings,
    names: Names,
) -> None:
    js = nc.jetstream()
    first = 0 if store == "redis" else 1000
    await publish_events(js, names, _batch(first, 20))
    await wait_drained(js, names)
    stored_before = await service.pool.fetchval("SELECT count(*) FROM features_events") if store == "redis" else None

    await proxies[store].close()
    failures = service.write_failures.labels("norm")
    seen_failures = failures._value.get()
    await publish_events(js, names, _batch(first + 20, 60))

    async def failing_and_behind() -> bool:
        return failures._value.get() > seen_failures and service.pending.get("norm", 0) > 10

    await _until(failing_and_behind, "store failures and a backlog")
    assert await _ready_status(service) == 503
    info = await js.consumer_info(names.stream("norm"), names.consumer("features", "norm"))
    last = (await js.stream_info(names.stream("norm"))).state.last_seq
    assert info.ack_floor.stream_seq <= last - 60  # none of the events published during the outage is acked
    if store == "redis":
        with pytest.raises(Unavailable):
            await request(nc, names.features_get, {"entities": ["c1"]})
        assert await service.pool.fetchval("SELECT count(*) FROM features_events") >= stored_before

    await proxies[store].open()
    await wait_drained(js, names)
    await _until(lambda: _ready_is_ok(service), "readiness back")
    arrivals = _batch(0, 80) + (_batch(1000, 80) if store == "postgres" else [])
    await _assert_online_matches(settings, names, arrivals)
    assert await service.pool.fetchval("SELECT count(*) FROM features_events") == len(arrivals)


async def _ready_is_ok(service: FeaturesService) -> bool:
    return await _ready_status(service) == 200
