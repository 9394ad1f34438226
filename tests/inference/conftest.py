"""Fixtures for the inference tests: registry handles, a client connection, a running service."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import numpy as np
import pytest
from nats.aio.client import Client

from services.inference.service import InferenceService
from services.inference.settings import InferenceSettings
from shared.bus import connect
from shared.registry import FeatureSpec, ModelMetadata, ModelVersion, register_version
from shared.routing import RoutingPolicy, write_policy
from shared.settings import CommonSettings
from tests.onnx_factory import logistic_model

FEATURES = [
    FeatureSpec("txn_count", "online", default=0.0, view="card"),
    FeatureSpec("avg_amount", "online", default=10.0, view="card"),
    FeatureSpec("amount", "request", default=0.0),
]


@pytest.fixture(scope="module")
async def client(settings: CommonSettings) -> AsyncIterator[Client]:
    async with connect(settings.nats_url, name="test-inference-client") as nc:
        yield nc


@pytest.fixture(scope="module")
async def kv(client: Client, settings: CommonSettings) -> Any:
    return await client.jetstream().key_value(f"{settings.namespace}_routing")


@pytest.fixture(scope="module")
async def service(settings: CommonSettings) -> AsyncIterator[InferenceService]:
    svc = InferenceService(InferenceSettings(common=settings, warm_up_rounds=1))
    await svc.start()
    await svc.wait_synced()
    yield svc
    await svc.stop()


Register = Callable[..., Any]


@pytest.fixture(scope="module")
def register(pool: asyncpg.Pool, store: Any) -> Register:
    async def register_model(
        model: str, weights: list[float], bias: float, *, batch_policy: dict[str, Any] | None = None,
        features: list[FeatureSpec] | None = None, requires_features: bool = False,
    ) -> ModelVersion:  # fmt: skip
        metadata = ModelMetadata(
            features=features or FEATURES, batch_policy=batch_policy or {}, requires_features=requires_features
        )
        return await register_version(pool, store, model, logistic_model(np.array(weights), bias), metadata)

    return register_model


async def apply_policy(kv: Any, service: InferenceService, policy: RoutingPolicy) -> None:
    """Write the policy and wait until the service has switched to it (or refused it)."""
    await write_policy(kv, policy)
    for _ in range(300):
        state = service.table.get(policy.model)
        if state is not None and state.policy == policy:
            return
        await asyncio.sleep(0.02)


async def wait_until(predicate: Callable[[], bool], attempts: int = 300) -> None:
    for _ in range(attempts):
        if predicate():
            return
        await asyncio.sleep(0.02)
