"""Publish the simulator's emissions to JetStream at a target rate, in compressed time.

Transactions go to ``<ns>.events.transaction`` and labels to ``<ns>.events.label``,
each with ``Nats-Msg-Id`` set to the event id so a republished event is dropped
by the stream's duplicate window. Publishes are pipelined (``publish_async``)
with a bounded number awaiting their acknowledgement.

Pacing: simulated time runs ``speedup`` times faster than the wall clock from the
first emission on, so with ``speedup=60`` an hour of traffic takes a minute and
its labels, days later in simulated time, arrive minutes later. ``speedup=0``
publishes as fast as the server acknowledges (history replay).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import structlog
from nats.js import JetStreamContext
from nats.js.api import PubAck

from rtml.simulate.simulator import Emission, LabelEvent
from shared.codec import encode
from shared.subjects import Names

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class PublishStats:
    transactions: int = 0
    labels: int = 0
    duplicates: int = 0
    first_ts: int | None = None
    last_ts: int | None = None
    wall_s: float = 0.0

    @property
    def published(self) -> int:
        return self.transactions + self.labels

    def to_dict(self) -> dict[str, object]:
        return {
            "transactions": self.transactions,
            "labels": self.labels,
            "duplicates": self.duplicates,
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
            "wall_s": round(self.wall_s, 3),
            "rate_per_s": round(self.published / self.wall_s, 1) if self.wall_s > 0 else None,
        }


class Pacer:
    """Maps simulated milliseconds to wall-clock seconds: ``wall = t0 + (ts - ts0) / 1000 / speedup``.

    >>> pacer = Pacer(speedup=10.0, clock=lambda: 100.0)
    >>> pacer.due(5_000), pacer.due(15_000)
    (100.0, 101.0)
    """

    def __init__(self, *, speedup: float, clock: Callable[[], float] = time.monotonic) -> None:
        if speedup < 0:
            raise ValueError(f"speedup must be >= 0, got {speedup}")
        self.speedup = speedup
        self._clock = clock
        self._origin: tuple[float, int] | None = None

    def due(self, ts_ms: int) -> float:
        if self._origin is None:
            self._origin = (self._clock(), ts_ms)
        wall0, ts0 = self._origin
        if self.speedup == 0:
            return wall0
        return wall0 + (ts_ms - ts0) / 1000.0 / self.speedup


async def publish(
    js: JetStreamContext,
    names: Names,
    emissions: Iterable[Emission],
    *,
    speedup: float = 0.0,
    max_pending: int = 512,
    stop: asyncio.Event | None = None,
    on_emit: Callable[[Emission], None] | None = None,
) -> PublishStats:
    """Publish every emission (until ``stop`` is set); return what went out.

    Raises the JetStream error of the first publish the server refuses.
    """
    stats = PublishStats()
    pacer = Pacer(speedup=speedup)
    pending: deque[asyncio.Future[PubAck]] = deque()
    subjects = {"transaction": names.events("transaction"), "label": names.events("label")}
    started = time.monotonic()

    async def settle(keep: int) -> None:
        while len(pending) > keep:
            ack = await pending.popleft()
            if ack.duplicate:
                stats.duplicates += 1

    for item in emissions:
        if stop is not None and stop.is_set():
            break
        wait = pacer.due(item.ts) - time.monotonic()
        if wait > 0:
            await settle(0)
            await asyncio.sleep(wait)
        event = item.event()
        future = await js.publish_async(
            subjects[event["type"]], encode(event), headers={"Nats-Msg-Id": event["id"]}, wait_stall=30.0
        )
        pending.append(future)
        if isinstance(item, LabelEvent):
            stats.labels += 1
        else:
            stats.transactions += 1
        stats.first_ts = item.ts if stats.first_ts is None else stats.first_ts
        stats.last_ts = item.ts
        if on_emit is not None:
            on_emit(item)
        await settle(max_pending)
    await settle(0)
    stats.wall_s = time.monotonic() - started
    log.info("simulate_published", **stats.to_dict())
    return stats
