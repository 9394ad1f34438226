"""The NATS connection helper: a dead server fails within the startup bound, naming the URL."""

from __future__ import annotations

import pytest

from shared.bus import connect
from tests.shared.test_local_infra import free_port


async def test_unreachable_nats_fails_within_the_startup_timeout() -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    with pytest.raises(ConnectionError, match=f"cannot reach NATS at {url} within 1s"):
        async with connect(url, name="test-unreachable", startup_timeout_s=1.0):
            pytest.fail("connected to a port where nothing listens")
