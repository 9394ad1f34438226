"""Ordered pipelines on the real Redis: in flight together, run in order, each with its own replies."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from services.features.ordered import OrderedPipeline
from shared.online import open_redis
from shared.settings import CommonSettings
from shared.subjects import Names


@pytest.fixture
async def client(settings: CommonSettings) -> AsyncIterator[aioredis.Redis]:
    async with open_redis(settings.redis_url) as opened:
        yield opened


def _key(names: Names) -> str:
    return names.redis_key("ordered", secrets.token_hex(4))


async def test_pipelines_in_flight_together_run_in_the_order_sent(client: aioredis.Redis, names: Names) -> None:
    key = _key(names)
    pipeline = OrderedPipeline(client)
    try:
        first = [("RPUSH", key, f"a{i}") for i in range(500)]
        second = [*(("RPUSH", key, f"b{i}") for i in range(3)), ("LRANGE", key, 0, -1)]
        # both are sent before either's replies are read: the second goes while the first runs
        replies_first, replies_second = await asyncio.gather(pipeline.execute(first), pipeline.execute(second))
        assert replies_first == list(range(1, 501))
        assert replies_second[:3] == [501, 502, 503]
        assert replies_second[3] == [f"a{i}".encode() for i in range(500)] + [b"b0", b"b1", b"b2"]
    finally:
        await pipeline.close()
        await client.delete(key)


async def test_an_error_reply_takes_its_place_and_the_connection_goes_on(client: aioredis.Redis, names: Names) -> None:
    key = _key(names)
    pipeline = OrderedPipeline(client)
    try:
        replies = await pipeline.execute([("SET", key, "text"), ("INCR", key), ("GET", key)])
        assert replies[0] is True or replies[0] == b"OK"
        assert isinstance(replies[1], ResponseError)
        assert replies[2] == b"text"
        assert await pipeline.execute([("DEL", key)]) == [1]
    finally:
        await pipeline.close()


async def test_a_lost_connection_fails_every_pipeline_waiting_and_the_next_opens_another(
    client: aioredis.Redis, names: Names
) -> None:
    key = _key(names)
    pipeline = OrderedPipeline(client)
    try:
        (connection_id,) = await pipeline.execute([("CLIENT", "ID")])
        # the first waits on the server (a blocking pop), the second behind it
        blocked = asyncio.create_task(pipeline.execute([("BLPOP", key, 5)]))
        behind = asyncio.create_task(pipeline.execute([("PING",)]))
        await asyncio.sleep(0.1)
        assert not blocked.done() and not behind.done()
        await client.client_kill_filter(_id=connection_id)
        for waiting in (blocked, behind):
            with pytest.raises(RedisConnectionError):
                await asyncio.wait_for(waiting, timeout=2)
        (other_id,) = await pipeline.execute([("CLIENT", "ID")])
        assert other_id != connection_id
    finally:
        await pipeline.close()
