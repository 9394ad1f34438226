"""Auth configuration: no admin token disables mutations (403), protected reads need the token."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import aiohttp
import pytest

from services.rollout.service import RolloutService
from services.rollout.settings import RolloutSettings
from shared.settings import CommonSettings

from .conftest import TOKEN


@pytest.fixture(scope="module")
async def tokenless(settings: CommonSettings) -> AsyncIterator[RolloutService]:
    service = RolloutService(RolloutSettings(common=replace(settings, admin_token=""), check_interval_s=1))
    await service.start()
    yield service
    await service.stop()


@pytest.fixture(scope="module")
async def guarded(settings: CommonSettings) -> AsyncIterator[RolloutService]:
    common = replace(settings, admin_token=TOKEN)
    service = RolloutService(RolloutSettings(common=common, check_interval_s=1, protect_reads=True))
    await service.start()
    yield service
    await service.stop()


async def test_without_a_configured_token_every_mutation_is_refused(tokenless: RolloutService) -> None:
    async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{tokenless.http_port}") as http:
        for header in ({}, {"Authorization": "Bearer "}, {"Authorization": f"Bearer {TOKEN}"}):
            async with http.post("/models/m/stable", json={"version": 1}, headers=header) as r:
                assert r.status == 403
                assert "RTML_ADMIN_TOKEN" in (await r.json())["error"]["message"]
        async with http.get("/models") as r:
            assert r.status == 200


async def test_protected_reads_need_the_token_but_the_document_stays_open(guarded: RolloutService) -> None:
    async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{guarded.http_port}") as http:
        async with http.get("/models") as r:
            assert r.status == 401
        async with http.get("/models", headers={"Authorization": "Bearer nope"}) as r:
            assert r.status == 403
        async with http.get("/models", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            assert r.status == 200
        async with http.get("/openapi.json") as r:
            assert r.status == 200
        async with http.get("/healthz") as r:
            assert r.status == 200
