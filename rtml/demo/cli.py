"""``rtml demo``: the whole platform on one machine, on a simulated card-fraud stream, in a few minutes.

It starts NATS, Redis and PostgreSQL where none answer, runs the five services in a
fresh namespace, replays simulated history, trains and rolls models out while live
traffic runs, and ends with a table of what it measured. Everything it started is
stopped and its namespace removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from rtml.demo.story import DemoConfig, Story, StoryFailed, run
from rtml.demo.view import LiveView
from rtml.discovery import PROJECT_ROOT
from shared.settings import SettingsError


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "demo", help="the whole platform end to end on a simulated fraud stream", description=__doc__
    )
    parser.add_argument("--home", type=Path, default=PROJECT_ROOT / ".rtml", help="logs, exports, started servers")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--speedup", type=float, default=40.0, help="simulated seconds per wall second, live")
    parser.add_argument("--plain", action="store_true", help="plain lines instead of the live panel")
    parser.set_defaults(func=main)


def render_summary(story: Story, *, plain: bool) -> str:
    """The summary table as text (box-drawn on a terminal, plain columns otherwise).

    >>> story = Story()
    >>> story.add("train v1", "v1 stable", "AUC 0.9")
    >>> print(render_summary(story, plain=True))
    stage     outcome    measured
    --------  ---------  --------
    train v1  v1 stable  AUC 0.9
    """
    if plain:
        header = ("stage", "outcome", "measured")
        rows = [header, *((r.stage, r.outcome, r.figures) for r in story.rows)]
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)
    table = Table(title="rtml demo: what was measured")
    for name in ("stage", "outcome", "measured"):
        table.add_column(name)
    for row in story.rows:
        table.add_row(row.stage, row.outcome, row.figures)
    console = Console(width=160, force_terminal=True, highlight=False)
    with console.capture() as capture:
        console.print(table)
    return capture.get()


def main(args: argparse.Namespace) -> int:
    config = DemoConfig(home=args.home, seed=args.seed, speedup=args.speedup, plain=True if args.plain else None)
    started = time.monotonic()
    failure: str | None = None
    story = Story()
    with LiveView(plain=config.plain) as view:
        try:
            asyncio.run(run(config, view, story))
        except (StoryFailed, TimeoutError, SettingsError, RuntimeError, ConnectionError, OSError) as error:
            failure = f"{type(error).__name__}: {error}"
        except KeyboardInterrupt:
            print("rtml demo: interrupted", file=sys.stderr)
            return 130
    print(render_summary(story, plain=view.plain), flush=True)
    took = time.monotonic() - started
    if story.log_file is not None:
        print(f"service logs: {story.log_file}")
    if failure is not None or not story.complete:
        print(f"rtml demo: FAILED after {took:.0f}s: {failure or 'a stage did not happen'}", file=sys.stderr)
        return 1
    print(f"rtml demo: drift alert raised, v2 promoted, v3 rolled back; done in {took:.0f}s")
    return 0
