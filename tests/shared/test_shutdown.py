"""SIGTERM: requests in flight are answered before the process exits 0."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest

from shared.bus import connect, request
from shared.settings import CommonSettings
from tests.conftest import PROJECT_ROOT


@pytest.fixture(scope="module")
async def client(settings: CommonSettings) -> AsyncIterator[Any]:
    async with connect(settings.nats_url, name="test-shutdown") as nc:
        yield nc


async def wait_until_listening(nc: Any, namespace: str) -> None:
    for _ in range(200):
        try:
            info = await nc.request("$SRV.INFO.rtml-slow", b"", timeout=0.2)
        except Exception:
            await asyncio.sleep(0.05)
            continue
        if json.loads(info.data)["metadata"]["namespace"] == namespace:
            return
    raise AssertionError("the slow service never came up")


async def test_in_flight_requests_are_answered_before_exit(settings: CommonSettings, client: Any) -> None:
    env = dict(os.environ, RTML_NAMESPACE=settings.namespace, RTML_NATS_URL=settings.nats_url)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.shared.slow_service", cwd=PROJECT_ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await wait_until_listening(client, settings.namespace)
        subject = f"{settings.namespace}.sleep"
        in_flight = [asyncio.create_task(request(client, subject, {"seconds": 1.0}, timeout_s=10)) for _ in range(5)]
        await asyncio.sleep(0.3)  # all five are being handled now
        process.send_signal(signal.SIGTERM)
        replies = await asyncio.gather(*in_flight)
        assert replies == [{"slept_s": 1.0}] * 5
        assert await asyncio.wait_for(process.wait(), timeout=15) == 0
        _, stderr = await process.communicate()
        events = [json.loads(line)["event"] for line in stderr.decode().splitlines() if line.startswith("{")]
        assert events.index("service_draining") < events.index("service_stopped")
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
