"""Redis: the connection, namespace housekeeping, and the online feature store's key layout."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import cast

import hiredis
import msgpack
import redis.asyncio as aioredis
from redis.asyncio.connection import Connection
from redis.exceptions import NoScriptError
from redis.typing import EncodableT

from shared.subjects import Names


class HiredisPackingConnection(Connection):
    """A connection that writes commands with hiredis's C packer.

    redis-py's asyncio connection packs every command in Python (about 4.8 us for an EVALSHA
    with eight arguments here, against 0.6 us in hiredis), which is the largest client-side
    cost of the features writer's pipelines and of the 100-key reads. Commands spelled with a
    space (``CONFIG GET``) and arguments hiredis does not take go through redis-py's packer.
    """

    def pack_command(self, *args: EncodableT) -> list[bytes]:
        head = args[0]
        if (isinstance(head, str) and " " in head) or (isinstance(head, bytes) and b" " in head):
            return super().pack_command(*args)
        try:
            return [hiredis.pack_command(args)]  # type: ignore[arg-type]  # its stub types a 1-tuple
        except TypeError:
            return super().pack_command(*args)  # raises redis-py's own error for a bad argument


@asynccontextmanager
async def open_redis(url: str) -> AsyncIterator[aioredis.Redis]:
    """A Redis client with bounded timeouts, so a dead Redis fails fast instead of hanging."""
    client = aioredis.Redis.from_url(
        url,
        socket_timeout=1.0,
        socket_connect_timeout=1.0,
        health_check_interval=10,
        decode_responses=False,
        connection_class=HiredisPackingConnection,
    )
    try:
        yield client
    finally:
        await client.aclose()


async def delete_namespace_keys(client: aioredis.Redis, prefix: str) -> int:
    """Delete every key under ``prefix``; returns how many went."""
    deleted = 0
    async for batch in _scan_batches(client, f"{prefix}*"):
        deleted += await client.unlink(*batch)
    return deleted


async def _scan_batches(client: aioredis.Redis, pattern: str, size: int = 500) -> AsyncIterator[list[bytes]]:
    batch: list[bytes] = []
    async for key in client.scan_iter(match=pattern, count=size):
        batch.append(key)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


# The online feature store's key layout, written by the features service and read
# by inference. One hash per (view, entity) with two fields readers read: "v" holds every
# feature's value as one msgpack map (name -> number), "t" the event time (ms) the whole
# vector is as of (every feature of a view is recomputed at each update, so one time
# serves them all). One packed field instead of a field per feature: the writer's Lua
# script would otherwise format each value as a %.17g string and Redis would rewrite each
# in the hash's listpack, which together were three tenths of its Redis time. A third
# field, "s", holds the features writer's window state for the entity (its own format,
# read by nobody else), so one write command carries both. The entity is wrapped in a
# Redis Cluster hash tag so one entity's keys share a slot.

VALUES_FIELD = "v"
AS_OF_FIELD = "t"
STATE_FIELD = "s"
_FIELDS = (VALUES_FIELD, AS_OF_FIELD)


def feature_key(names: Names, view: str, entity: str) -> str:
    """``Names("rtml")`` -> ``rtml:fv:card_velocity:{card_1}``.

    >>> feature_key(Names("rtml"), "card_velocity", "card_1")
    'rtml:fv:card_velocity:{card_1}'
    """
    return names.redis_key("fv", view, "{" + entity + "}")


@dataclass(frozen=True, slots=True)
class OnlineVector:
    """One entity's features in one view as stored: values, and the event time they are as of."""

    values: dict[str, float]
    as_of_ms: int | None = None

    @classmethod
    def from_fields(cls, packed: bytes | None, as_of: bytes | None) -> OnlineVector:
        """The vector from the hash's two fields (both ``None``: nothing stored).

        >>> OnlineVector.from_fields(msgpack.packb({"n_1h": 3, "avg_1h": 2.5}), b"1700000000000")
        OnlineVector(values={'n_1h': 3.0, 'avg_1h': 2.5}, as_of_ms=1700000000000)
        """
        values: dict[str, float] = {}
        if packed:
            stored = msgpack.unpackb(packed, raw=False)
            if isinstance(stored, dict):  # an empty Lua table packs as an empty array
                values = {name: float(value) for name, value in stored.items()}
        return cls(values, None if as_of is None else int(as_of))


def vector_to_hash(values: dict[str, float], as_of_ms: int | None = None) -> dict[str, bytes]:
    """The hash fields to write for ``values``; the inverse of :meth:`OnlineVector.from_fields`."""
    fields = {VALUES_FIELD: msgpack.packb({name: float(value) for name, value in values.items()})}
    if as_of_ms is not None:
        fields[AS_OF_FIELD] = str(int(as_of_ms)).encode()
    return fields


# Several vectors are read by one script that HMGETs every key: one command for the client to pack
# and one array reply to parse, against a pipelined HMGET per key (100 keys, p50 0.57-0.73 against
# 2.2-3.2 ms here). Like the writer's scripts it needs every key on one Redis (the primary that
# open_redis connects to); it reads only, and holds Redis about 2 us per key.
_READ_MANY = (
    "local out = {} for i = 1, #KEYS do local r = redis.call('HMGET', KEYS[i], ARGV[1], ARGV[2]) "
    "out[2 * i - 1] = r[1] out[2 * i] = r[2] end return out"
)
_READ_MANY_SHA = hashlib.sha1(_READ_MANY.encode()).hexdigest()


async def read_online_features(
    client: aioredis.Redis, names: Names, wanted: Sequence[tuple[str, str]]
) -> list[OnlineVector]:
    """Vectors for ``(view, entity)`` pairs in one round trip, in order; empty when unknown."""
    if not wanted:
        return []
    if len(wanted) == 1:  # one key: a plain HMGET, the cheapest command for it
        view, entity = wanted[0]
        reply = await client.hmget(feature_key(names, view, entity), _FIELDS)
        packed, as_of = cast(list[bytes | None], reply)  # decode_responses is off: bytes or None
        return [OnlineVector.from_fields(packed, as_of)]
    keys = [feature_key(names, view, entity) for view, entity in wanted]
    try:
        flat = await client.evalsha(_READ_MANY_SHA, len(keys), *keys, *_FIELDS)
    except NoScriptError:  # a Redis that restarted or flushed its scripts
        await client.script_load(_READ_MANY)
        flat = await client.evalsha(_READ_MANY_SHA, len(keys), *keys, *_FIELDS)
    fields = cast(list[bytes | None], flat)
    return [OnlineVector.from_fields(fields[i], fields[i + 1]) for i in range(0, len(fields), 2)]
