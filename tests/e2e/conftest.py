"""Every service as a supervised subprocess on the real servers, in the test module's namespace.

The mesh runs with the demo's compressed settings (``rtml.demo.story.mesh_env``):
ephemeral HTTP ports, rollout checks every second, small monitor windows. Service
output goes to ``.rtml/e2e-<namespace>.log``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from nats.aio.client import Client
from redis import asyncio as aioredis

from rtml.demo.rest import Admin
from rtml.demo.story import DemoConfig, mesh_env
from rtml.mesh import running_mesh
from rtml.status import collect_status
from rtml.supervisor import Supervisor
from services.features.catalog import load_views
from shared.bus import connect
from shared.db import open_pool
from shared.online import open_redis, read_online_features
from shared.settings import CommonSettings
from shared.subjects import Names
from tests.features.helpers import expected_online
from tests.features.reference import close

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TOKEN = "e2e-admin-token"
VIEWS = load_views(None)


@dataclass
class Mesh:
    settings: CommonSettings
    names: Names
    supervisor: Supervisor
    nc: Client
    admin: Admin
    pool: asyncpg.Pool
    redis: aioredis.Redis
    log_file: Path


@pytest.fixture(scope="module")
def mesh_extra_env() -> dict[str, str]:
    """Settings a test module adds to the demo's (override this fixture in the module)."""
    return {}


@pytest.fixture(scope="module")
async def mesh(settings: CommonSettings, mesh_extra_env: dict[str, str]) -> AsyncIterator[Mesh]:
    common = replace(settings, admin_token=TOKEN)
    names = Names(common.namespace)
    log_file = PROJECT_ROOT / ".rtml" / f"e2e-{common.namespace}.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    env = mesh_env(DemoConfig(home=log_file.parent)) | mesh_extra_env
    async with running_mesh(common, log_file=log_file, env=env, ready_timeout_s=90) as supervisor:
        http_of = {i.name: i.http for i in await collect_status(common.nats_url, common.namespace)}
        async with (
            connect(common.nats_url, name="rtml-e2e") as nc,
            aiohttp.ClientSession() as http,
            open_pool(common.database_url, schema=names.schema, max_size=4) as pool,
            open_redis(common.redis_url) as redis,
        ):
            admin = Admin(http, f"http://{http_of['rollout']}", f"http://{http_of['monitor']}", TOKEN)
            yield Mesh(common, names, supervisor, nc, admin, pool, redis, log_file)


async def rediscover(mesh: Mesh) -> None:
    """Point ``mesh.admin`` at the rollout and monitor instances running now (a restart picks a new port)."""
    http_of = {i.name: i.http for i in await collect_status(mesh.settings.nats_url, mesh.settings.namespace)}
    mesh.admin = Admin(mesh.admin.http, f"http://{http_of['rollout']}", f"http://{http_of['monitor']}", TOKEN)


async def stored_events(pool: asyncpg.Pool, event_type: str = "transaction") -> list[dict[str, Any]]:
    """The offline log's events of ``event_type`` in stream order (the order features applied them)."""
    rows = await pool.fetch(
        "SELECT id, type, entity, ts, data FROM features_events WHERE type = $1 ORDER BY seq", event_type
    )
    return [
        {"id": r["id"], "type": r["type"], "entity": r["entity"], "ts": r["ts"], "data": _json(r["data"])} for r in rows
    ]


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


async def online_mismatches(
    redis: aioredis.Redis, names: Names, events: Sequence[dict[str, Any]], views: Sequence[str]
) -> list[tuple[str, str, str, float | None, float]]:
    """Every online value that differs from the brute-force recomputation over ``events``: (view, entity,
    feature, stored, expected)."""
    wrong: list[tuple[str, str, str, float | None, float]] = []
    for name in views:
        view = VIEWS[name]
        want = expected_online(view, list(events))
        got = await read_online_features(redis, names, [(view.name, entity) for entity in want])
        for (entity, vector), stored in zip(want.items(), got, strict=True):
            for feature, value in vector.items():
                have = stored.values.get(feature)
                if have is None or not close(have, value, 10_000):
                    wrong.append((name, entity, feature, have, value))
    return wrong
