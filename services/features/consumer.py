"""A durable JetStream pull consumer that acks a batch only once its writes are durable.

A failed write (Redis or Postgres down) is retried with exponential backoff on the
same batch, without acking, until it succeeds or the service stops; nothing is
acked that was not stored, so a crash or a stop loses nothing (JetStream redelivers
after ``ack_wait`` and every write is idempotent).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import nats.errors
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import BadRequestError
from prometheus_client import Counter

from shared.pull import PullPump

log = structlog.get_logger(__name__)

# CPU-bound work on a batch (decoding, acking) hands the event loop back every SLICE messages:
# a store's pipeline leaves the socket only as the loop flushes it, and a store waiting behind a
# 20 ms stretch of decoding leaves Redis idle for those 20 ms.
SLICE = 100

# How often a batch being gathered looks for more messages, and how long it waits, with
# nothing being stored, for messages the stream says are there.
GATHER_POLL_S = 0.002
GATHER_MAX_S = 0.05

# A batch is parsed as its messages arrive, while the batch ahead of it is being stored, so that
# once that store is done this one can go at once (``Batch``: bad messages are counted and left
# out, since redelivering them cannot help); it is then stored until the store succeeds. ``store``
# runs batch after batch in stream order; ``store_unordered`` (optional) starts beside it and may
# still be running while the next batch is stored; a batch is acked once both are done.


class Batch(Protocol):
    """A batch being gathered."""

    async def add(self, msgs: list[Msg]) -> None:
        """Parse messages that arrived, in stream order, into the batch."""

    async def seal(self) -> Any:
        """What the stores take, once every message has been added."""


NewBatch = Callable[[], Batch]
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
        self,
        nc: Client,
        spec: ConsumerSpec,
        new_batch: NewBatch,
        store: Store,
        write_failures: Counter,
        *,
        store_unordered: Store | None = None,
    ) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.spec = spec
        self.new_batch = new_batch
        self.store = store
        self.store_unordered = store_unordered
        self.write_failures = write_failures
        self._pump: PullPump | None = None

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
            # A cap of three batches per replica (the one finishing, the one being stored,
            # the one gathered behind it) keeps redelivery in order: after a crash the server
            # redelivers the unacked batches before anything newer, so they are not pushed
            # past the lateness bound by what came after them.
            max_ack_pending=self.spec.max_ack_pending,
        )
        try:
            await self.js.add_consumer(self.spec.stream, config)
        except BadRequestError as error:
            log.warning("consumer_config_kept", durable=self.spec.durable, error=str(error))
        if self._pump is None:
            self._pump = PullPump(self.nc, self.spec.stream, self.spec.durable, batch=self.spec.batch_size)
            await self._pump.start()

    async def close(self) -> None:
        """Stop pulling; what arrived but was not taken is handed back (nak)."""
        if self._pump is not None:
            await self._pump.stop()
            self._pump = None

    async def pending(self) -> int:
        """Messages not yet delivered plus those delivered and not acked."""
        info = await self.js.consumer_info(self.spec.stream, self.spec.durable)
        return int(info.num_pending or 0) + int(info.num_ack_pending or 0)

    async def run(self, stop: asyncio.Event) -> None:
        """Store batch after batch, in stream order. The next batch is gathered and prepared while
        the current one is stored; batches whose unordered store and then acks are still under way
        ("finishing") may hold up to a batch's worth of messages between them (many small batches
        at a moderate rate, while their offline rows wait to be written together), so a replica
        keeps within three batches of ack-pending room: finishing, being stored, gathered behind.
        With less room than that configured, one batch finishes at a time."""
        if self._pump is None:
            await self.ensure()
        assert self._pump is not None
        idle = asyncio.Event()  # set while no batch is being stored
        idle.set()
        upcoming = asyncio.create_task(self._next_prepared(self._pump, idle))
        finishing: deque[tuple[int, asyncio.Task[None]]] = deque()  # (messages, unordered store then acks)
        finishing_msgs = 0
        room = min(self.spec.max_ack_pending - 2 * self.spec.batch_size, self.spec.batch_size)
        try:
            while not stop.is_set():
                msgs, batch = await upcoming
                idle.clear()
                upcoming = asyncio.create_task(self._next_prepared(self._pump, idle))
                if not msgs:
                    idle.set()
                    continue
                beside = None
                if self.store_unordered is not None:
                    beside = asyncio.create_task(self._until_stored(self.store_unordered, batch, stop))
                if not await self._until_stored(self.store, batch, stop):
                    if beside is not None:
                        await beside
                    return  # stopping with the batch unstored: it is redelivered later
                idle.set()
                while finishing and (finishing[0][1].done() or finishing_msgs + len(msgs) > max(room, 0)):
                    count, task = finishing.popleft()
                    await task
                    finishing_msgs -= count
                finishing.append((len(msgs), asyncio.create_task(_ack_when_stored(msgs, beside))))
                finishing_msgs += len(msgs)
        finally:
            for _, task in finishing:
                await task
            await self._hand_back(upcoming)

    async def _next_prepared(self, pump: PullPump, idle: asyncio.Event) -> tuple[list[Msg], Any]:
        """The next batch, parsed, and what it sealed to. It waits at most the fetch timeout for a
        first message, then keeps taking what arrives up to the batch size while the batch before
        it is still being stored (there is no hurry then, and fuller batches cost less per event)
        or while the stream has more waiting. Each arrival is parsed as it comes, so little is
        left to do once the store ahead is done."""
        try:
            msgs = await pump.next_batch(self.spec.fetch_timeout_s)
        except nats.errors.Error as error:
            log.warning("pull_failed", durable=self.spec.durable, error=str(error) or type(error).__name__)
            await asyncio.sleep(self.spec.fetch_timeout_s)
            return [], None
        if not msgs:
            return [], None
        batch = self.new_batch()
        await batch.add(msgs)
        give_up = time.monotonic() + GATHER_MAX_S
        while len(msgs) < self.spec.batch_size:
            wait_s = GATHER_POLL_S
            if idle.is_set():
                # with nothing being stored, wait only for what the stream already holds (the last
                # message says how much that is), and not longer than GATHER_MAX_S, in case another
                # replica takes it
                if not msgs[-1].metadata.num_pending or time.monotonic() > give_up:
                    break
            else:
                # a store is under way: take what has arrived every GATHER_POLL_S (a few messages
                # parsed at a time, not one), and the moment the store is done
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(idle.wait(), GATHER_POLL_S)
                wait_s = 0
            try:
                arrived = await pump.next_batch(wait_s, limit=self.spec.batch_size - len(msgs))
            except nats.errors.Error:
                break  # what was gathered goes ahead; the next batch's pull reports the failure
            msgs += arrived
            await batch.add(arrived)
        return msgs, await batch.seal()

    @staticmethod
    async def _hand_back(upcoming: asyncio.Task[tuple[list[Msg], Any]]) -> None:
        """Stop the look-ahead fetch; what it already holds is naked, so it comes back at once."""
        if not upcoming.done():
            upcoming.cancel()
        with contextlib.suppress(BaseException):
            msgs, _ = await upcoming
            for msg in msgs:
                await msg.nak()

    async def _until_stored(self, store: Store, batch: Any, stop: asyncio.Event) -> bool:
        """Run ``store`` until it succeeds (True) or the consumer stops while retrying (False)."""
        delay = 0.05
        retried = False
        while True:
            try:
                await store(batch)
            except Exception as error:
                retried = True
                self.write_failures.inc()
                log.warning("batch_store_failed", durable=self.spec.durable, error=repr(error), retry_in_s=delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay)
                if stop.is_set():
                    return False
                delay = min(delay * 2, self.spec.retry_max_s)
                continue
            if retried:
                log.info("batch_store_recovered", durable=self.spec.durable)
            return True


async def _ack_when_stored(msgs: list[Msg], beside: asyncio.Task[bool] | None) -> None:
    """Ack ``msgs`` once their unordered store is done too (not at all if it gave up on a stop)."""
    if beside is not None and not await beside:
        return
    for start in range(0, len(msgs), SLICE):
        for msg in msgs[start : start + SLICE]:
            await msg.ack()
        await asyncio.sleep(0)  # let the loop write out what the store in progress is sending
