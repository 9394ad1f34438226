"""The rollout service on the real NATS and Postgres, gates fed by a recorded monitor over NATS."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import aiohttp
import numpy as np

from services.rollout.service import RolloutService
from shared.bus import connect
from shared.codec import decode
from shared.routing import Mode, read_policy
from shared.settings import CommonSettings
from shared.subjects import Names
from tests.onnx_factory import logistic_model

from .conftest import AUTH, FEATURES, model_bytes, version_form
from .recorded import RecordedMonitor

MODEL = "fraud"
FAST_CANARY = {"strategy": "canary", "steps": [5, 25, 50, 100], "dwell_s": 0.3, "window_s": 30,
               "gates": {"fail_checks": 2}}  # fmt: skip


async def register(http: aiohttp.ClientSession, seed: int) -> dict[str, Any]:
    async with http.post(f"/models/{MODEL}/versions", data=version_form(model_bytes(seed)), headers=AUTH) as r:
        assert r.status == 201, await r.text()
        return dict(await r.json())


async def wait_finished(http: aiohttp.ClientSession, rollout_id: str, bound_s: float = 20.0) -> dict[str, Any]:
    """Poll until the rollout leaves running/paused (bounded so a hang fails instead of stalling)."""
    for _ in range(int(bound_s / 0.05)):
        async with http.get(f"/models/{MODEL}/rollouts/{rollout_id}") as r:
            body: dict[str, Any] = await r.json()
        if body["state"] not in ("running", "paused") and body["policy_published"]:
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"rollout still {body['state']} at step {body['step']}")


async def test_register_stores_artifact_with_sha256(http: aiohttp.ClientSession, settings: CommonSettings) -> None:
    artifact = model_bytes(1)
    async with http.post(f"/models/{MODEL}/versions", data=version_form(artifact), headers=AUTH) as r:
        assert r.status == 201, await r.text()
        body = await r.json()
    assert body["version"] == 1
    assert body["sha256"] == hashlib.sha256(artifact).hexdigest()
    assert [f["name"] for f in body["features"]] == ["amount", "velocity", "age"]
    async with connect(settings.nats_url, name="t") as nc:
        stored = await (await nc.jetstream().object_store(Names(settings.namespace).models_bucket)).get(
            f"{MODEL}/1.onnx"
        )
    assert stored.data == artifact
    async with http.get("/models") as r:
        assert (await r.json())["models"] == [{"name": MODEL, "versions": 1, "latest": 1}]
    async with http.get(f"/models/{MODEL}/versions/1") as r:
        assert (await r.json())["sha256"] == body["sha256"]


async def test_register_refuses_bad_artifacts(http: aiohttp.ClientSession) -> None:
    async with http.post(f"/models/{MODEL}/versions", data=version_form(b"not onnx at all"), headers=AUTH) as r:
        assert r.status == 400
        assert "ONNX" in (await r.json())["error"]["message"]
    wide = logistic_model(np.ones(5), 0.0)
    async with http.post(f"/models/{MODEL}/versions", data=version_form(wide), headers=AUTH) as r:
        assert r.status == 400
        assert "5 inputs" in (await r.json())["error"]["message"]
    async with http.post(f"/models/{MODEL}/versions", json={"features": FEATURES}, headers=AUTH) as r:
        assert r.status == 400
        assert "multipart" in (await r.json())["error"]["message"]


async def test_reads_404_and_400(http: aiohttp.ClientSession) -> None:
    for path, status in [("/models/nope", 404), ("/models/fraud/versions/99", 404), ("/models/fraud/versions/x", 400),
                         ("/models/bad.name", 400), ("/models/fraud/rollouts/abc", 404)]:  # fmt: skip
        async with http.get(path) as r:
            assert r.status == status, path
            assert (await r.json())["error"]["message"]


async def test_mutating_routes_need_the_token(http: aiohttp.ClientSession) -> None:
    async with http.post(f"/models/{MODEL}/stable", json={"version": 1}) as r:
        assert r.status == 401
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
    async with http.post(f"/models/{MODEL}/stable", json={"version": 1}, headers={"Authorization": "Bearer no"}) as r:
        assert r.status == 403


async def test_good_canary_walks_5_25_50_100_and_becomes_stable(
    http: aiohttp.ClientSession, settings: CommonSettings, monitor: RecordedMonitor
) -> None:
    async with http.post(f"/models/{MODEL}/stable", json={"version": 1}, headers=AUTH) as r:
        assert r.status == 200, await r.text()
    await register(http, 2)
    monitor.scenarios[2] = "good"
    async with http.post(f"/models/{MODEL}/rollouts", json={"candidate": 2, **FAST_CANARY}, headers=AUTH) as r:
        assert r.status == 201, await r.text()
        rollout = await r.json()
    async with http.post(f"/models/{MODEL}/rollouts", json={"candidate": 2, **FAST_CANARY}, headers=AUTH) as r:
        assert r.status == 409
    done = await wait_finished(http, rollout["id"])
    assert done["state"] == "succeeded"
    kinds = [(e["kind"], e["step"]) for e in done["timeline"] if e["kind"] != "policy_published"]
    assert kinds == [("created", 0), ("step_started", 1), ("step_started", 2), ("step_started", 3), ("promoted", 3)]
    published = [e["detail"]["policy"] for e in done["timeline"] if e["kind"] == "policy_published"]
    assert [p["canary_weight_pct"] for p in published] == [5.0, 25.0, 50.0, 100.0, 0.0]
    async with connect(settings.nats_url, name="t") as nc:
        kv = await nc.jetstream().key_value(Names(settings.namespace).routing_bucket)
        policy = await read_policy(kv, MODEL)
    assert policy is not None
    assert (policy.mode, policy.stable, policy.candidate) == (Mode.STABLE, 2, None)


async def rolled_back_by(
    http: aiohttp.ClientSession, settings: CommonSettings, monitor: RecordedMonitor, seed: int, scenario: str
) -> dict[str, Any]:
    version = (await register(http, seed))["version"]
    monitor.scenarios[version] = scenario
    async with connect(settings.nats_url, name="t") as nc:
        alerts = await nc.subscribe(Names(settings.namespace).alerts("rollback"))
        async with http.post(f"/models/{MODEL}/rollouts", json={"candidate": version, **FAST_CANARY},
                             headers=AUTH) as r:  # fmt: skip
            assert r.status == 201, await r.text()
            rollout = await r.json()
        done = await wait_finished(http, rollout["id"])
        alert = decode((await alerts.next_msg(timeout=5)).data)
    assert done["state"] == "rolled_back"
    assert alert["rollout_id"] == rollout["id"]
    assert alert["candidate"] == version
    last = done["timeline"][-1]
    assert last["kind"] == "policy_published"
    assert last["detail"]["policy"]["mode"] == "stable"
    assert last["detail"]["policy"]["stable"] == 2
    assert last["detail"]["breach_to_routing_ms"] >= 0
    return {"rollout": done, "alert": alert}


async def test_shifted_candidate_is_rolled_back_by_psi(
    http: aiohttp.ClientSession, settings: CommonSettings, monitor: RecordedMonitor
) -> None:
    result = await rolled_back_by(http, settings, monitor, 3, "shifted")
    assert result["alert"]["gates"] == ["psi"]
    failing = result["rollout"]["report"]["rollback"]["failing"][0]
    assert failing["value"] > failing["threshold"]


async def test_slow_candidate_is_rolled_back_by_latency(
    http: aiohttp.ClientSession, settings: CommonSettings, monitor: RecordedMonitor
) -> None:
    result = await rolled_back_by(http, settings, monitor, 4, "slow")
    assert result["alert"]["gates"] == ["latency"]
    async with http.get("/metrics") as r:
        metrics = await r.text()
    assert f'rtml_rollout_rollbacks_total{{gate="latency",model="{MODEL}"}} 1.0' in metrics
    assert f'rtml_rollout_state{{model="{MODEL}"}} 4.0' in metrics
    assert "rtml_rollout_breach_to_routing_seconds_count 2.0" in metrics


async def test_quiet_candidate_holds_then_pause_resume_abort(
    http: aiohttp.ClientSession, monitor: RecordedMonitor, rollout_service: RolloutService
) -> None:
    version = (await register(http, 5))["version"]
    monitor.scenarios[version] = "quiet"
    async with http.post(f"/models/{MODEL}/rollouts", json={"candidate": version, **FAST_CANARY},
                         headers=AUTH) as r:  # fmt: skip
        rollout = await r.json()
    base = f"/models/{MODEL}/rollouts/{rollout['id']}"
    seen = len(monitor.requests)
    for _ in range(400):  # wait for ten checks of too little traffic
        if len(monitor.requests) >= seen + 10:
            break
        await asyncio.sleep(0.05)
    async with http.get(base) as r:
        held = await r.json()
    assert (held["state"], held["step"], held["consecutive_failures"]) == ("running", 0, 0)
    for action, state in [("pause", "paused"), ("resume", "running"), ("abort", "aborted")]:
        async with http.post(f"{base}/{action}", json={"reason": f"test {action}"}, headers=AUTH) as r:
            assert r.status == 200, await r.text()
            assert (await r.json())["state"] == state
    async with http.post(f"{base}/resume", headers=AUTH) as r:
        assert r.status == 409
    done = await wait_finished(http, rollout["id"])
    assert done["timeline"][-1]["detail"]["policy"] == done["timeline"][-1]["detail"]["policy"] | {
        "mode": "stable", "stable": 2}  # fmt: skip
    assert rollout_service.controller.is_leader


async def test_openapi_lists_every_route(http: aiohttp.ClientSession, rollout_service: RolloutService) -> None:
    async with http.get("/openapi.json") as r:
        doc = await r.json()
    served = {(s.method.lower(), s.path) for s in rollout_service.api.specs()}
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert served == documented
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if method == "post":
                assert {"401", "403"} <= set(op["responses"]), path


async def test_shadow_run_ends_with_a_report_and_stable_unchanged(
    http: aiohttp.ClientSession, monitor: RecordedMonitor
) -> None:
    version = (await register(http, 6))["version"]
    monitor.scenarios[version] = "good"
    body = {"candidate": version, "strategy": "shadow", "shadow_share": 0.5, "duration_s": 0.3}
    async with http.post(f"/models/{MODEL}/rollouts", json=body, headers=AUTH) as r:
        assert r.status == 201, await r.text()
        rollout = await r.json()
    published = [e for e in (await wait_finished(http, rollout["id"]))["timeline"] if e["kind"] == "policy_published"]
    assert published[0]["detail"]["policy"]["mode"] == "shadow"
    assert published[0]["detail"]["policy"]["shadow_share"] == 0.5
    done = await wait_finished(http, rollout["id"])
    assert done["state"] == "succeeded"
    assert done["report"]["shadow"]["comparison"]["agreement"] == 0.98
    assert done["timeline"][-1]["detail"]["policy"] | {"mode": "stable", "stable": 2} == done["timeline"][-1][
        "detail"]["policy"]  # fmt: skip
    async with http.post(f"/models/{MODEL}/rollouts/{rollout['id']}/promote", headers=AUTH) as r:
        assert r.status == 409
