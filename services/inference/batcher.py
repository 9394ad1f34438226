"""The dynamic batcher: bounded queue in, one controller deciding when, batches out.

Inbound, :meth:`Batcher.submit` queues a request with its deadline and returns a
future at once, or refuses it at once: 429 when the queue is full or when the
queue ahead of it, at the measured cost of a batch, would take it past its
deadline (admission control: under a burst excess load is shed quickly instead of
timing out), 504 when its deadline has already passed. One controller task, woken by events (a new request,
a finished batch, or a single timer for the next delay or deadline; never a
polling sleep), releases a batch when the queue fills ``max_batch_size`` or the
largest preferred size, or when the oldest request has waited ``max_queue_delay``
(adaptive policies: at most a batch's measured cost, and not at all while no batch runs).
Batches are taken in earliest-deadline-first order; a request whose deadline
passes while queued is answered 504 without running. Outbound, each batch runs as
its own task (up to ``max_concurrent_batches`` at once) and resolves its
requests' futures; a batch that fails fails only its own requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import structlog

from services.inference.clock import Clock, LoopClock
from services.inference.policy import BatchPolicy
from shared.errors import DeadlineExceeded, Overloaded, ServiceError, Unavailable

log = structlog.get_logger(__name__)

T = TypeVar("T")
R = TypeVar("R")

RunBatch = Callable[[list[T]], Awaitable[Sequence[R]]]
BatchObserver = Callable[[int, float], None]  # (batch size, seconds it ran)

COST_EWMA_ALPHA = 0.2


@dataclass(eq=False, slots=True)
class _Item(Generic[T, R]):
    deadline: float
    seq: int
    arrival: float
    payload: T
    future: asyncio.Future[R]
    taken: bool = False

    def __lt__(self, other: _Item[T, R]) -> bool:
        return (self.deadline, self.seq) < (other.deadline, other.seq)


@dataclass(slots=True)
class BatcherStats:
    batches: int = 0
    rows: int = 0
    expired: int = 0
    shed: int = 0
    failed_batches: int = 0
    sizes: list[int] = field(default_factory=list)


class Batcher(Generic[T, R]):
    """Groups single requests into batches for ``run`` under ``policy``.

    ``run`` takes the payloads of one batch, in deadline order, and returns one result
    per payload in the same order.
    """

    def __init__(
        self,
        run: RunBatch[T, R],
        policy: BatchPolicy,
        *,
        clock: Clock | None = None,
        observer: BatchObserver | None = None,
        name: str = "batcher",
        keep_sizes: bool = False,
    ) -> None:
        self.policy = policy
        self.name = name
        self.stats = BatcherStats()
        self._run_batch = run
        self._clock: Clock = clock or LoopClock()
        self._observer = observer
        self._keep_sizes = keep_sizes
        self._heap: list[_Item[T, R]] = []
        self._arrivals: deque[_Item[T, R]] = deque()
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._running: set[asyncio.Task[None]] = set()
        self._controller: asyncio.Task[None] | None = None
        self._closed = False
        self._draining = False
        self.batch_cost_s: float | None = None

    # Inbound --------------------------------------------------------------
    @property
    def depth(self) -> int:
        """Requests queued and not yet in a batch."""
        return len(self._heap)

    @property
    def in_flight_batches(self) -> int:
        return len(self._running)

    def expected_wait_s(self) -> float | None:
        """Time until a request queued now would have run, from the measured batch cost; ``None`` before any.

        The queue ahead drains ``max_batch_size`` rows per batch and ``max_concurrent_batches``
        batches at a time, so a new request waits for its share of those batches and its own.
        """
        if self.batch_cost_s is None:
            return None
        batches = len(self._heap) // self.policy.max_batch_size + 1
        rounds = -(-batches // self.policy.max_concurrent_batches)
        return rounds * self.batch_cost_s

    def start(self) -> None:
        if self._controller is None:
            self._controller = asyncio.create_task(self._control(), name=f"{self.name}:controller")

    def submit(self, payload: T, deadline: float | None = None) -> asyncio.Future[R]:
        """Queue ``payload``; its future resolves with its result. Raises 429, 503 or 504 at once."""
        if self._closed:
            raise Unavailable(f"{self.name} is shutting down")
        now = self._clock.now()
        if deadline is None:
            deadline = now + self.policy.default_timeout_ms / 1000.0
        if deadline <= now:
            self.stats.expired += 1
            raise DeadlineExceeded("deadline passed before the request was queued")
        if len(self._heap) >= self.policy.max_queue_size:
            self.stats.shed += 1
            raise Overloaded(f"{self.name}: queue full ({self.policy.max_queue_size} requests waiting)")
        wait_s = self.expected_wait_s()
        if wait_s is not None and now + wait_s > deadline:
            # Shed now rather than queue work that would only be answered 504 later:
            # under a burst the caller learns at once and can back off or go elsewhere.
            self.stats.shed += 1
            raise Overloaded(
                f"{self.name}: {len(self._heap)} queued requests need ~{wait_s * 1000:.1f} ms, past this deadline"
            )
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        item = _Item(deadline, next(self._seq), now, payload, future)
        heapq.heappush(self._heap, item)
        self._arrivals.append(item)
        self._wake.set()
        return future

    # Controller -----------------------------------------------------------
    def _delay(self) -> float:
        delay = self.policy.max_queue_delay_s
        if self.policy.adaptive and self.batch_cost_s is not None:
            delay = min(delay, self.batch_cost_s)
        return delay

    def _oldest_arrival(self) -> float:
        while self._arrivals[0].taken:
            self._arrivals.popleft()
        return self._arrivals[0].arrival

    def _pop(self) -> _Item[T, R]:
        item = heapq.heappop(self._heap)
        item.taken = True
        return item

    def _expire(self, now: float) -> None:
        while self._heap and self._heap[0].deadline <= now:
            item = self._pop()
            self.stats.expired += 1
            if not item.future.done():
                item.future.set_exception(DeadlineExceeded("deadline passed while the request was queued"))

    async def _control(self) -> None:
        while True:
            self._wake.clear()
            now = self._clock.now()
            self._expire(now)
            if not self._heap:
                if self._closed:
                    return
                await self._clock.wait(self._wake, None)
                continue
            until = self._heap[0].deadline
            if len(self._running) < self.policy.max_concurrent_batches:
                size = self.policy.release_size(len(self._heap))
                release_at = self._oldest_arrival() + self._delay()
                # adaptive: with no batch running, waiting for company buys nothing (the requests
                # that arrive meanwhile form the next batch), so the queue goes at once
                idle = self.policy.adaptive and not self._running
                if size == 0 and (now >= release_at or idle or self._closed or self._draining):
                    size = min(len(self._heap), self.policy.max_batch_size)
                if size:
                    self._launch([self._pop() for _ in range(size)])
                    continue
                until = min(until, release_at)
            await self._clock.wait(self._wake, until)

    # Outbound -------------------------------------------------------------
    def _launch(self, items: list[_Item[T, R]]) -> None:
        live = [item for item in items if not item.future.done()]
        if not live:
            return
        task = asyncio.create_task(self._run(live), name=f"{self.name}:batch")
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run(self, items: list[_Item[T, R]]) -> None:
        started = self._clock.now()
        try:
            results = await self._run_batch([item.payload for item in items])
            if len(results) != len(items):
                raise ServiceError(500, f"model returned {len(results)} results for a batch of {len(items)}")
        except Exception as error:
            self.stats.failed_batches += 1
            log.warning("batch_failed", batcher=self.name, size=len(items), error=str(error))
            for item in items:
                if not item.future.done():
                    item.future.set_exception(error)
        else:
            for item, result in zip(items, results, strict=True):
                if not item.future.done():
                    item.future.set_result(result)
        finally:
            cost = self._clock.now() - started
            self.batch_cost_s = (
                cost
                if self.batch_cost_s is None
                else (1 - COST_EWMA_ALPHA) * self.batch_cost_s + COST_EWMA_ALPHA * cost
            )
            self.stats.batches += 1
            self.stats.rows += len(items)
            if self._keep_sizes:
                self.stats.sizes.append(len(items))
            if self._observer is not None:
                self._observer(len(items), cost)
            # Free the slot before waking the controller (a done-callback would run too late).
            current = asyncio.current_task()
            if current is not None:
                self._running.discard(current)
            self._wake.set()

    # Shutdown -------------------------------------------------------------
    def drain(self) -> None:
        """Keep taking requests but stop waiting for company: every batch goes as soon as a slot is free."""
        self._draining = True
        self._wake.set()

    async def close(self, timeout_s: float | None = None) -> None:
        """Take no more requests; run every queued one now; wait for all batches.

        What is still queued or running after ``timeout_s`` fails with a 503.
        """
        self._closed = True
        self._wake.set()
        pending: set[asyncio.Task[None]] = set(self._running)
        if self._controller is not None:
            pending.add(self._controller)
        try:
            async with asyncio.timeout(timeout_s):
                if self._controller is not None:
                    await asyncio.shield(self._controller)
                while self._running:
                    await asyncio.wait(set(self._running))
        except TimeoutError:
            log.warning("batcher_close_timed_out", batcher=self.name, queued=len(self._heap))
        self.abort("shutting down")

    def abort(self, reason: str) -> None:
        """Fail every queued request with a 503 and cancel the controller and running batches."""
        self._closed = True
        while self._heap:
            item = self._pop()
            if not item.future.done():
                item.future.set_exception(Unavailable(f"{self.name}: {reason}"))
        for task in [*self._running, *([self._controller] if self._controller else [])]:
            task.cancel()
        self._wake.set()

    async def wait_closed(self) -> None:
        tasks = [*self._running, *([self._controller] if self._controller else [])]
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
