"""The inference service on the real NATS, Redis and Postgres."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from nats.aio.client import Client

from services.inference.service import InferenceService
from services.inference.settings import InferenceSettings
from shared.bus import request
from shared.codec import decode
from shared.errors import BadRequest, DeadlineExceeded, NotFound, Overloaded, ServiceError, Unavailable
from shared.messages import PredictionRecord
from shared.online import feature_key, open_redis, vector_to_hash
from shared.routing import Mode, RoutingPolicy
from shared.settings import CommonSettings
from shared.subjects import Names
from tests.inference.conftest import Register, apply_policy, wait_until
from tests.onnx_factory import logistic_model

W1, B1 = [0.3, -0.02, 0.004], -0.5
W2, B2 = [-0.1, 0.05, 0.001], 0.2


class Recorder:
    """Collects the prediction log of one model."""

    def __init__(self) -> None:
        self.records: list[PredictionRecord] = []

    async def handle(self, msg: Any) -> None:
        self.records.append(PredictionRecord.from_dict(decode(msg.data)))


async def subscribe_log(client: Client, names: Names, model: str) -> Recorder:
    recorder = Recorder()
    await client.subscribe(names.predictions(model), cb=recorder.handle)
    await client.flush()
    return recorder


async def predict(client: Client, names: Names, model: str, body: dict[str, Any]) -> dict[str, Any]:
    return await request(client, names.predict(model), body, timeout_s=5.0)


def direct(weights: list[float], bias: float, rows: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(logistic_model(np.array(weights), bias), providers=["CPUExecutionProvider"])
    (scores,) = session.run(None, {"x": rows.astype(np.float32)})
    return np.asarray(scores)


async def test_predictions_match_the_model_run_directly(  # noqa: PLR0917 (fixtures)
    service: InferenceService, client: Client, names: Names, kv: Any, register: Register, settings: CommonSettings
) -> None:
    version = await register("fraud", W1, B1, batch_policy={"max_batch_size": 16, "max_queue_delay_us": 2000})
    await apply_policy(kv, service, RoutingPolicy("fraud", stable=version.version))
    rng = np.random.default_rng(3)
    online = {f"card_{i}": (float(rng.integers(0, 50)), float(rng.uniform(1, 500))) for i in range(40)}
    async with open_redis(settings.redis_url) as redis:
        for entity, (count, avg) in online.items():
            await redis.hset(
                feature_key(names, "card", entity), mapping=vector_to_hash({"txn_count": count, "avg_amount": avg})
            )
    log = await subscribe_log(client, names, "fraud")
    amounts = {entity: float(rng.uniform(0, 1000)) for entity in online}
    replies = await asyncio.gather(
        *(predict(client, names, "fraud", {"entity": e, "id": f"r-{e}", "features": {"amount": a}})
          for e, a in amounts.items())
    )  # fmt: skip
    rows = np.array([[*online[e], amounts[e]] for e in amounts])
    expected = direct(W1, B1, rows)
    np.testing.assert_allclose([r["score"] for r in replies], expected, rtol=1e-5)
    assert {(r["version"], r["variant"], r["degraded"]) for r in replies} == {(version.version, "stable", False)}
    assert set(replies[0]["timings_us"]) == {"features", "queue", "model", "total"}
    assert service.inference_metrics.batch_size.collect()[0].samples  # batches were recorded

    # An entity the online store does not know: defaults and degraded.
    unknown = await predict(client, names, "fraud", {"entity": "nobody", "features": {"amount": 5}})
    assert unknown["degraded"] is True
    assert unknown["score"] == pytest.approx(float(direct(W1, B1, np.array([[0.0, 10.0, 5.0]]))[0]), rel=1e-5)

    await wait_until(lambda: len(log.records) >= len(replies) + 1)
    by_id = {r.id: r for r in log.records}
    record = by_id["r-card_0"]
    assert record.features == pytest.approx({"txn_count": online["card_0"][0], "avg_amount": online["card_0"][1],
                                             "amount": amounts["card_0"]}, rel=1e-6)  # fmt: skip
    assert record.score == pytest.approx(replies[0]["score"]) and record.variant == "stable"
    assert set(record.timings_us) == {"features", "queue", "model", "total"}


async def test_error_codes(
    service: InferenceService, client: Client, names: Names, kv: Any, register: Register
) -> None:
    with pytest.raises(NotFound, match="no routing policy"):
        await predict(client, names, "no_such_model", {"entity": "a"})
    with pytest.raises(BadRequest, match="'entity' is required"):
        await predict(client, names, "fraud", {"features": {}})
    with pytest.raises(BadRequest, match="feature 'amount' must be a number"):
        await predict(client, names, "fraud", {"entity": "a", "features": {"amount": "lots"}})
    with pytest.raises(DeadlineExceeded):
        await predict(client, names, "fraud", {"entity": "a", "deadline_ms": int(time.time() * 1000) - 1})

    # A policy whose version cannot be loaded, with nothing before it: 503.
    await apply_policy(kv, service, RoutingPolicy("ghost", stable=7))
    with pytest.raises(Unavailable, match="no loaded version"):
        await predict(client, names, "ghost", {"entity": "a"})

    # A queue of one, one batch at a time: a burst is shed with 429, and everything is answered.
    tiny = await register(
        "tiny", W1, B1,
        batch_policy={"max_batch_size": 1, "max_queue_size": 1, "max_concurrent_batches": 1},
    )  # fmt: skip
    await apply_policy(kv, service, RoutingPolicy("tiny", stable=tiny.version))
    outcomes = await asyncio.gather(
        *(predict(client, names, "tiny", {"entity": f"e{i}"}) for i in range(60)), return_exceptions=True
    )
    shed = [o for o in outcomes if isinstance(o, Overloaded)]
    assert shed and all(isinstance(o, dict | Overloaded) for o in outcomes)
    assert any(isinstance(o, dict) for o in outcomes)


async def test_canary_share_is_sticky_per_entity(
    service: InferenceService, client: Client, names: Names, kv: Any, register: Register
) -> None:
    candidate = await register("fraud", W2, B2, batch_policy={"max_batch_size": 32, "max_queue_delay_us": 1000})
    stable = service.table.get("fraud").policy.stable  # type: ignore[union-attr]
    policy = RoutingPolicy("fraud", stable=stable, mode=Mode.CANARY, candidate=candidate.version,
                           canary_weight_pct=20.0, revision=1)  # fmt: skip
    await apply_policy(kv, service, policy)
    entities = [f"canary_{i}" for i in range(1000)]
    seen: dict[str, set[int]] = {e: set() for e in entities}
    for _ in range(2):
        for start in range(0, len(entities), 250):
            chunk = entities[start : start + 250]
            replies = await asyncio.gather(*(predict(client, names, "fraud", {"entity": e}) for e in chunk))
            for entity, reply in zip(chunk, replies, strict=True):
                seen[entity].add(reply["version"])
                assert reply["variant"] == ("candidate" if reply["version"] == candidate.version else "stable")
    assert all(len(versions) == 1 for versions in seen.values())
    share = sum(candidate.version in versions for versions in seen.values()) / len(entities)
    assert 0.17 <= share <= 0.23


async def test_shadow_never_changes_replies(service: InferenceService, client: Client, names: Names, kv: Any) -> None:
    state = service.table.get("fraud")
    assert state is not None and state.policy.candidate is not None
    stable, candidate = state.policy.stable, state.policy.candidate
    await apply_policy(kv, service, RoutingPolicy("fraud", stable=stable, revision=2))
    bodies = [{"entity": f"card_{i}", "id": f"s-{i}", "features": {"amount": 10.0 * i}} for i in range(30)]
    plain = await asyncio.gather(*(predict(client, names, "fraud", b) for b in bodies))
    log = await subscribe_log(client, names, "fraud")
    policy = RoutingPolicy("fraud", stable=stable, mode=Mode.SHADOW, candidate=candidate, shadow_share=1.0,
                           revision=3)  # fmt: skip
    await apply_policy(kv, service, policy)
    shadowed = await asyncio.gather(*(predict(client, names, "fraud", b) for b in bodies))
    assert [r["score"] for r in shadowed] == [r["score"] for r in plain]
    assert {(r["version"], r["variant"]) for r in shadowed} == {(stable, "stable")}
    await wait_until(lambda: sum(r.variant == "shadow" for r in log.records) >= len(bodies))
    shadows = {r.id: r for r in log.records if r.variant == "shadow"}
    assert set(shadows) == {b["id"] for b in bodies}
    first = shadows["s-1"]
    assert first.version == candidate
    row = np.array([[first.features["txn_count"], first.features["avg_amount"], first.features["amount"]]])
    assert first.score == pytest.approx(float(direct(W2, B2, row)[0]), rel=1e-5)


async def test_a_corrupt_artifact_is_refused_and_the_previous_version_keeps_serving(  # noqa: PLR0917
    service: InferenceService, client: Client, names: Names, kv: Any, register: Register, store: Any
) -> None:
    before = service.table.get("fraud")
    assert before is not None
    bad = await register("fraud", W2, B2)
    await store.put(bad.artifact_name, b"tampered bytes")
    refused = service.inference_metrics.loads.labels("fraud", "refused")
    count = refused._value.get()
    await apply_policy(kv, service, RoutingPolicy("fraud", stable=bad.version, revision=4))
    await wait_until(lambda: refused._value.get() > count)
    assert refused._value.get() == count + 1
    assert service.table.get("fraud") is before
    reply = await predict(client, names, "fraud", {"entity": "card_1"})
    assert reply["version"] == before.policy.stable


async def test_requires_features_answers_503_when_the_store_is_down(
    service: InferenceService, client: Client, names: Names, kv: Any, register: Register
) -> None:
    strict = await register("strict", W1, B1, requires_features=True)
    lenient = await register("lenient", W1, B1)
    await apply_policy(kv, service, RoutingPolicy("strict", stable=strict.version))
    await apply_policy(kv, service, RoutingPolicy("lenient", stable=lenient.version))
    original = service.online.redis
    async with open_redis("redis://127.0.0.1:1/0") as dead:  # nothing listens there
        service.online.redis = dead
        try:
            with pytest.raises(Unavailable, match="requires them"):
                await predict(client, names, "strict", {"entity": "card_1"})
            reply = await predict(client, names, "lenient", {"entity": "card_1", "features": {"amount": 1}})
            assert reply["degraded"] is True
        finally:
            service.online.redis = original
    assert (await predict(client, names, "strict", {"entity": "card_1"}))["version"] == strict.version


async def test_a_deleted_policy_stops_the_model(
    service: InferenceService, client: Client, names: Names, kv: Any
) -> None:
    await kv.delete("lenient")
    await wait_until(lambda: service.table.get("lenient") is None)
    with pytest.raises(ServiceError) as error:
        await predict(client, names, "lenient", {"entity": "a"})
    assert error.value.code == 404


async def test_policy_switches_under_load_drop_nothing(
    service: InferenceService, client: Client, names: Names, kv: Any
) -> None:
    state = service.table.get("fraud")
    assert state is not None and state.policy.candidate is not None
    stable, candidate = state.policy.stable, state.policy.candidate
    revision = state.policy.revision

    async def flip() -> None:
        for i in range(1, 5):
            await asyncio.sleep(0.05)
            pick = candidate if i % 2 else stable
            await apply_policy(kv, service, RoutingPolicy("fraud", stable=pick, revision=revision + i))

    async def load() -> list[dict[str, Any]]:
        replies = []
        for start in range(0, 400, 50):
            replies += await asyncio.gather(
                *(predict(client, names, "fraud", {"entity": f"card_{i % 40}"}) for i in range(start, start + 50))
            )
        return replies

    replies, _ = await asyncio.gather(load(), flip())
    assert len(replies) == 400 and {r["version"] for r in replies} <= {stable, candidate}


async def test_a_request_before_the_routing_snapshot_is_unavailable_not_unknown(settings: CommonSettings) -> None:
    """Right after a (re)start the endpoint may answer before the policies are loaded: 503, never 404."""
    fresh = InferenceService(InferenceSettings(common=settings, warm_up_rounds=0))

    class Early:  # what nats.micro hands the handler: the subject and the decoded payload
        subject = f"{settings.namespace}.predict.fraud"

        def payload(self) -> dict[str, Any]:
            return {"entity": "a"}

    with pytest.raises(Unavailable, match="not loaded yet"):
        await fresh.predict(Early())  # type: ignore[arg-type]
