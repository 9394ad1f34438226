"""Publishing to JetStream with many acks in flight, written out in one go.

``js.publish`` is a request with its own timer per message, and ``js.publish_async`` waits on its
semaphore through ``asyncio.wait_for`` (a task per message); both yield to the event loop on every
message, so the connection's flusher writes one message per system call. Here a publish only appends to
the connection's buffer: the outputs of a whole batch leave in one write, and their acks come back on one
wildcard reply subscription.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.errors import APIError, NoStreamResponseError

STATUS = "Status"
NO_RESPONDERS = "503"


class AckedPublisher:
    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self._prefix = nc.new_inbox()
        self._futures: dict[str, asyncio.Future[bytes]] = {}
        self._next = 0
        self._sub: Subscription | None = None

    async def start(self) -> None:
        self._sub = await self.nc.subscribe(f"{self._prefix}.*", cb=self._on_reply)

    async def stop(self) -> None:
        for future in self._futures.values():
            future.cancel()
        self._futures.clear()
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    async def publish(self, subject: str, payload: bytes, headers: dict[str, str]) -> asyncio.Future[bytes]:
        """Queue one publish; the future resolves to the stream's ack (raw JSON) or its error."""
        self._next += 1
        token = str(self._next)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._futures[token] = future
        try:
            await self.nc.publish(subject, payload, reply=f"{self._prefix}.{token}", headers=headers)
        except Exception:
            self._futures.pop(token, None)
            raise
        return future

    async def publish_all(
        self, messages: list[tuple[str, bytes, dict[str, str]]], *, timeout_s: float
    ) -> list[bytes | BaseException]:
        """Publish every message, wait up to ``timeout_s`` for all acks; each result is its ack or its error."""
        futures: list[asyncio.Future[bytes]] = []
        for subject, payload, headers in messages:
            try:
                futures.append(await self.publish(subject, payload, headers))
            except Exception as error:
                failed: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
                failed.set_exception(error)
                futures.append(failed)
        if futures:
            deadline = time.monotonic() + timeout_s
            _, late = await asyncio.wait(futures, timeout=max(0.0, deadline - time.monotonic()))
            for future in late:
                future.cancel()
        results: list[bytes | BaseException] = []
        for future in futures:
            if future.cancelled():
                results.append(TimeoutError(f"no JetStream ack within {timeout_s} s"))
            else:
                failure = future.exception()
                results.append(failure if failure is not None else future.result())
        return results

    async def _on_reply(self, msg: Msg) -> None:
        future = self._futures.pop(msg.subject[len(self._prefix) + 1 :], None)
        if future is None or future.done():
            return
        if msg.headers and msg.headers.get(STATUS) == NO_RESPONDERS:
            future.set_exception(NoStreamResponseError())
            return
        if b'"error"' in msg.data:
            try:
                error = json.loads(msg.data)["error"]
                future.set_exception(APIError.from_error(error))
            except (ValueError, KeyError, TypeError):
                future.set_exception(APIError(description=msg.data[:200].decode(errors="replace")))
            return
        future.set_result(msg.data)
