"""``rtml features export|backfill``: training sets and online rebuilds from the offline log."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

from services.features import offline
from services.features.backfill import backfill
from services.features.catalog import load_views
from services.features.export import build_training_set, write_training_set
from services.features.settings import FeaturesSettings
from services.features.views import FeatureView, ViewError
from shared.cli_args import parse_time_ms
from shared.db import open_pool
from shared.online import open_redis
from shared.settings import SettingsError
from shared.subjects import Names


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("features", help="feature store: training sets and backfills")
    commands = parser.add_subparsers(dest="features_command", required=True)
    export = commands.add_parser("export", help="point-in-time correct training set for labelled events")
    export.add_argument("--view", required=True)
    export.add_argument("--labels", default="label", help="label type (the <type> of <ns>.labels.<type>)")
    export.add_argument("--start", required=True, type=parse_time_ms, help="epoch ms or ISO time (inclusive)")
    export.add_argument("--end", required=True, type=parse_time_ms, help="epoch ms or ISO time (exclusive)")
    export.add_argument("--out", required=True, type=Path, help="file.parquet or file.csv")
    export.set_defaults(func=run_export)
    refill = commands.add_parser("backfill", help="rebuild a view's online state from the offline log")
    refill.add_argument("--view", required=True)
    refill.set_defaults(func=run_backfill)


def _context(view_name: str) -> tuple[FeaturesSettings, FeatureView]:
    settings = FeaturesSettings.from_env(os.environ)
    views = load_views(settings.views_path)
    if view_name not in views:
        raise ViewError(f"unknown view {view_name!r}; known: {', '.join(sorted(views))}")
    return settings, views[view_name]


def run_export(args: argparse.Namespace) -> int:
    try:
        settings, view = _context(args.view)
        if args.out.suffix.lower() not in (".parquet", ".csv"):
            raise ViewError(f"--out must end in .parquet or .csv, got {args.out.name!r}")
        if args.end <= args.start:
            raise ViewError("--end must be after --start")
    except (SettingsError, ViewError) as error:
        print(f"rtml features export: {error}", file=sys.stderr)
        return 2

    async def go() -> int:
        names = Names(settings.common.namespace)
        async with open_pool(settings.common.database_url, schema=names.schema) as pool:
            await offline.ensure_tables(pool)
            started = time.perf_counter()
            training = await build_training_set(
                pool, view, label_type=args.labels, start_ms=args.start, end_ms=args.end
            )
            write_training_set(training, args.out)
            elapsed = time.perf_counter() - started
        print(f"wrote {len(training.rows)} rows x {len(training.columns)} columns to {args.out} in {elapsed:.2f} s")
        return 0

    return asyncio.run(go())


def run_backfill(args: argparse.Namespace) -> int:
    try:
        settings, view = _context(args.view)
    except (SettingsError, ViewError) as error:
        print(f"rtml features backfill: {error}", file=sys.stderr)
        return 2

    async def go() -> int:
        names = Names(settings.common.namespace)
        async with (
            open_pool(settings.common.database_url, schema=names.schema) as pool,
            open_redis(settings.common.redis_url) as client,
        ):
            await offline.ensure_tables(pool)
            try:
                await offline.register_views(pool, [view])
            except offline.ViewConflict as error:
                print(f"rtml features backfill: {error}", file=sys.stderr)
                return 2
            report = await backfill(client, pool, names, view)
        print(
            f"view {view.name} v{view.version}: replayed {report.events} events,"
            f" applied {report.applied}, duplicates {report.duplicate}, late {report.late}"
        )
        return 0

    return asyncio.run(go())
