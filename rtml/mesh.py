"""Run the whole mesh from code: every service as a supervised subprocess, ready before use.

The demo and the end-to-end tests both need "start everything in namespace N,
wait until every instance answers ``/readyz``, stop everything at the end".
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

from rtml.discovery import runnable_services
from rtml.status import Instance, collect_status, render
from rtml.supervisor import Supervisor, plan
from shared.settings import CommonSettings


def mesh_environment(settings: CommonSettings, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment every service of the mesh gets: the settings' URLs and namespace."""
    env = dict(os.environ)
    env.update(
        RTML_NATS_URL=settings.nats_url,
        RTML_REDIS_URL=settings.redis_url,
        RTML_DATABASE_URL=settings.database_url,
        RTML_NAMESPACE=settings.namespace,
        RTML_ADMIN_TOKEN=settings.admin_token,
    )
    env.update(extra or {})
    return env


async def wait_ready(settings: CommonSettings, expected: int, timeout_s: float) -> list[Instance]:
    deadline = asyncio.get_running_loop().time() + timeout_s
    instances: list[Instance] = []
    while asyncio.get_running_loop().time() < deadline:
        instances = await collect_status(settings.nats_url, settings.namespace)
        if len(instances) >= expected and all(i.health == "ok" and i.ready == "ok" for i in instances):
            return instances
        await asyncio.sleep(0.25)
    raise TimeoutError(f"the mesh was not ready within {timeout_s:.0f}s:\n{render(instances, settings.namespace)}")


@asynccontextmanager
async def running_mesh(
    settings: CommonSettings,
    *,
    log_file: Path,
    replicas: Mapping[str, int] | None = None,
    env: Mapping[str, str] | None = None,
    ready_timeout_s: float = 90.0,
) -> AsyncIterator[Supervisor]:
    """All services running and ready in ``settings.namespace``; stopped (SIGTERM, then SIGKILL) on exit."""
    services = runnable_services()
    replica_plan = plan(services, replicas or {})
    with open(log_file, "ab") as output:  # noqa: ASYNC230 - opened once, before any traffic
        supervisor = Supervisor(replica_plan, mesh_environment(settings, env), output=output)
        supervisor.start()
        try:
            await wait_ready(settings, len(replica_plan), ready_timeout_s)
            yield supervisor
        finally:
            await supervisor.stop()
