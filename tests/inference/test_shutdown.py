"""SIGTERM on a real ``python -m services.inference`` process: every queued request is answered before exit."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from typing import Any

import aiohttp
from nats.aio.client import Client

from shared.bus import request
from shared.routing import RoutingPolicy, write_policy
from shared.settings import CommonSettings
from shared.subjects import Names
from tests.conftest import PROJECT_ROOT
from tests.inference.conftest import Register


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_ready(port: int, process: asyncio.subprocess.Process) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(300):
            assert process.returncode is None, "the service exited during startup"
            try:
                async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("the service never became ready")


async def test_sigterm_answers_every_queued_request(
    settings: CommonSettings, names: Names, client: Client, kv: Any, register: Register
) -> None:
    # A long batch delay keeps requests queued until the signal arrives.
    version = await register(
        "slowbatch", [0.1, 0.2, 0.3], 0.0,
        batch_policy={"max_batch_size": 64, "max_queue_delay_us": 5_000_000, "default_timeout_ms": 30_000},
    )  # fmt: skip
    await write_policy(kv, RoutingPolicy("slowbatch", stable=version.version))
    port = free_port()
    env = {
        **os.environ,
        "RTML_NAMESPACE": settings.namespace, "RTML_NATS_URL": settings.nats_url,
        "RTML_REDIS_URL": settings.redis_url, "RTML_DATABASE_URL": settings.database_url,
        "RTML_INFERENCE_HTTP_PORT": str(port), "RTML_SHUTDOWN_GRACE_S": "20", "RTML_INFERENCE_WARM_UP_ROUNDS": "1",
    }  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.inference", cwd=PROJECT_ROOT, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await wait_ready(port, process)
        pending = [
            asyncio.create_task(
                request(client, names.predict("slowbatch"), {"entity": f"e{i}", "id": f"q{i}"}, timeout_s=25)
            )
            for i in range(20)
        ]
        await asyncio.sleep(0.5)
        assert not any(task.done() for task in pending), "requests should still be waiting for their batch"
        process.send_signal(signal.SIGTERM)
        replies = await asyncio.gather(*pending)
        assert sorted(r["id"] for r in replies) == sorted(f"q{i}" for i in range(20))
        assert all(r["version"] == version.version and 0.0 < r["score"] < 1.0 for r in replies)
        assert await asyncio.wait_for(process.wait(), timeout=30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
