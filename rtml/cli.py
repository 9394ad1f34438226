"""The ``rtml`` command line.

``rtml infra up|down|status``, ``rtml up``, ``rtml status`` live here; every
``services/<name>/cli.py`` and ``rtml/<tool>/cli.py`` adds its own commands through
``register(subparsers)``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
from pathlib import Path

from infra.local import manager
from rtml import discovery, status, supervisor
from shared.settings import CommonSettings, SettingsError

DEFAULT_HOME = discovery.PROJECT_ROOT / ".rtml"


def _settings() -> CommonSettings:
    return CommonSettings.from_env(os.environ, service="cli", default_http_port=0)


def _infra_up(args: argparse.Namespace) -> int:
    s = _settings()
    try:
        states = manager.up(nats_url=s.nats_url, redis_url=s.redis_url, database_url=s.database_url, home=args.home)
    except Exception as error:
        print(f"rtml infra up: {error}", file=sys.stderr)
        return 1
    for state in states:
        print(state.describe())
    return 0


def _infra_down(args: argparse.Namespace) -> int:
    stopped = manager.down(home=args.home)
    for state in stopped:
        print(f"stopped {state.kind} pid {state.pid} ({state.url})")
    if not stopped:
        print("nothing started by rtml is running")
    return 0


def _infra_status(args: argparse.Namespace) -> int:
    s = _settings()
    rows = manager.status(nats_url=s.nats_url, redis_url=s.redis_url, database_url=s.database_url, home=args.home)
    for state, answers in rows:
        print(f"{'up  ' if answers else 'DOWN'} {state.describe()}")
    return 0 if all(answers for _, answers in rows) else 1


def _up(args: argparse.Namespace) -> int:
    s = _settings()
    states = manager.up(nats_url=s.nats_url, redis_url=s.redis_url, database_url=s.database_url, home=args.home)
    for state in states:
        print(state.describe(), file=sys.stderr)
    replicas: dict[str, int] = {}
    for item in args.replicas:
        name, _, count = item.partition("=")
        replicas[name] = int(count)
    services = args.only.split(",") if args.only else discovery.runnable_services()
    try:
        return supervisor.run(services, replicas)
    finally:
        for state in manager.down(home=args.home, only=states):
            print(f"stopped {state.kind} pid {state.pid}", file=sys.stderr)


def _status(_: argparse.Namespace) -> int:
    s = _settings()
    try:
        instances = asyncio.run(status.collect_status(s.nats_url, s.namespace))
    except ConnectionError as error:
        print(f"rtml status: {error}", file=sys.stderr)
        return 1
    print(status.render(instances, s.namespace))
    return 0 if instances and all(i.health == "ok" and i.ready == "ok" for i in instances) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rtml", description="rtml: real-time ML platform")
    commands = parser.add_subparsers(dest="command", required=True)

    infra = commands.add_parser("infra", help="local NATS, Redis and PostgreSQL")
    infra_commands = infra.add_subparsers(dest="infra_command", required=True)
    for name, func, text in (
        ("up", _infra_up, "start the servers that do not answer at the configured URLs"),
        ("down", _infra_down, "stop the servers rtml started"),
        ("status", _infra_status, "which servers answer, and which rtml started"),
    ):
        sub = infra_commands.add_parser(name, help=text)
        sub.add_argument("--home", type=Path, default=DEFAULT_HOME, help="where started servers keep data and logs")
        sub.set_defaults(func=func)

    up = commands.add_parser("up", help="start infrastructure and every service, supervised; Ctrl-C stops all")
    up.add_argument("--home", type=Path, default=DEFAULT_HOME)
    up.add_argument("--only", help="comma-separated services to run (default: all that exist)")
    up.add_argument("--replicas", action="append", default=[], metavar="SERVICE=N", help="replicas of a service")
    up.set_defaults(func=_up)

    commands.add_parser("status", help="each service's replicas, version and health").set_defaults(func=_status)

    for module_name in discovery.command_modules():
        importlib.import_module(module_name).register(commands)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
    except SettingsError as error:
        print(f"rtml: configuration error: {error}", file=sys.stderr)
        code = 2
    raise SystemExit(code)
