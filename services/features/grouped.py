"""Group commit: rows handed in by consecutive batches are written together.

At a low or moderate rate the consumer stores many small batches (it takes what has
arrived rather than wait), and each offline write is a transaction of its own: four round
trips and a WAL flush for a few rows, which at a quarter of the sustained rate cost
Postgres more CPU than at full rate. :class:`GroupedWrites` lets a write wait up to
``linger_s`` for company (less when ``max_rows`` are queued), writes everything queued by
then in one go, and tells every caller how their rows fared. A caller returns only once a
write holding its rows has succeeded, and sees that write's error otherwise (its rows are
not kept: the caller retries, as it would a write of its own).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

Row = tuple[Any, ...]
Write = Callable[[list[Row]], Awaitable[None]]


class GroupedWrites:
    def __init__(self, write: Write, *, linger_s: float, max_rows: int) -> None:
        self._write = write
        self.linger_s = linger_s
        self.max_rows = max_rows
        self._queued: list[tuple[Sequence[Row], asyncio.Future[None]]] = []
        self._queued_rows = 0
        self._full = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None

    async def write(self, rows: Sequence[Row]) -> None:
        """Return once ``rows`` are written (with whatever else was queued beside them)."""
        if not rows:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queued.append((rows, done))
        self._queued_rows += len(rows)
        if self._queued_rows >= self.max_rows:
            self._full.set()
        if self._writer is None or self._writer.done():
            # runs while anything is queued, so it needs no stopping: a caller that stops waiting
            # (a service stopping) leaves its rows to be written or to fail on their own
            self._writer = asyncio.create_task(self._write_while_queued())
        await done

    async def _write_while_queued(self) -> None:
        while self._queued:
            if self._queued_rows < self.max_rows:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), timeout=self.linger_s)
            taken, self._queued, self._queued_rows = self._queued, [], 0
            self._full.clear()
            try:
                await self._write([row for rows, _ in taken for row in rows])
            except Exception as error:
                for _, done in taken:
                    if not done.done():
                        done.set_exception(error)
            else:
                for _, done in taken:
                    if not done.done():
                        done.set_result(None)
