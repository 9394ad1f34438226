"""Fixtures of the ingest tests: a running ingest service on the module's namespace."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from services.ingest.service import IngestService
from services.ingest.settings import IngestSettings
from shared.settings import CommonSettings


@pytest.fixture(scope="module")
async def service(settings: CommonSettings) -> AsyncIterator[IngestService]:
    svc = IngestService(IngestSettings(common=settings, fetch_wait_s=0.2))
    await svc.start()
    yield svc
    await svc.stop()
