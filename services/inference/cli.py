"""``rtml models register|ls|show|serve``: the model registry from the command line.

Examples::

    rtml models register fraud --onnx model.onnx --metadata metadata.json
    rtml models ls
    rtml models show fraud --version 2
    rtml models serve fraud 2        # route all traffic to version 2 (until the rollout service does this)

The metadata file is the JSON form of :class:`shared.registry.ModelMetadata`:
``{"features": [{"name", "source", "default", "view", "field", "entity_from"}, ...],
"batch_policy": {...}, "threshold": 0.5, "requires_features": false}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from services.inference.policy import BatchPolicy
from shared.bus import connect, provision
from shared.db import open_pool
from shared.errors import ServiceError
from shared.registry import ModelMetadata, ensure_tables, get_version, list_models, list_versions, register_version
from shared.routing import Mode, RoutingPolicy, read_policy, write_policy
from shared.settings import CommonSettings
from shared.subjects import Names


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    models = subparsers.add_parser("models", help="the model registry: register, list, show, serve")
    commands = models.add_subparsers(dest="models_command", required=True)

    add = commands.add_parser("register", help="register an ONNX file as the model's next version")
    add.add_argument("model")
    add.add_argument(
        "--onnx", type=Path, required=True, help="the ONNX file: float32 [batch, n] in, a score per row out"
    )
    add.add_argument("--metadata", type=Path, required=True, help="JSON: features in input order, batch_policy, ...")
    add.set_defaults(func=lambda args: _run(_register(args)))

    ls = commands.add_parser("ls", help="models and their latest versions")
    ls.set_defaults(func=lambda args: _run(_ls(args)))

    show = commands.add_parser("show", help="a model's versions, or one version in full")
    show.add_argument("model")
    show.add_argument("--version", type=int)
    show.set_defaults(func=lambda args: _run(_show(args)))

    serve = commands.add_parser("serve", help="write a routing policy sending all traffic to one version")
    serve.add_argument("model")
    serve.add_argument("version", type=int)
    serve.set_defaults(func=lambda args: _run(_serve(args)))


def _settings() -> CommonSettings:
    return CommonSettings.from_env(os.environ, service="cli", default_http_port=0)


def _run(job: Any) -> int:
    try:
        return int(asyncio.run(job))
    except ServiceError as error:
        print(f"rtml models: {error.message}", file=sys.stderr)
        return 1
    except (OSError, ConnectionError, json.JSONDecodeError) as error:
        print(f"rtml models: {error}", file=sys.stderr)
        return 1


async def _register(args: argparse.Namespace) -> int:
    settings, names = _settings(), Names(_settings().namespace)
    metadata = ModelMetadata.from_dict(json.loads(args.metadata.read_text()))
    BatchPolicy.from_dict(metadata.batch_policy)  # refuse a bad policy now, not at load time
    artifact = args.onnx.read_bytes()
    async with connect(settings.nats_url, name="rtml-cli") as nc:
        js = nc.jetstream()
        await provision(js, names, replicas=settings.stream_replicas)
        store = await js.object_store(names.models_bucket)
        async with open_pool(settings.database_url, schema=names.schema) as pool:
            await ensure_tables(pool)
            version = await register_version(pool, store, args.model, artifact, metadata)
    print(f"registered {version.model} version {version.version} (sha256 {version.sha256[:12]}...)")
    return 0


async def _ls(_: argparse.Namespace) -> int:
    settings = _settings()
    async with open_pool(settings.database_url, schema=settings.namespace) as pool:
        await ensure_tables(pool)
        rows = await list_models(pool)
    if not rows:
        print("no models registered")
    for row in rows:
        print(f"{row['name']:<24} versions={row['versions']:<4} latest={row['latest']}")
    return 0


async def _show(args: argparse.Namespace) -> int:
    settings = _settings()
    async with open_pool(settings.database_url, schema=settings.namespace) as pool:
        await ensure_tables(pool)
        if args.version is not None:
            print(json.dumps((await get_version(pool, args.model, args.version)).to_dict(), indent=2))
            return 0
        for version in await list_versions(pool, args.model):
            print(
                f"v{version.version:<4} {version.status.value:<10} {len(version.metadata.features)} features  "
                f"sha256 {version.sha256[:12]}  {version.created_at:%Y-%m-%d %H:%M}"
            )
    return 0


async def _serve(args: argparse.Namespace) -> int:
    settings = _settings()
    names = Names(settings.namespace)
    async with open_pool(settings.database_url, schema=names.schema) as pool:
        await ensure_tables(pool)
        await get_version(pool, args.model, args.version)  # 404 unless registered
    async with connect(settings.nats_url, name="rtml-cli") as nc:
        js = nc.jetstream()
        await provision(js, names, replicas=settings.stream_replicas)
        kv = await js.key_value(names.routing_bucket)
        current = await read_policy(kv, args.model)
        now_ms = int(time.time() * 1000)
        policy = (
            RoutingPolicy(args.model, stable=args.version, updated_ms=now_ms)
            if current is None
            else current.next_revision(
                stable=args.version, mode=Mode.STABLE, candidate=None, canary_weight_pct=0.0, shadow_share=0.0,
                updated_ms=now_ms,
            )
        )  # fmt: skip
        await write_policy(kv, policy)
    print(f"{args.model}: all traffic to version {args.version} (policy revision {policy.revision})")
    return 0
