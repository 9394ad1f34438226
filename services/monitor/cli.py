"""``rtml monitor ...``: build and store a reference profile, list alerts, ask for a rollout summary.

``profile`` reads a training set (Parquet or CSV), builds the version's reference
profile and stores it in Postgres (``RTML_DATABASE_URL``, schema = namespace).
``alerts`` reads the alerts table; ``summary`` asks the running monitor over NATS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from services.monitor.alerts import list_alerts
from services.monitor.profiles import build_reference_profile, ensure_profile_table, store_profile
from services.monitor.settings import DEFAULT_HTTP_PORT, SERVICE
from shared.bus import connect, request
from shared.db import open_pool
from shared.errors import ServiceError
from shared.settings import CommonSettings, SettingsError


def _common() -> CommonSettings:
    return CommonSettings.from_env(os.environ, service=SERVICE, default_http_port=DEFAULT_HTTP_PORT)


def read_table(path: Path) -> dict[str, list[Any]]:
    """A Parquet or CSV file as columns."""
    if path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        return dict(pq.read_table(path).to_pydict())
    if path.suffix.lower() == ".csv":
        import pyarrow.csv as pcsv

        return dict(pcsv.read_csv(path).to_pydict())
    raise ValueError(f"{path}: expected a .parquet or .csv file")


async def _profile(args: argparse.Namespace) -> int:
    columns = read_table(Path(args.data))
    scores = columns.pop(args.score_column) if args.score_column else None
    labels = columns.pop(args.label_column) if args.label_column else None
    if args.features:
        wanted = [name for name in args.features.split(",") if name]
        missing = [name for name in wanted if name not in columns]
        if missing:
            raise ValueError(f"columns not in {args.data}: {missing}")
        columns = {name: columns[name] for name in wanted}
    profile = build_reference_profile(
        model=args.model, version=args.version, features=columns, scores=scores, labels=labels,
        categorical=[c for c in (args.categorical or "").split(",") if c], threshold=args.threshold,
    )  # fmt: skip
    common = _common()
    async with open_pool(common.database_url, schema=common.namespace) as pool:
        await ensure_profile_table(pool)
        await store_profile(pool, profile)
    print(json.dumps({"model": profile.model, "version": profile.version, "features": list(profile.features),
                      "metrics": profile.metrics}, indent=2))  # fmt: skip
    return 0


async def _alerts(args: argparse.Namespace) -> int:
    common = _common()
    async with open_pool(common.database_url, schema=common.namespace) as pool:
        try:
            rows = await list_alerts(pool, open_only=args.open, model=args.model)
        except Exception as error:  # the table does not exist until the monitor first ran
            if "monitor_alerts" not in str(error):
                raise
            rows = []
    print(json.dumps(rows, indent=2, default=str))
    return 0


async def _summary(args: argparse.Namespace) -> int:
    common = _common()
    body = {"model": args.model, "stable": args.stable, "candidate": args.candidate, "window_s": args.window_s}
    async with connect(common.nats_url, name="rtml-cli-monitor") as nc:
        reply = await request(nc, f"{common.namespace}.monitor.summary", body, timeout_s=5.0)
    print(json.dumps(reply, indent=2))
    return 0


def _run(coroutine: Any) -> Any:
    def command(args: argparse.Namespace) -> int:
        try:
            return int(asyncio.run(coroutine(args)))
        except (SettingsError, ValueError, OSError, ServiceError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 1

    return command


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("monitor", help="reference profiles, alerts and summaries of the monitor")
    commands = parser.add_subparsers(dest="monitor_command", required=True)

    profile = commands.add_parser("profile", help="build a version's reference profile from its training set")
    profile.add_argument("--model", required=True)
    profile.add_argument("--version", type=int, required=True)
    profile.add_argument("--data", required=True, help="training set, .parquet or .csv")
    profile.add_argument("--features", help="comma-separated feature columns (default: all but score/label)")
    profile.add_argument("--categorical", help="comma-separated categorical columns")
    profile.add_argument("--score-column", help="column holding the model's training scores")
    profile.add_argument("--label-column", help="column holding the labels (with scores: training metrics)")
    profile.add_argument("--threshold", type=float, default=0.5)
    profile.set_defaults(func=_run(_profile))

    alerts = commands.add_parser("alerts", help="list alerts, newest first")
    alerts.add_argument("--open", action="store_true", help="only open alerts")
    alerts.add_argument("--model")
    alerts.set_defaults(func=_run(_alerts))

    summary = commands.add_parser("summary", help="the rollout summary of a model over a window")
    summary.add_argument("--model", required=True)
    summary.add_argument("--stable", type=int, required=True)
    summary.add_argument("--candidate", type=int, required=True)
    summary.add_argument("--window-s", type=float, default=300.0)
    summary.set_defaults(func=_run(_summary))
