"""``rtml dlq ls|show|replay``: inspect dead letters and re-publish them after a fix."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
from datetime import UTC, datetime
from typing import Any

import msgpack
import nats.errors
import structlog
from nats.js.errors import NotFoundError

from services.ingest.dlq import DeadLetter
from services.ingest.replay import get_letter, list_letters, replay
from services.ingest.settings import DEFAULT_HTTP_PORT, SERVICE
from shared import __version__
from shared.bus import connect
from shared.logging import configure_logging
from shared.settings import CommonSettings, SettingsError
from shared.subjects import Names

CONNECT_TIMEOUT_S = 10.0  # an operator command should fail fast when NATS is not there


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dlq = subparsers.add_parser("dlq", help="inspect and replay dead-lettered events")
    commands = dlq.add_subparsers(dest="dlq_command", required=True)

    ls = commands.add_parser("ls", help="list dead letters")
    _filters(ls)
    ls.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    ls.set_defaults(func=_run(_ls))

    show = commands.add_parser("show", help="show one dead letter: headers and payload")
    show.add_argument("seq", type=int, help="its sequence in the DLQ stream")
    show.add_argument("--json", action="store_true", help="as one JSON object")
    show.set_defaults(func=_run(_show))

    again = commands.add_parser("replay", help="re-publish dead letters to the subject they came in on")
    again.add_argument("seqs", type=int, nargs="*", help="sequences to replay")
    _filters(again)
    again.add_argument("--all", action="store_true", help="replay every dead letter matching the filters")
    again.add_argument("--delete", action="store_true", help="delete each from the DLQ once re-published")
    again.add_argument("--dry-run", action="store_true", help="list what would be replayed, publish nothing")
    again.set_defaults(func=_run(_replay))


def _filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--type", dest="event_type", help="only this event type")
    parser.add_argument("--reason", help="only this reason code")
    parser.add_argument("--from", dest="start_seq", type=int, default=1, help="start at this DLQ sequence")


def _run(command: Any) -> Any:
    def func(args: argparse.Namespace) -> int:
        try:
            common = CommonSettings.from_env(os.environ, service=SERVICE, default_http_port=DEFAULT_HTTP_PORT)
        except SettingsError as error:
            print(f"rtml dlq: {error}", file=sys.stderr)
            return 2
        if not structlog.is_configured():  # keep stdout for the listing: logs go to stderr
            configure_logging(service="cli", version=__version__, namespace=common.namespace, level="WARNING")
        try:
            return int(asyncio.run(command(common, args)))
        except NotFoundError:
            stream = Names(common.namespace).stream("dlq")
            print(f"rtml dlq: no stream {stream}: is namespace {common.namespace!r} provisioned?", file=sys.stderr)
            return 1
        except (ConnectionError, nats.errors.Error) as error:
            print(f"rtml dlq: {error or type(error).__name__}", file=sys.stderr)
            return 1

    return func


async def _ls(common: CommonSettings, args: argparse.Namespace) -> int:
    names = Names(common.namespace)
    async with connect(common.nats_url, name="rtml-cli-dlq", startup_timeout_s=CONNECT_TIMEOUT_S) as nc:
        letters = await list_letters(
            nc.jetstream(), names, event_type=args.event_type, reason=args.reason,
            start_seq=args.start_seq, limit=args.limit,
        )  # fmt: skip
    if args.json:
        for letter in letters:
            print(json.dumps(summary(letter)))
        return 0
    if not letters:
        print("no dead letters")
        return 0
    print(f"{'SEQ':>8}  {'TIME (UTC)':19}  {'TYPE':14}  {'REASON':14}  {'FIELD':16}  {'EVENT ID':20}  MESSAGE")
    for letter in letters:
        row = summary(letter)
        print(
            f"{row['seq']:>8}  {row['time'] or '':19.19}  {row['type']:14.14}  {row['reason']:14.14}  "
            f"{row['field']:16.16}  {row['event_id'] or '-':20.20}  {row['message']}"
        )
    return 0


async def _show(common: CommonSettings, args: argparse.Namespace) -> int:
    names = Names(common.namespace)
    async with connect(common.nats_url, name="rtml-cli-dlq", startup_timeout_s=CONNECT_TIMEOUT_S) as nc:
        letter = await get_letter(nc.jetstream(), names, args.seq)
    if letter is None:
        print(f"rtml dlq: no dead letter with sequence {args.seq}", file=sys.stderr)
        return 1
    detail = {**summary(letter), "subject": letter.subject, "headers": dict(letter.headers), "payload": payload(letter)}
    if args.json:
        print(json.dumps(detail))
        return 0
    for key in ("seq", "time", "subject", "type", "reason", "field", "event_id", "message"):
        print(f"{key:>9}: {detail[key]}")
    print("  headers:")
    for name, value in letter.headers.items():
        print(f"    {name}: {value}")
    print("  payload:")
    print(json.dumps(detail["payload"], indent=2))
    return 0


async def _replay(common: CommonSettings, args: argparse.Namespace) -> int:
    if not args.seqs and not (args.all or args.event_type or args.reason):
        print("rtml dlq replay: name sequences, or select with --type/--reason/--all", file=sys.stderr)
        return 2
    names = Names(common.namespace)
    async with connect(common.nats_url, name="rtml-cli-dlq", startup_timeout_s=CONNECT_TIMEOUT_S) as nc:
        js = nc.jetstream()
        if args.seqs:
            found = [await get_letter(js, names, seq) for seq in args.seqs]
            missing = [seq for seq, letter in zip(args.seqs, found, strict=True) if letter is None]
            if missing:
                print(f"rtml dlq replay: no dead letters with sequences {missing}", file=sys.stderr)
                return 1
            letters = [letter for letter in found if letter is not None]
        else:
            letters = await list_letters(
                js, names, event_type=args.event_type, reason=args.reason, start_seq=args.start_seq
            )
        if args.dry_run:
            for letter in letters:
                print(f"would replay {letter.seq} to {letter.replay_subject()} ({letter.reason})")
            return 0
        failures = await replay(js, names, letters, delete=args.delete)
    for letter, error in failures:
        print(f"rtml dlq replay: {letter.seq}: {error}", file=sys.stderr)
    print(
        f"replayed {len(letters) - len(failures)} of {len(letters)}"
        + (" (deleted from the DLQ)" if args.delete else "")
    )
    return 1 if failures else 0


def summary(letter: DeadLetter) -> dict[str, Any]:
    when = datetime.fromtimestamp(letter.time_ms / 1000, UTC).isoformat()[:19] if letter.time_ms else None
    return {
        "seq": letter.seq, "time": when, "type": letter.event_type, "reason": letter.reason,
        "field": letter.field, "event_id": letter.headers.get("Rtml-Event-Id"), "message": letter.message,
        "bytes": len(letter.data),
    }  # fmt: skip


def payload(letter: DeadLetter) -> Any:
    """The payload decoded for display (msgpack or JSON), else its bytes in hex."""
    if letter.headers.get("Content-Type", "").startswith("application/json"):
        try:
            return json.loads(letter.data)
        except ValueError:
            pass
    else:
        try:
            return _jsonable(msgpack.unpackb(letter.data, raw=False, strict_map_key=False))
        except Exception:  # undecodable is exactly what many dead letters are
            pass
    return {"undecodable_hex": letter.data[:4096].hex()}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return {"hex": value.hex()}
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    return value
