"""``rtml train``: fit a model on a point-in-time export and register it as a new version.

Examples::

    rtml features export --view card_velocity --start 2026-01-01 --end 2026-01-08 --out velocity.parquet
    rtml features export --view card_amount --start 2026-01-01 --end 2026-01-08 --out amount.parquet
    rtml train --model fraud --export card_velocity=velocity.parquet --export card_amount=amount.parquet
    rtml train --export training.csv --kind logreg --no-register --out fraud.onnx
    rtml train --export training.csv --rollout-url http://127.0.0.1:8105   # through the rollout API
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

from rtml.train import registration
from rtml.train.dataset import DatasetError, Source
from rtml.train.model import KINDS, ExportMismatch
from rtml.train.pipeline import TrainConfig, train
from shared.cli_args import parse_time_ms
from shared.errors import ServiceError
from shared.settings import CommonSettings, SettingsError


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "train",
        help="train a model on a features export, export it to ONNX and register it",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", default="fraud")
    parser.add_argument(
        "--export",
        type=Source.parse,
        action="append",
        required=True,
        metavar="[VIEW=]PATH",
        help="point-in-time export (.csv or .parquet), e.g. from `rtml features export`; with VIEW= its columns are "
        "that view's online features; repeat to join several views on the event id",
    )
    parser.add_argument("--since", type=parse_time_ms, help="first event time included (ISO 8601 or epoch ms)")
    parser.add_argument("--until", type=parse_time_ms, help="event times before this are included")
    parser.add_argument("--kind", choices=KINDS, default="mlp")
    parser.add_argument("--holdout", type=float, default=0.2, help="latest share of rows held out (by time)")
    parser.add_argument("--threshold", type=float, help="decision threshold (default: best F1 on training rows)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--feature", action="append", default=[], help="feature column (repeat; default: all)")
    parser.add_argument(
        "--entity-from", action="append", default=[], metavar="VIEW=FIELD", help="request field keying an online view"
    )
    parser.add_argument("--description", default="")
    parser.add_argument("--out", type=Path, help="also write the ONNX file here")
    parser.add_argument("--no-register", action="store_true", help="train and evaluate only")
    parser.add_argument("--rollout-url", help="register through the rollout REST API instead of the registry directly")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        settings = CommonSettings.from_env(os.environ, service="train", default_http_port=0)
        entity_from = dict(item.partition("=")[::2] for item in args.entity_from)
        if any(not view or not name for view, name in entity_from.items()):
            raise ValueError("--entity-from takes VIEW=FIELD")
        config = TrainConfig(
            export=tuple(args.export),
            model=args.model,
            kind=args.kind,
            since_ms=args.since,
            until_ms=args.until,
            holdout_fraction=args.holdout,
            threshold=args.threshold,
            seed=args.seed,
            features=tuple(args.feature),
            entity_from=entity_from,
            description=args.description,
        )
        result = train(config)
    except (SettingsError, DatasetError, ExportMismatch, ValueError) as error:
        print(f"rtml train: {error}", file=sys.stderr)
        return 2
    if args.out is not None:
        args.out.write_bytes(result.artifact)
    summary: dict[str, object] = {
        "model": args.model,
        "sha256": result.sha256,
        "train_rows": result.train_rows,
        "holdout_rows": result.holdout_rows,
        "threshold": result.metadata.threshold,
        "holdout": result.holdout,
        "max_onnx_error": result.max_onnx_error,
    }
    if not args.no_register:
        try:
            if args.rollout_url:
                body = asyncio.run(
                    registration.register_via_rollout(args.rollout_url, settings.admin_token, args.model, result)
                )
                summary["version"] = body.get("version")
            else:
                summary["version"] = asyncio.run(registration.register(settings, args.model, result)).version
        except (ServiceError, ConnectionError, RuntimeError, OSError) as error:
            print(f"rtml train: registration failed: {error}", file=sys.stderr)
            print(json.dumps(summary))
            return 1
    print(json.dumps(summary))
    return 0
