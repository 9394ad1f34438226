"""``rtml simulate``: publish simulated card traffic (or write it to a file).

Examples::

    rtml simulate --rate 200 --speedup 60 --duration-s 3600   # an hour in a minute, ending now
    rtml simulate --history-hours 6 --sim-rate 5          # replay 6 h ending now, unpaced
    rtml simulate --drift amount_shift@1800 --drift new_pattern@2400
    rtml simulate --count 10000 --out events.jsonl        # no NATS: JSON lines
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from rtml.simulate.publisher import publish
from rtml.simulate.simulator import (
    DRIFTS,
    PATTERNS,
    DriftSwitch,
    Emission,
    SimConfig,
    Simulator,
    scheduled,
)
from shared.bus import connect, provision
from shared.settings import CommonSettings, SettingsError
from shared.subjects import Names


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "simulate",
        help="publish simulated card transactions, fraud and delayed labels",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--rate", type=float, default=200.0, help="target wall-clock transactions per second")
    parser.add_argument("--speedup", type=float, default=60.0, help="simulated seconds per wall second; 0 = unpaced")
    parser.add_argument("--sim-rate", type=float, help="transactions per simulated second (default rate/speedup)")
    parser.add_argument("--start", help="simulated start, ISO 8601 (default now)")
    parser.add_argument("--history-hours", type=float, help="replay this many hours ending now, unpaced")
    parser.add_argument("--duration-s", type=float, help="simulated seconds to run (default: until Ctrl-C)")
    parser.add_argument("--count", type=int, help="stop after this many emissions")
    parser.add_argument("--cards", type=int, default=2000)
    parser.add_argument("--merchants", type=int, default=300)
    parser.add_argument(
        "--fraud-rate", action="append", default=[], metavar="PATTERN=RATE", help=f"one of {', '.join(PATTERNS[:3])}"
    )
    parser.add_argument("--chargeback-delay-s", type=float, default=2 * 86_400.0, help="median, simulated seconds")
    parser.add_argument("--legit-label-delay-s", type=float, default=3 * 86_400.0)
    parser.add_argument("--legit-label-rate", type=float, default=1.0)
    parser.add_argument(
        "--drift",
        action="append",
        default=[],
        metavar="[-]SCENARIO@SECONDS",
        help=f"switch a drift on (or off with '-') after simulated seconds; scenarios: {', '.join(DRIFTS)}",
    )
    parser.add_argument("--id-prefix", default="", help="event id prefix (default s<seed>)")
    parser.add_argument("--out", type=Path, help="write JSON lines here instead of publishing")
    parser.set_defaults(func=run)


def build(args: argparse.Namespace, now_ms: int) -> tuple[SimConfig, list[DriftSwitch], int | None, float]:
    """The simulation's config, drift schedule, end (ms, or None) and speedup, from the arguments."""
    speedup = 0.0 if args.history_hours is not None else args.speedup
    if args.rate <= 0:
        raise ValueError("--rate must be positive")
    sim_rate = args.sim_rate if args.sim_rate is not None else args.rate / (speedup or 60.0)
    if args.history_hours is not None:
        start_ms = now_ms - int(args.history_hours * 3_600_000)
        end_ms: int | None = now_ms
    elif args.start:
        start_ms = int(datetime.fromisoformat(args.start).timestamp() * 1000)
        end_ms = None
    elif speedup > 1 and args.out is None:
        # Compressed time must never run ahead of the wall clock (ingest refuses events from the
        # future): start far enough back that the simulated clock reaches now just as the run ends.
        if args.duration_s is None:
            raise ValueError("with --speedup above 1, give --duration-s (or --start) so simulated time ends at now")
        start_ms = now_ms - int(args.duration_s * 1000 * (1 - 1 / speedup))
        end_ms = None
    else:
        start_ms, end_ms = now_ms, None
    if args.duration_s is not None:
        end_ms = start_ms + int(args.duration_s * 1000)
    defaults = SimConfig()
    rates = dict(defaults.fraud_rates)
    for item in args.fraud_rate:
        name, sep, value = item.partition("=")
        if not sep or name not in PATTERNS:
            raise ValueError(f"--fraud-rate {item!r}: expected PATTERN=RATE with PATTERN one of {', '.join(PATTERNS)}")
        if name == "gift_card_cashout":
            raise ValueError("gift_card_cashout is the new_pattern drift; switch it with --drift new_pattern@SECONDS")
        rates[name] = float(value)
    config = SimConfig(
        seed=args.seed,
        start_ms=start_ms,
        rate_per_s=sim_rate,
        n_cards=args.cards,
        n_merchants=args.merchants,
        fraud_rates=rates,
        chargeback_delay_s=args.chargeback_delay_s,
        legit_label_delay_s=args.legit_label_delay_s,
        legit_label_rate=args.legit_label_rate,
        id_prefix=args.id_prefix,
    )
    return config, [DriftSwitch.parse(text) for text in args.drift], end_ms, speedup


def _stream(sim: Simulator, switches: list[DriftSwitch], end_ms: int | None, count: int | None) -> Iterator[Emission]:
    items: Iterator[Emission] = scheduled(sim, switches)
    if end_ms is not None:
        items = itertools.takewhile(lambda e: e.ts < end_ms, items)
    if count is not None:
        items = itertools.islice(items, count)
    return items


def run(args: argparse.Namespace) -> int:
    try:
        config, switches, end_ms, speedup = build(args, int(time.time() * 1000))
    except ValueError as error:
        print(f"rtml simulate: {error}", file=sys.stderr)
        return 2
    sim = Simulator(config)
    items = _stream(sim, switches, end_ms, args.count)
    if args.out is not None:
        counts = {"transaction": 0, "label": 0}
        with args.out.open("w") as handle:
            for item in items:
                event = item.event()
                counts[event["type"]] += 1
                handle.write(json.dumps(event, separators=(",", ":")) + "\n")
        print(json.dumps({"out": str(args.out), **counts, "episodes": sim.episodes}))
        return 0
    try:
        settings = CommonSettings.from_env(os.environ, service="simulate", default_http_port=0)
    except SettingsError as error:
        print(f"rtml simulate: {error}", file=sys.stderr)
        return 2
    try:
        stats = asyncio.run(_publish(settings, items, speedup))
    except KeyboardInterrupt:
        return 130
    except ConnectionError as error:
        print(f"rtml simulate: {error}", file=sys.stderr)
        return 1
    print(json.dumps({**stats, "episodes": sim.episodes, "fraud_episode_rate": _episode_rate(sim)}))
    return 0


def _episode_rate(sim: Simulator) -> float:
    return round(sum(sim.episodes.values()) / max(sim.arrivals, 1), 5)


async def _publish(settings: CommonSettings, items: Iterator[Emission], speedup: float) -> dict[str, object]:
    names = Names(settings.namespace)
    async with connect(settings.nats_url, name="rtml-simulate") as nc:
        js = nc.jetstream()
        await provision(js, names, replicas=settings.stream_replicas)
        stats = await publish(js, names, items, speedup=speedup)
    return stats.to_dict()
