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

# A batch is parsed as its messages arrive, while the batches ahead of it are being stored, so that
# once there is room this one can go at once (``Batch``: bad messages are counted and left out,
# since redelivering them cannot help); it is then stored until the store succeeds. ``store`` is
# started batch after batch in stream order, up to ``stores_in_flight`` at a time (a store that
# keeps its own order, as the features writer's pipelines on one Redis connection do, lets the next
# batch be on its way while one runs); a store that fails goes again only once those before it have
# succeeded, so retries keep the order too. ``store_unordered`` (optional) starts beside it and may
# still be running while later batches are stored; a batch is acked once both are done.


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
    stores_in_flight: int = 1
    # how long a batch waits after its first message for company even where a store could start at
    # once (as a Kafka producer's linger.ms): below full load a batch is otherwise the few messages
    # that arrived since the last one left, and each batch costs the replica and Redis a fixed share
    # (its tasks, script calls, pipeline and acks) that such batches pay for a handful of events
    linger_s: float = 0.0


@dataclass(slots=True)
class _Storing:
    """A batch whose store has started: its messages, its unordered store, its store, and whether
    that store has failed (and is being retried)."""

    msgs: list[Msg]
    beside: asyncio.Task[bool] | None
    store: asyncio.Task[bool]
    failed: asyncio.Event


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
            # A cap of the batches one replica holds (finishing, being stored, gathered behind)
            # keeps redelivery in order: after a crash the server redelivers the unacked batches
            # before anything newer, so they are not pushed past the lateness bound by what came
            # after them.
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
        """Store batch after batch, in stream order, up to ``stores_in_flight`` at a time. The next
        batch is gathered and prepared while those ahead are stored; batches whose unordered store
        and then acks are still under way ("finishing") may hold up to a batch's worth of messages
        between them (many small batches at a moderate rate, while their offline rows wait to be
        written together), so a replica keeps within ``stores_in_flight + 2`` batches of
        ack-pending room: finishing, being stored, gathered behind. With less room than that
        configured, one batch finishes at a time."""
        if self._pump is None:
            await self.ensure()
        pump = self._pump
        assert pump is not None
        most = self.spec.stores_in_flight
        room = asyncio.Event()  # set while another store may start
        room.set()
        upcoming = asyncio.create_task(self._next_prepared(pump, room))
        storing: deque[_Storing] = deque()  # stream order
        finishing: deque[tuple[int, asyncio.Task[None]]] = deque()  # (messages, unordered store then acks)
        finishing_msgs = 0
        finishing_room = min(self.spec.max_ack_pending - (most + 1) * self.spec.batch_size, self.spec.batch_size)

        async def finish(stored: _Storing) -> None:
            """Ack the stored batch once its unordered store is done, within the finishing room."""
            nonlocal finishing_msgs
            count = len(stored.msgs)
            while finishing and (finishing[0][1].done() or finishing_msgs + count > max(finishing_room, 0)):
                done_count, task = finishing.popleft()
                await task
                finishing_msgs -= done_count
            finishing.append((count, asyncio.create_task(_ack_when_stored(stored.msgs, stored.beside))))
            finishing_msgs += count

        try:
            while not stop.is_set():
                msgs, batch = await upcoming
                while storing and (storing[0].store.done() or len(storing) >= most):
                    stored = storing.popleft()
                    if not await stored.store:
                        if stored.beside is not None:
                            await stored.beside
                        return  # stopping with the batch unstored: it is redelivered later
                    await finish(stored)
                if msgs:
                    beside = None
                    if self.store_unordered is not None:
                        beside = asyncio.create_task(self._until_stored(self.store_unordered, batch, stop))
                    # tasks start in the order they are made, so this store reaches its connection
                    # after the ones before it (the writer's pipeline keeps that order)
                    after = storing[-1] if storing else None
                    failed = asyncio.Event()
                    store = asyncio.create_task(self._until_stored(self.store, batch, stop, after=after, failed=failed))
                    store.add_done_callback(lambda _: room.set())
                    storing.append(_Storing(msgs, beside, store, failed))
                if len(storing) < most:
                    room.set()
                else:
                    room.clear()
                upcoming = asyncio.create_task(self._next_prepared(pump, room))
        finally:
            for stored in storing:
                if await stored.store:
                    await finish(stored)
                elif stored.beside is not None:
                    await stored.beside
            for _, task in finishing:
                await task
            await self._hand_back(pump, upcoming)

    async def _next_prepared(self, pump: PullPump, room: asyncio.Event) -> tuple[list[Msg], Any]:
        """The next batch, parsed, and what it sealed to. It waits at most the fetch timeout for a
        first message, then keeps taking what arrives up to the batch size for the linger after it,
        while there is no room for another store (there is no hurry then, and fuller batches cost
        less per event) or while the stream has more waiting. Each arrival is parsed as it comes, so
        little is left to do once there is room."""
        try:
            msgs = await pump.next_batch(self.spec.fetch_timeout_s)
        except nats.errors.Error as error:
            log.warning("pull_failed", durable=self.spec.durable, error=str(error) or type(error).__name__)
            await asyncio.sleep(self.spec.fetch_timeout_s)
            return [], None
        if not msgs:
            return [], None
        try:
            return msgs, await self._gather(pump, room, msgs)
        except asyncio.CancelledError:
            # stopped midway (the service stopping): what was taken comes back soon, not after the
            # ack wait
            await pump.hand_back(msgs)
            raise

    async def _gather(self, pump: PullPump, room: asyncio.Event, msgs: list[Msg]) -> Any:
        """Parse ``msgs`` and what follows them into a batch (``msgs`` grows in place); what it sealed to."""
        lingers_until = time.monotonic() + self.spec.linger_s
        batch = self.new_batch()
        await batch.add(msgs)
        give_up = time.monotonic() + GATHER_MAX_S
        while len(msgs) < self.spec.batch_size:
            wait_s = GATHER_POLL_S
            if room.is_set():
                lingering_s = lingers_until - time.monotonic()
                if lingering_s > 0:
                    # take what arrives meanwhile every GATHER_POLL_S, as below
                    await asyncio.sleep(min(lingering_s, GATHER_POLL_S))
                    wait_s = 0
                elif not msgs[-1].metadata.num_pending or time.monotonic() > give_up:
                    # with room for a store, wait only for what the stream already holds (the last
                    # message says how much that is), and not longer than GATHER_MAX_S, in case
                    # another replica takes it
                    break
            else:
                # no room: take what has arrived every GATHER_POLL_S (a few messages parsed at a
                # time, not one), and the moment a store is done
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(room.wait(), GATHER_POLL_S)
                wait_s = 0
            try:
                arrived = await pump.next_batch(wait_s, limit=self.spec.batch_size - len(msgs))
            except nats.errors.Error:
                break  # what was gathered goes ahead; the next batch's pull reports the failure
            msgs += arrived
            await batch.add(arrived)
        return await batch.seal()

    @staticmethod
    async def _hand_back(pump: PullPump, upcoming: asyncio.Task[tuple[list[Msg], Any]]) -> None:
        """Stop the look-ahead fetch; what it already holds is handed back, so it comes back soon."""
        if not upcoming.done() and not upcoming.cancelling():
            # (a cancelled run has cancelled it already: once more would cut its hand-back short)
            upcoming.cancel()
        with contextlib.suppress(BaseException):
            msgs, _ = await upcoming
            await pump.hand_back(msgs)

    async def _until_stored(
        self,
        store: Store,
        batch: Any,
        stop: asyncio.Event,
        *,
        after: _Storing | None = None,
        failed: asyncio.Event | None = None,
    ) -> bool:
        """Run ``store`` until it succeeds (True) or the consumer stops while retrying (False).

        With ``after`` (the batch before, still being stored), an attempt waits for that store to
        be done once it has failed: a retry never overtakes it, and neither does a first attempt
        made while it is being retried. ``failed`` is set at this store's first failure."""
        delay = 0.05
        retried = False
        while True:
            if after is not None and after.failed.is_set():
                await after.store  # the batch before goes again (or gives up) first: stream order holds
                after = None
                if stop.is_set():
                    return False
            try:
                await store(batch)
            except Exception as error:
                retried = True
                if failed is not None:
                    failed.set()
                self.write_failures.inc()
                log.warning("batch_store_failed", durable=self.spec.durable, error=repr(error), retry_in_s=delay)
                if after is not None:
                    await after.store  # see above
                    after = None
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
