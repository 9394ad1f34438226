"""Pipelines that follow one another on one Redis connection, so the next can be on its way while one runs.

redis-py's pipeline sends its commands and then reads every reply before the connection is free,
so a second pipeline goes out on another connection (and Redis may run it first) or waits for
the first's replies. Here every pipeline goes out on the same connection, in the order
:meth:`OrderedPipeline.execute` was called, and one reader takes the replies off in that order:
Redis runs the pipelines one after another, in order, without waiting between them for the client
to read the previous one's replies and send the next.

A connection that fails (a write, a read, a timeout) fails every pipeline still waiting for replies,
each with the error, and is dropped; the next pipeline opens another.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ResponseError

Command = Sequence[Any]


class OrderedPipeline:
    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self._connection: AbstractConnection | None = None
        self._sending = asyncio.Lock()
        self._waiting: deque[tuple[int, asyncio.Future[list[Any]]]] = deque()  # (replies, result), sent order
        self._reader: asyncio.Task[None] | None = None
        self._reading: AbstractConnection | None = None  # the connection the reader reads

    async def execute(self, commands: Sequence[Command]) -> list[Any]:
        """Each command's reply, an error reply as its :class:`ResponseError` (in its place)."""
        if not commands:
            return []
        replies: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        async with self._sending:
            if self._connection is None:
                self._connection = await self.client.connection_pool.get_connection()  # type: ignore[no-untyped-call]  # untyped in redis-py
            connection = self._connection
            self._waiting.append((len(commands), replies))
            try:
                # no health check: a PING's reply would land among the replies still to be read
                await connection.send_packed_command(connection.pack_commands(commands), check_health=False)
            except Exception as error:
                await self._drop(connection, error)
                raise
            # one reader per connection: the reader of a dropped one may still be on its way out
            if self._reader is None or self._reader.done() or self._reading is not connection:
                self._reader = asyncio.create_task(self._read(connection))
                self._reading = connection
        return await replies

    async def close(self) -> None:
        """Hand the connection back (after the replies still on their way)."""
        async with self._sending:
            if self._reader is not None:
                await asyncio.gather(self._reader, return_exceptions=True)
            if self._connection is not None:
                connection, self._connection = self._connection, None
                await self.client.connection_pool.release(connection)

    async def _read(self, connection: AbstractConnection) -> None:
        while self._waiting and self._connection is connection:
            count, result = self._waiting[0]
            replies: list[Any] = []
            try:
                for _ in range(count):
                    try:
                        replies.append(await connection.read_response())
                    except ResponseError as error:  # an error reply: the connection is fine
                        replies.append(error)
            except Exception as error:
                await self._drop(connection, error)
                return
            self._waiting.popleft()
            if not result.done():  # its caller may have been cancelled
                result.set_result(replies)

    async def _drop(self, connection: AbstractConnection, error: Exception) -> None:
        """Fail every pipeline waiting on ``connection`` and let it go."""
        if self._connection is not connection:
            return
        self._connection = None
        waiting, self._waiting = self._waiting, deque()
        for _, result in waiting:
            if not result.done():
                result.set_exception(error)
        await connection.disconnect(nowait=True)
        await self.client.connection_pool.release(connection)
