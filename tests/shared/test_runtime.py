"""The service runtime against a real NATS: endpoints, errors, health, metrics, concurrency."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Sequence
from typing import Any, ClassVar

import aiohttp
import nats
import pytest

from shared.bus import connect, request
from shared.errors import BadRequest, NotFound, ServiceError
from shared.runtime import YOUNG_GENERATION_THRESHOLD, Endpoint, Request, Service, tune_collector
from shared.settings import CommonSettings
from shared.tracing import TRACEPARENT, TraceContext


class EchoService(Service):
    name: ClassVar[str] = "echo"

    def __init__(self, common: CommonSettings) -> None:
        super().__init__(common)
        self.concurrent = 0
        self.peak_concurrent = 0

    def endpoints(self) -> Sequence[Endpoint]:
        return [
            Endpoint("echo", f"{self.names.namespace}.echo", self.echo),
            Endpoint("slow", f"{self.names.namespace}.slow", self.slow),
        ]

    async def echo(self, req: Request) -> dict[str, Any]:
        body = req.payload()
        if body.get("missing"):
            raise NotFound(f"no such thing: {body['missing']}")
        if body.get("crash"):
            raise RuntimeError("boom")
        return {"echo": body, "trace_id": req.trace.trace_id}

    async def slow(self, req: Request) -> dict[str, Any]:
        self.concurrent += 1
        self.peak_concurrent = max(self.peak_concurrent, self.concurrent)
        try:
            await asyncio.sleep(float(req.payload()["sleep_s"]))
        finally:
            self.concurrent -= 1
        return {"done": True}


@pytest.fixture(scope="module")
async def echo(settings: CommonSettings) -> AsyncIterator[EchoService]:
    service = EchoService(settings)
    await service.start()
    yield service
    await service.stop()


@pytest.fixture(scope="module")
async def client(settings: CommonSettings) -> AsyncIterator[nats.aio.client.Client]:
    async with connect(settings.nats_url, name="test-client") as nc:
        yield nc


async def test_request_reply_roundtrip(echo: EchoService, client: Any) -> None:
    reply = await request(client, f"{echo.names.namespace}.echo", {"x": 1})
    assert reply["echo"] == {"x": 1}


async def test_trace_context_is_continued(echo: EchoService, client: Any) -> None:
    trace = TraceContext.new()
    msg = await client.request(
        f"{echo.names.namespace}.echo", b"\x80", headers={TRACEPARENT: trace.header()}, timeout=2
    )
    assert TraceContext.parse(msg.headers[TRACEPARENT]).trace_id == trace.trace_id  # type: ignore[union-attr]


async def test_errors_cross_as_micro_headers(echo: EchoService, client: Any) -> None:
    with pytest.raises(NotFound, match="no such thing: x"):
        await request(client, f"{echo.names.namespace}.echo", {"missing": "x"})
    with pytest.raises(BadRequest, match="msgpack map"):
        msg = await client.request(f"{echo.names.namespace}.echo", b"\x91\x01", timeout=2)
        from shared.errors import raise_for_reply

        raise_for_reply(msg.headers)
    with pytest.raises(ServiceError) as crashed:
        await request(client, f"{echo.names.namespace}.echo", {"crash": True})
    assert crashed.value.code == 500
    # the service survived all of that
    assert (await request(client, f"{echo.names.namespace}.echo", {"ok": 1}))["echo"] == {"ok": 1}


async def test_handlers_run_concurrently(echo: EchoService, client: Any) -> None:
    subject = f"{echo.names.namespace}.slow"
    started = asyncio.get_running_loop().time()
    replies = await asyncio.gather(*(request(client, subject, {"sleep_s": 0.3}) for _ in range(20)))
    assert all(r["done"] for r in replies)
    assert echo.peak_concurrent >= 10
    assert asyncio.get_running_loop().time() - started < 3.0


async def test_micro_ping_info_stats(echo: EchoService, client: Any) -> None:
    info = await client.request("$SRV.INFO.rtml-echo", b"", timeout=2)
    assert b'"echo"' in info.data and echo.names.namespace.encode() in info.data
    ping = await client.request("$SRV.PING.rtml-echo", b"", timeout=2)
    assert b"rtml-echo" in ping.data


async def test_health_ready_metrics(echo: EchoService, client: Any) -> None:
    await request(client, f"{echo.names.namespace}.echo", {"m": 1})
    base = f"http://127.0.0.1:{echo.http_port}"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/healthz") as response:
            assert response.status == 200
        async with http.get(f"{base}/readyz") as response:
            assert response.status == 200
        async with http.get(f"{base}/metrics") as response:
            text = await response.text()
    assert 'rtml_echo_requests_total{endpoint="echo"}' in text
    assert "rtml_echo_request_latency_seconds_bucket" in text
    assert 'rtml_echo_errors_total{code="404",endpoint="echo"}' in text


def test_tune_collector_freezes_start_up_and_spaces_young_collections() -> None:
    before = gc.get_threshold()
    try:
        tune_collector()
        assert gc.get_threshold() == (YOUNG_GENERATION_THRESHOLD, before[1], before[2])
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
