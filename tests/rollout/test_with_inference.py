"""End to end with the real inference service: rollout's routing writes drive what answers each request.

Gates still read a recorded monitor over NATS (the monitor service is built in
parallel); the traffic, the routing bucket and the answering versions are real.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from nats.aio.client import Client

from services.inference.service import InferenceService
from services.inference.settings import InferenceSettings
from shared.bus import connect, request
from shared.errors import ServiceError
from shared.routing import RoutingPolicy, read_policy
from shared.settings import CommonSettings
from shared.subjects import Names

from .conftest import AUTH, model_bytes, version_form
from .recorded import RecordedMonitor

MODEL = "e2e"
ENTITIES = [f"card-{i}" for i in range(200)]
FEATURES = {"amount": 12.5, "velocity": 3.0, "age": 40.0}


@pytest.fixture(scope="module")
async def inference(settings: CommonSettings) -> AsyncIterator[InferenceService]:
    service = InferenceService(InferenceSettings(common=settings, warm_up_rounds=0))
    await service.start()
    await service.wait_synced()
    yield service
    await service.stop()


@pytest.fixture(scope="module")
async def client(settings: CommonSettings) -> AsyncIterator[Client]:
    async with connect(settings.nats_url, name="e2e-client") as nc:
        yield nc


async def answers(client: Any, names: Names) -> dict[str, int]:
    """The version that answered each entity; 0 where inference refused (a policy not applied yet)."""
    replies = await asyncio.gather(
        *(request(client, names.predict(MODEL), {"entity": e, "features": FEATURES}) for e in ENTITIES),
        return_exceptions=True,
    )
    return {
        e: 0 if isinstance(r, ServiceError) else int(r["version"])  # type: ignore[index]
        for e, r in zip(ENTITIES, replies, strict=True)
    }


async def policy_now(client: Any, names: Names) -> RoutingPolicy:
    policy = await read_policy(await client.jetstream().key_value(names.routing_bucket), MODEL)
    assert policy is not None
    return policy


async def until_served_as_routed(client: Any, names: Names) -> tuple[RoutingPolicy, dict[str, int]]:
    """Poll (bounded) until every entity is answered by the version the live policy routes it to."""
    for _ in range(200):
        policy = await policy_now(client, names)
        seen = await answers(client, names)
        if all(seen[e] == policy.route(e).version for e in ENTITIES):
            return policy, seen
        await asyncio.sleep(0.05)
    raise AssertionError(f"inference never followed policy {policy}")


async def rollout_state(http: aiohttp.ClientSession, rollout_id: str) -> dict[str, Any]:
    async with http.get(f"/models/{MODEL}/rollouts/{rollout_id}") as r:
        return dict(await r.json())


async def until(http: aiohttp.ClientSession, rollout_id: str, done: Any) -> dict[str, Any]:
    for _ in range(400):
        state = await rollout_state(http, rollout_id)
        if done(state):
            return state
        await asyncio.sleep(0.05)
    raise AssertionError(f"rollout stuck: {state['state']} step {state['step']}")


async def test_canary_moves_real_traffic_then_a_slow_candidate_leaves_it(
    inference: InferenceService,
    http: aiohttp.ClientSession,
    client: Any,
    settings: CommonSettings,
    monitor: RecordedMonitor,
) -> None:
    names = Names(settings.namespace)
    for seed in (21, 22, 23):
        async with http.post(f"/models/{MODEL}/versions", data=version_form(model_bytes(seed)), headers=AUTH) as r:
            assert r.status == 201, await r.text()
    async with http.post(f"/models/{MODEL}/stable", json={"version": 1}, headers=AUTH) as r:
        assert r.status == 200
    _, seen = await until_served_as_routed(client, names)
    assert set(seen.values()) == {1}

    body = {"candidate": 2, "strategy": "canary", "steps": [5, 25, 50, 100], "dwell_s": 0.3}
    async with http.post(f"/models/{MODEL}/rollouts", json=body, headers=AUTH) as r:
        rollout_id = (await r.json())["id"]
    await until(http, rollout_id, lambda s: s["step"] >= 1)
    async with http.post(f"/models/{MODEL}/rollouts/{rollout_id}/pause", headers=AUTH) as r:
        assert r.status == 200, await r.text()
        paused_weight = (await r.json())["weight_pct"]
    policy, seen = await until_served_as_routed(client, names)
    assert policy.canary_weight_pct == paused_weight
    assert set(seen.values()) == {1, 2}  # both sides answer, each entity on its sticky side
    async with http.post(f"/models/{MODEL}/rollouts/{rollout_id}/resume", headers=AUTH) as r:
        assert r.status == 200
    done = await until(http, rollout_id, lambda s: s["state"] == "succeeded" and s["policy_published"])
    assert [e["step"] for e in done["timeline"] if e["kind"] == "step_started"] == [1, 2, 3]
    _, seen = await until_served_as_routed(client, names)
    assert set(seen.values()) == {2}

    monitor.scenarios[3] = "slow"
    body = {"candidate": 3, "strategy": "bluegreen", "dwell_s": 60, "gates": {"fail_checks": 3}}
    async with http.post(f"/models/{MODEL}/rollouts", json=body, headers=AUTH) as r:
        rollout_id = (await r.json())["id"]
    done = await until(http, rollout_id, lambda s: s["state"] == "rolled_back" and s["policy_published"])
    assert done["report"]["rollback"]["failing"][0]["gate"] == "latency"
    policy, seen = await until_served_as_routed(client, names)
    assert (policy.stable, policy.candidate, set(seen.values())) == (2, None, {2})
