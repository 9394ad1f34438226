"""The whole loop on real services: inference answers, the monitor summarizes, rollout gates and rolls back.

Skipped until the monitor service exists in the checkout. A candidate whose
scores are shifted (a bias of +4 on the logit) serves a 25 % canary of live
traffic; the monitor's PSI of its scores against stable's must roll it back.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import aiohttp
import numpy as np
import pytest
from nats.aio.client import Client

from services.inference.service import InferenceService
from services.inference.settings import InferenceSettings
from services.rollout.service import RolloutService
from services.rollout.settings import RolloutSettings
from shared.bus import connect, request
from shared.errors import ServiceError
from shared.settings import CommonSettings
from shared.subjects import Names
from tests.onnx_factory import logistic_model

from .conftest import AUTH, TOKEN, version_form

monitor_service = pytest.importorskip("services.monitor.service")
monitor_settings = pytest.importorskip("services.monitor.settings")

MODEL = "live"
WEIGHTS = np.array([0.8, -0.5, 0.3])


@pytest.fixture(scope="module")
async def stack(settings: CommonSettings) -> AsyncIterator[tuple[RolloutService, Client]]:
    inference = InferenceService(InferenceSettings(common=settings, warm_up_rounds=0))
    monitor = monitor_service.MonitorService(monitor_settings.MonitorSettings(common=settings))
    rollout = RolloutService(RolloutSettings(common=replace(settings, admin_token=TOKEN), check_interval_s=0.25))
    started: list[Any] = []
    try:
        for service in (inference, monitor, rollout):
            await service.start()
            started.append(service)
        async with connect(settings.nats_url, name="live-client") as nc:
            yield rollout, nc
    finally:
        for service in reversed(started):
            await service.stop()


async def traffic(nc: Client, names: Names, stop: asyncio.Event) -> None:
    """About 300 requests/s from 2,000 entities until ``stop``."""
    rng = random.Random(3)
    while not stop.is_set():
        batch = [
            request(nc, names.predict(MODEL), {"entity": f"c{rng.randrange(2000)}", "features": {
                "amount": rng.gauss(0, 1), "velocity": rng.gauss(0, 1), "age": rng.gauss(0, 1)}})
            for _ in range(15)
        ]  # fmt: skip
        await asyncio.gather(*batch, return_exceptions=True)
        await asyncio.sleep(0.05)


async def test_live_shifted_candidate_is_rolled_back_by_psi(
    stack: tuple[RolloutService, Client], settings: CommonSettings
) -> None:
    rollout, nc = stack
    names = Names(settings.namespace)
    async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{rollout.http_port}") as http:
        for bias in (0.0, 4.0):
            form = version_form(logistic_model(WEIGHTS, bias))
            async with http.post(f"/models/{MODEL}/versions", data=form, headers=AUTH) as r:
                assert r.status == 201, await r.text()
        async with http.post(f"/models/{MODEL}/stable", json={"version": 1}, headers=AUTH) as r:
            assert r.status == 200
        stop = asyncio.Event()
        load = asyncio.create_task(traffic(nc, names, stop))
        try:
            for _ in range(200):  # wait until inference serves the model
                with contextlib.suppress(ServiceError):
                    await request(nc, names.predict(MODEL), {"entity": "probe", "features": {"amount": 1.0}})
                    break
                await asyncio.sleep(0.05)
            body = {"candidate": 2, "strategy": "canary", "steps": [25, 100], "dwell_s": 60, "window_s": 30,
                    "gates": {"min_predictions": 30, "fail_checks": 2}}  # fmt: skip
            async with http.post(f"/models/{MODEL}/rollouts", json=body, headers=AUTH) as r:
                assert r.status == 201, await r.text()
                rollout_id = (await r.json())["id"]
            for _ in range(600):
                async with http.get(f"/models/{MODEL}/rollouts/{rollout_id}") as r:
                    state = await r.json()
                if state["state"] != "running" and state["policy_published"]:
                    break
                await asyncio.sleep(0.05)
        finally:
            stop.set()
            await load
    assert state["state"] == "rolled_back", state["state"]
    failing = {f["gate"]: f for f in state["report"]["rollback"]["failing"]}
    assert "psi" in failing
    assert failing["psi"]["value"] > 1.0
    figures = state["report"]["final_summary"]["versions"]
    assert figures["2"]["score_mean"] > figures["1"]["score_mean"] + 0.3
    published = state["timeline"][-1]
    assert published["kind"] == "policy_published"
    assert published["detail"]["policy"]["mode"] == "stable"
    assert published["detail"]["breach_to_routing_ms"] >= 0
