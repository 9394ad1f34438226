"""Fixtures for rollout: the service in-process on the real servers, a recorded monitor, a REST client."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import aiohttp
import numpy as np
import pytest

from services.rollout.service import RolloutService
from services.rollout.settings import RolloutSettings
from shared.settings import CommonSettings
from tests.onnx_factory import logistic_model

from .recorded import RecordedMonitor

TOKEN = "test-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FEATURES = [{"name": "amount"}, {"name": "velocity", "default": 1.0}, {"name": "age"}]


@pytest.fixture(scope="module")
async def monitor(settings: CommonSettings) -> AsyncIterator[RecordedMonitor]:
    service = RecordedMonitor(settings)
    await service.start()
    yield service
    await service.stop()


@pytest.fixture(scope="module")
async def rollout_service(settings: CommonSettings, monitor: RecordedMonitor) -> AsyncIterator[RolloutService]:
    common = replace(settings, admin_token=TOKEN)
    service = RolloutService(RolloutSettings(common=common, check_interval_s=0.1, summary_timeout_s=1.0))
    await service.start()
    yield service
    await service.stop()


@pytest.fixture(scope="module")
async def http(rollout_service: RolloutService) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{rollout_service.http_port}") as session:
        yield session


def version_form(artifact: bytes, metadata: dict[str, Any] | None = None) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("artifact", artifact, filename="model.onnx", content_type="application/octet-stream")
    form.add_field("metadata", json.dumps(metadata or {"features": FEATURES}), content_type="application/json")
    return form


def model_bytes(seed: int) -> bytes:
    return logistic_model(np.random.default_rng(seed).normal(size=len(FEATURES)), 0.1)
