"""The terminal: story lines as they happen, and a compact live panel (rich on a TTY, plain lines otherwise)."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import TextIO

from rich.console import Console
from rich.live import Live
from rich.table import Table

from rtml.demo.stats import Snapshot


@dataclass
class Board:
    """What the live panel shows besides the traffic figures; the story updates it."""

    stage: str = "starting"
    drift: str = "-"
    alerts: list[str] = field(default_factory=list)
    rollout: str = "-"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def traffic_line(snap: Snapshot) -> str:
    """One line of traffic figures.

    >>> traffic_line(Snapshot(40.0, 80.0, 2.5, 9.0, {"v1 stable": 1.0}, 0, 100, 200))
    'predict 40.0/s  events 80.0/s  p50 2.5 ms  p99 9.0 ms  split v1 stable 100%  errors 0'
    """
    split = ", ".join(f"{key} {share:.0%}" for key, share in snap.split.items()) or "-"
    return (
        f"predict {snap.requests_per_s:.1f}/s  events {snap.events_per_s:.1f}/s  "
        f"p50 {_ms(snap.p50_ms)}  p99 {_ms(snap.p99_ms)}  split {split}  errors {snap.errors}"
    )


class LiveView:
    """``say`` prints a story line; ``update`` refreshes the panel (rich Live) or prints a plain line every
    ``plain_every_s``."""

    def __init__(self, *, plain: bool | None = None, out: TextIO | None = None, plain_every_s: float = 5.0) -> None:
        self.out = out or sys.stdout
        self.plain = (not self.out.isatty()) if plain is None else plain
        self.console = Console(file=self.out, force_terminal=not self.plain, highlight=False)
        self.plain_every_s = plain_every_s
        self._live: Live | None = None
        self._last_plain = 0.0
        self.started = time.monotonic()

    def __enter__(self) -> LiveView:
        if not self.plain:
            self._live = Live(Table(), console=self.console, refresh_per_second=4, transient=True)
            self._live.__enter__()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._live is not None:
            self._live.__exit__(kind, error, trace)
            self._live = None

    def elapsed(self) -> str:
        return f"{time.monotonic() - self.started:6.1f}s"

    def say(self, text: str) -> None:
        line = f"[{self.elapsed()}] {text}"
        if self.plain:
            print(line, file=self.out, flush=True)
        else:
            self.console.print(line, markup=False)

    def update(self, snap: Snapshot | None, board: Board) -> None:
        if self.plain:
            now = time.monotonic()
            if snap is None or now - self._last_plain < self.plain_every_s:
                return
            self._last_plain = now
            print(
                f"[{self.elapsed()}]   live: {traffic_line(snap)} | drift {board.drift} | rollout {board.rollout}"
                f" | alerts {len(board.alerts)}",
                file=self.out,
                flush=True,
            )
            return
        if self._live is not None:
            self._live.update(self._panel(snap, board))

    @staticmethod
    def _panel(snap: Snapshot | None, board: Board) -> Table:
        table = Table(title=f"rtml demo - {board.stage}", show_header=False, expand=False, min_width=90)
        table.add_column("what", style="bold")
        table.add_column("value")
        if snap is not None:
            table.add_row("throughput", f"{snap.requests_per_s:.1f} predict/s, {snap.events_per_s:.1f} events/s")
            table.add_row("latency", f"p50 {_ms(snap.p50_ms)}, p99 {_ms(snap.p99_ms)} (last 10 s, client side)")
            table.add_row("traffic split", ", ".join(f"{k} {v:.0%}" for k, v in snap.split.items()) or "-")
            table.add_row("requests", f"{snap.total_requests} answered or failed, {snap.errors} errors")
        table.add_row("drift", board.drift)
        table.add_row("rollout", board.rollout)
        table.add_row("alerts", "\n".join(board.alerts[-4:]) or "none")
        return table
