"""A durable JetStream pull consumer that acks a batch only once its writes are durable.

A failed write (Redis or Postgres down) is retried with exponential backoff on the
same batch, without acking, until it succeeds or the service stops; nothing is
acked that was not stored, so a crash or a stop loses nothing (JetStream redelivers
after ``ack_wait`` and every write is idempotent).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import BadRequestError
from prometheus_client import Counter

log = structlog.get_logger(__name__)

# A batch is parsed once (``prepare``: bad messages are counted and left out, since
# redelivering them cannot help), then stored until the store succeeds (``store``).
Prepare = Callable[[list[Msg]], Any]
Store = Callable[[Any], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ConsumerSpec:
    stream: str
    durable: str
    subject: str
    batch_size: int
    fetch_timeout_s: float
    ack_wait_s: float
    retry_max_s: float
    max_ack_pending: int


class BatchConsumer:
    """Fetch, prepare the batch, store it until that succeeds, then ack every message."""

    def __init__(
        self, js: JetStreamContext, spec: ConsumerSpec, prepare: Prepare, store: Store, write_failures: Counter
    ) -> None:
        self.js = js
        self.spec = spec
        self.prepare = prepare
        self.store = store
        self.write_failures = write_failures
        self.retrying = False
        self._sub: JetStreamContext.PullSubscription | None = None

    async def ensure(self) -> None:
        """Create the durable consumer, or update it in place (the server applies changed editable
        fields such as the ack wait and the ack-pending cap; a change it refuses is logged and the
        existing consumer is used)."""
        config = ConsumerConfig(
            durable_name=self.spec.durable,
            filter_subject=self.spec.subject,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self.spec.ack_wait_s,
            # A cap of two batches per replica (the one being stored and the one fetched
            # behind it) keeps redelivery in order: after a crash the server redelivers the
            # unacked batches before anything newer, so they are not pushed past the
            # lateness bound by what came after them.
            max_ack_pending=self.spec.max_ack_pending,
        )
        try:
            await self.js.add_consumer(self.spec.stream, config)
        except BadRequestError as error:
            log.warning("consumer_config_kept", durable=self.spec.durable, error=str(error))
        self._sub = await self.js.pull_subscribe_bind(durable=self.spec.durable, stream=self.spec.stream)

    async def close(self) -> None:
        """Drop the pull subscription (a connection drain would otherwise wait out its open fetch)."""
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    async def pending(self) -> int:
        """Messages not yet delivered plus those delivered and not acked."""
        info = await self.js.consumer_info(self.spec.stream, self.spec.durable)
        return int(info.num_pending or 0) + int(info.num_ack_pending or 0)

    async def run(self, stop: asyncio.Event) -> None:
        """Store batch after batch, in stream order; the next batch is fetched and prepared while
        the current one is being stored (so the consumer needs two batches of ack-pending room)."""
        if self._sub is None:
            await self.ensure()
        assert self._sub is not None
        upcoming = asyncio.create_task(self._next_prepared(self._sub))
        try:
            while not stop.is_set():
                msgs, batch = await upcoming
                upcoming = asyncio.create_task(self._next_prepared(self._sub))
                if not msgs:
                    continue
                if not await self._until_stored(batch, stop):
                    return  # stopping with the batch unstored: it is redelivered later
                for msg in msgs:
                    await msg.ack()
        finally:
            await self._hand_back(upcoming)

    async def _next_prepared(self, sub: JetStreamContext.PullSubscription) -> tuple[list[Msg], Any]:
        msgs = await self._next_batch(sub)
        return msgs, (self.prepare(msgs) if msgs else None)

    @staticmethod
    async def _hand_back(upcoming: asyncio.Task[tuple[list[Msg], Any]]) -> None:
        """Stop the look-ahead fetch; what it already holds is naked, so it comes back at once."""
        if not upcoming.done():
            upcoming.cancel()
        with contextlib.suppress(BaseException):
            msgs, _ = await upcoming
            for msg in msgs:
                await msg.nak()

    async def _next_batch(self, sub: JetStreamContext.PullSubscription) -> list[Msg]:
        """Wait for one message, then take what is already waiting behind it, up to the batch size.

        A single ``fetch(batch)`` long-polls until the whole batch arrives or the timeout
        passes, which at a low rate holds every event for the full timeout. The first
        message says how many more are waiting (``num_pending``); only those are asked for,
        so the second fetch returns as soon as they are delivered (or after 50 ms, when
        another replica took some of them).
        """
        try:  # nats.errors.TimeoutError, or a bare one from a long poll
            first = await sub.fetch(1, timeout=self.spec.fetch_timeout_s)
        except TimeoutError:
            return []
        waiting = min(self.spec.batch_size - 1, first[0].metadata.num_pending)
        if waiting <= 0:
            return first
        try:
            rest = await sub.fetch(waiting, timeout=min(self.spec.fetch_timeout_s, 0.05))
        except TimeoutError:
            rest = []
        return first + rest

    async def _until_stored(self, batch: Any, stop: asyncio.Event) -> bool:
        delay = 0.05
        while True:
            try:
                await self.store(batch)
            except Exception as error:
                self.retrying = True
                self.write_failures.inc()
                log.warning("batch_store_failed", durable=self.spec.durable, error=repr(error), retry_in_s=delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay)
                if stop.is_set():
                    return False
                delay = min(delay * 2, self.spec.retry_max_s)
                continue
            if self.retrying:
                log.info("batch_store_recovered", durable=self.spec.durable)
            self.retrying = False
            return True
