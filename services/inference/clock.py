"""Time for the batcher: the event loop's clock, or a fake one tests move by hand."""

from __future__ import annotations

import asyncio
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Monotonic seconds."""

    async def wait(self, event: asyncio.Event, until: float | None) -> None:
        """Return once ``event`` is set or the clock reaches ``until`` (never, when ``None``)."""


class LoopClock:
    """The running loop's monotonic clock; a timed wait is one ``call_at`` timer, not a polling sleep."""

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def wait(self, event: asyncio.Event, until: float | None) -> None:
        if until is None:
            await event.wait()
            return
        handle = asyncio.get_running_loop().call_at(until, event.set)
        try:
            await event.wait()
        finally:
            handle.cancel()


class FakeClock:
    """A clock that moves only when :meth:`advance` is called; timed waits wake when it passes them."""

    def __init__(self, start: float = 0.0) -> None:
        self.time = start
        self._waiters: list[tuple[float, asyncio.Event]] = []

    def now(self) -> float:
        return self.time

    async def wait(self, event: asyncio.Event, until: float | None) -> None:
        if until is not None and until <= self.time:
            return
        waiter = (until, event) if until is not None else None
        if waiter is not None:
            self._waiters.append(waiter)
        try:
            await event.wait()
        finally:
            if waiter is not None:
                self._waiters.remove(waiter)

    def advance(self, seconds: float) -> None:
        self.time += seconds
        for until, event in list(self._waiters):
            if until <= self.time:
                event.set()
