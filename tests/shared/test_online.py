"""The online store's reader on the real Redis: one key, several, missing ones, a Redis without the script."""

from __future__ import annotations

from pathlib import Path

import redis.asyncio as aioredis

from infra.local import manager
from shared.online import OnlineVector, feature_key, open_redis, read_online_features, vector_to_hash
from shared.settings import CommonSettings
from shared.subjects import Names
from tests.shared.test_local_infra import free_port


async def _store(client: aioredis.Redis, names: Names, stored: dict[tuple[str, str], OnlineVector]) -> None:
    for (view, entity), vector in stored.items():
        await client.hset(feature_key(names, view, entity), mapping=vector_to_hash(vector.values, vector.as_of_ms))


STORED = {
    ("card_stats", "c1"): OnlineVector({"n_1m": 3.0, "mean_1m": 12.5}, 1_700_000_000_000),
    ("card_stats", "c2"): OnlineVector({"n_1m": 1.0, "mean_1m": 0.1}, 1_700_000_000_321),
    ("card_places", "c1"): OnlineVector({"merchants_1h": 2.0}, 1_700_000_000_007),
    ("card_stats", "values only"): OnlineVector({"n_1m": 7.0}, None),
}
WANTED = [
    ("card_stats", "c2"),
    ("card_stats", "unknown"),
    ("card_places", "c1"),
    ("card_stats", "c1"),
    ("card_stats", "values only"),
    ("card_stats", "c2"),  # asked twice
]


async def test_several_vectors_come_back_in_the_order_asked(settings: CommonSettings, names: Names) -> None:
    async with open_redis(settings.redis_url) as client:
        await _store(client, names, STORED)
        got = await read_online_features(client, names, WANTED)
        assert got == [STORED.get(pair, OnlineVector({})) for pair in WANTED]
        # each equals what the one-key read (a plain HMGET) gives
        assert got == [(await read_online_features(client, names, [pair]))[0] for pair in WANTED]
        assert await read_online_features(client, names, []) == []


async def test_a_redis_without_the_read_script_is_given_it(tmp_path: Path, settings: CommonSettings) -> None:
    """A new Redis has no scripts cached: the first several-key read loads its script and goes on."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    started = manager.up(
        nats_url=settings.nats_url, redis_url=url, database_url=settings.database_url, home=tmp_path / "rtml"
    )
    try:
        names = Names("private")
        async with open_redis(url) as client:
            await _store(client, names, STORED)
            got = await read_online_features(client, names, WANTED)
            assert got == [STORED.get(pair, OnlineVector({})) for pair in WANTED]
    finally:
        manager.down(home=tmp_path / "rtml", only=started)
