"""Every rtml_* metric the dashboard, the rules and the HPA read is one a running service exports,
and every JetStream consumer KEDA watches is one a running service creates.

Each service with an entry point is started the way its container starts it
(``python -m services.<name>``, with the compose file's environment for it) against
the test's real NATS, Redis and Postgres in a fresh namespace; its /metrics is read
over HTTP and the names it declares are compared with the names infra/ uses.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest

from shared.bus import connect
from shared.settings import CommonSettings
from tests.infra.inventory import (
    ROOT,
    SERVICES,
    base_documents,
    compose,
    has_entry_point,
    service_of,
    used_metric_names,
)
from tests.infra.promql import exported_names
from tests.infra.test_compose import environment

STARTUP_BOUND_S = 60.0  # a bound on waiting, not a speed assertion: a service that never serves fails


@dataclass
class Scrape:
    names: set[str]
    log: str


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def service_env(service: str, settings: CommonSettings, port: int) -> dict[str, str]:
    env = {**os.environ, **environment(compose()["services"][service])}
    env.update(
        RTML_NATS_URL=settings.nats_url,
        RTML_REDIS_URL=settings.redis_url,
        RTML_DATABASE_URL=settings.database_url,
        RTML_NAMESPACE=settings.namespace,
        RTML_HTTP_HOST="127.0.0.1",
        RTML_STREAM_REPLICAS="1",
        RTML_SHUTDOWN_GRACE_S="2",
        PYTHONPATH=str(ROOT),
    )
    env[f"RTML_{service.upper()}_HTTP_PORT"] = str(port)
    return env


async def scrape_one(service: str, settings: CommonSettings, session: aiohttp.ClientSession) -> Scrape:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", f"services.{service}", cwd=ROOT, env=service_env(service, settings, port),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STARTUP_BOUND_S
    body = ""
    try:
        while loop.time() < deadline and process.returncode is None:
            try:
                async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                    if response.status == 200:
                        body = await response.text()
                        break
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        try:
            _, err = await asyncio.wait_for(process.communicate(), timeout=20)
        except TimeoutError:
            process.kill()
            _, err = await process.communicate()
    return Scrape(names=exported_names(body), log=err.decode(errors="replace")[-3000:])


@pytest.fixture(scope="module")
async def scraped(settings: CommonSettings) -> AsyncIterator[dict[str, Scrape]]:
    runnable = [service for service in SERVICES if has_entry_point(service)]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        results = await asyncio.gather(*(scrape_one(service, settings, session) for service in runnable))
    yield dict(zip(runnable, results, strict=True))


@pytest.mark.parametrize("service", sorted(SERVICES))
async def test_metrics_infra_reads_are_exported(service: str, scraped: dict[str, Scrape]) -> None:
    if service not in scraped:
        pytest.skip(f"services/{service}/__main__.py is not written yet")
    scrape = scraped[service]
    assert scrape.names, f"{service} served no /metrics; its log ends:\n{scrape.log}"
    common = {f"rtml_{service}_{suffix}" for suffix in ("requests_total", "errors_total", "in_flight", "ready")}
    assert common <= scrape.names
    wanted = {name for name in used_metric_names() if service_of(name) == service}
    missing = sorted(wanted - scrape.names)
    assert not missing, f"infra/ reads {missing}, which {service} does not export; it exports {sorted(scrape.names)}"


@pytest.fixture(scope="module")
async def consumers(settings: CommonSettings, scraped: dict[str, Scrape]) -> dict[str, set[str]]:
    """Durable consumers per stream once the services have started (they outlive the processes)."""
    found: dict[str, set[str]] = {}
    async with connect(settings.nats_url, name="rtml-infra-tests") as nc:
        js = nc.jetstream()
        for name in await js.streams_info():
            stream = name.config.name
            if stream is not None and stream.startswith(f"{settings.namespace}_"):
                found[stream] = {info.name for info in await js.consumers_info(stream)}
    return found


def test_keda_watches_consumers_the_services_create(
    settings: CommonSettings, scraped: dict[str, Scrape], consumers: dict[str, set[str]]
) -> None:
    checked = 0
    for doc in base_documents():
        if doc["kind"] != "ScaledObject":
            continue
        target = doc["spec"]["scaleTargetRef"]["name"]
        if target not in scraped:
            continue
        for trigger in doc["spec"]["triggers"]:
            meta = trigger["metadata"]
            # The manifests are written for RTML_NAMESPACE=rtml; this run uses a fresh namespace.
            stream = settings.namespace + meta["stream"].removeprefix("rtml")
            consumer = settings.namespace + meta["consumer"].removeprefix("rtml")
            assert consumer in consumers.get(stream, set()), (
                f"ScaledObject {doc['metadata']['name']} watches {meta['consumer']} on {meta['stream']}, but "
                f"{target} created {sorted(consumers.get(stream, set()))} there"
            )
            checked += 1
    if not checked:
        pytest.skip("no autoscaled service has an entry point yet")
