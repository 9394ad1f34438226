"""The prediction log: every answer, error and shadow run, published off the hot path in batches.

The hot path only appends a small entry to a bounded in-memory backlog; a worker
turns entries into :class:`~shared.messages.PredictionRecord` messages and publishes
them to ``<ns>.predictions.<model>`` (captured by the ``predictions`` stream), many
per wake-up. A full backlog drops its oldest entry and counts it, rather than
slowing replies.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import structlog
from nats.aio.client import Client

from shared.codec import encode
from shared.messages import PredictionRecord
from shared.subjects import Names

log = structlog.get_logger(__name__)

YIELD_EVERY = 256


@dataclass(slots=True)
class LogEntry:
    id: str
    model: str
    version: int
    variant: str
    entity: str
    score: float | None
    degraded: bool
    latency_us: int
    names: tuple[str, ...] = ()
    row: np.ndarray | None = None
    error_code: int | None = None
    timings_us: dict[str, int] = field(default_factory=dict)
    ts: int = field(default_factory=lambda: int(time.time() * 1000))

    def to_wire(self) -> dict[str, Any]:
        """The :class:`PredictionRecord` wire map, built directly (``dataclasses.asdict`` is slow on the hot loop)."""
        features = {} if self.row is None else dict(zip(self.names, self.row.tolist(), strict=True))
        return {
            "id": self.id, "model": self.model, "version": self.version, "variant": self.variant,
            "entity": self.entity, "ts": self.ts, "score": self.score, "degraded": self.degraded,
            "latency_us": self.latency_us, "features": features, "error_code": self.error_code,
            "timings_us": self.timings_us,
        }  # fmt: skip

    def record(self) -> PredictionRecord:
        features = {} if self.row is None else dict(zip(self.names, map(float, self.row.tolist()), strict=True))
        return PredictionRecord(
            id=self.id, model=self.model, version=self.version, variant=self.variant, entity=self.entity,
            ts=self.ts, score=self.score, degraded=self.degraded, latency_us=self.latency_us,
            features=features, error_code=self.error_code, timings_us=self.timings_us,
        )  # fmt: skip


class PredictionLog:
    def __init__(self, nc: Client, names: Names, *, max_pending: int, on_drop: Callable[[], None]) -> None:
        self._nc = nc
        self._names = names
        self._pending: deque[LogEntry] = deque()
        self._max_pending = max_pending
        self._on_drop = on_drop
        self._wake = asyncio.Event()
        self.published = 0

    def add(self, entry: LogEntry) -> None:
        if len(self._pending) >= self._max_pending:
            self._pending.popleft()
            self._on_drop()
        self._pending.append(entry)
        self._wake.set()

    @property
    def backlog(self) -> int:
        return len(self._pending)

    async def run(self, stop: asyncio.Event) -> None:
        """Publish until ``stop`` is set; what arrives later is published by :meth:`flush`."""
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                waking = asyncio.ensure_future(self._wake.wait())
                await asyncio.wait({waking, stopping}, return_when=asyncio.FIRST_COMPLETED)
                waking.cancel()
                self._wake.clear()
                await self._publish_pending()
        finally:
            stopping.cancel()

    async def _publish_pending(self) -> None:
        count = 0
        while self._pending:
            entry = self._pending.popleft()
            try:
                await self._nc.publish(self._names.predictions(entry.model), encode(entry.to_wire()))
            except Exception as error:
                log.warning("prediction_log_publish_failed", error=str(error))
                self._on_drop()
            count += 1
            if count % YIELD_EVERY == 0:
                await asyncio.sleep(0)  # let replies through between chunks
        self.published += count

    async def flush(self) -> None:
        """Publish everything still pending and flush the connection (on shutdown)."""
        await self._publish_pending()
        if self._nc.is_connected:
            try:
                await self._nc.flush(timeout=2)
            except Exception as error:
                log.warning("prediction_log_flush_failed", error=str(error))
