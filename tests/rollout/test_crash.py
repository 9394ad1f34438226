"""Crash safety: a controller SIGKILLed mid-rollout resumes with no step lost or repeated; leadership moves."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from services.rollout.service import RolloutService
from services.rollout.settings import RolloutSettings
from shared.bus import connect
from shared.routing import Mode, read_policy
from shared.settings import CommonSettings
from shared.subjects import Names

from .conftest import AUTH, TOKEN, model_bytes, version_form
from .recorded import RecordedMonitor

ROOT = Path(__file__).resolve().parents[2]
MODEL = "churn"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Replica:
    """``python -m services.rollout`` as its own process, as it runs in production."""

    def __init__(self, settings: CommonSettings) -> None:
        self.port = free_port()
        env = dict(os.environ) | {
            "RTML_NAMESPACE": settings.namespace,
            "RTML_NATS_URL": settings.nats_url,
            "RTML_DATABASE_URL": settings.database_url,
            "RTML_REDIS_URL": settings.redis_url,
            "RTML_ADMIN_TOKEN": TOKEN,
            "RTML_ROLLOUT_HTTP_PORT": str(self.port),
            "RTML_ROLLOUT_CHECK_INTERVAL_S": "0.1",
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "services.rollout"], cwd=ROOT, env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.url = f"http://127.0.0.1:{self.port}"

    async def ready(self, http: aiohttp.ClientSession) -> None:
        for _ in range(300):
            assert self.process.poll() is None, "the replica exited"
            try:
                async with http.get(f"{self.url}/readyz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)
        raise AssertionError("the replica never became ready")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def replicas() -> Iterator[list[Replica]]:
    started: list[Replica] = []
    yield started
    for replica in started:
        replica.kill()


@pytest.fixture(scope="module")
async def monitor(settings: CommonSettings) -> AsyncIterator[RecordedMonitor]:
    service = RecordedMonitor(settings)
    await service.start()
    yield service
    await service.stop()


async def rollout_body(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with http.get(url) as r:
        return dict(await r.json())


async def test_sigkill_mid_rollout_resumes_without_losing_or_repeating_a_step(
    settings: CommonSettings, monitor: RecordedMonitor, replicas: list[Replica]
) -> None:
    first = Replica(settings)
    replicas.append(first)
    async with aiohttp.ClientSession() as http:
        await first.ready(http)
        for seed in (1, 2):
            async with http.post(f"{first.url}/models/{MODEL}/versions", data=version_form(model_bytes(seed)),
                                 headers=AUTH) as r:  # fmt: skip
                assert r.status == 201, await r.text()
        async with http.post(f"{first.url}/models/{MODEL}/stable", json={"version": 1}, headers=AUTH) as r:
            assert r.status == 200
        body = {"candidate": 2, "strategy": "canary", "steps": [5, 25, 50, 100], "dwell_s": 0.5}
        async with http.post(f"{first.url}/models/{MODEL}/rollouts", json=body, headers=AUTH) as r:
            assert r.status == 201, await r.text()
            rollout_id = (await r.json())["id"]
        path = f"/models/{MODEL}/rollouts/{rollout_id}"
        for _ in range(400):
            state = await rollout_body(http, first.url + path)
            if state["step"] >= 2:
                break
            await asyncio.sleep(0.02)
        first.kill()
        assert state["state"] == "running"

        second = Replica(settings)
        replicas.append(second)
        await second.ready(http)
        for _ in range(400):
            state = await rollout_body(http, second.url + path)
            if state["state"] != "running" and state["policy_published"]:
                break
            await asyncio.sleep(0.05)
    assert state["state"] == "succeeded"
    transitions = [(e["kind"], e["step"]) for e in state["timeline"] if e["kind"] != "policy_published"]
    assert transitions == [("created", 0), ("step_started", 1), ("step_started", 2), ("step_started", 3),
                           ("promoted", 3)]  # fmt: skip
    published = Counter(e["revision"] for e in state["timeline"] if e["kind"] == "policy_published")
    assert set(published.values()) == {1}
    weights = [e["detail"]["policy"]["canary_weight_pct"] for e in state["timeline"] if e["kind"] == "policy_published"]
    assert weights == [5.0, 25.0, 50.0, 100.0, 0.0]
    async with connect(settings.nats_url, name="t") as nc:
        policy = await read_policy(await nc.jetstream().key_value(Names(settings.namespace).routing_bucket), MODEL)
    assert policy is not None and (policy.mode, policy.stable) == (Mode.STABLE, 2)


async def test_a_standby_takes_over_when_the_leader_stops(settings: CommonSettings, replicas: list[Replica]) -> None:
    for replica in replicas:
        replica.kill()
    common = replace(settings, admin_token=TOKEN, shutdown_grace_s=1.0)
    leader = RolloutService(RolloutSettings(common=common, check_interval_s=0.05))
    standby = RolloutService(RolloutSettings(common=common, check_interval_s=0.05))
    await leader.start()
    for _ in range(200):
        if leader.controller.is_leader:
            break
        await asyncio.sleep(0.02)
    await standby.start()
    try:
        await asyncio.sleep(0.3)
        assert leader.controller.is_leader and not standby.controller.is_leader
        await leader.stop()
        for _ in range(200):
            if standby.controller.is_leader:
                break
            await asyncio.sleep(0.02)
        assert standby.controller.is_leader
    finally:
        await leader.stop()
        await standby.stop()
