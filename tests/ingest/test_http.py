"""``POST /v1/events``: per-event answers, the events reach the stream, 413 and 400."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgpack
import pytest
from nats.aio.client import Client

from services.ingest.dlq import CONTENT_TYPE, REASON, SOURCE
from services.ingest.service import IngestService
from services.ingest.settings import IngestSettings
from services.ingest.streams import read_stream
from shared.settings import CommonSettings
from shared.subjects import Names
from tests.ingest.accounting import wait_for_outcomes
from tests.ingest.cases import transaction


@pytest.fixture(scope="module")
async def service(settings: CommonSettings) -> AsyncIterator[IngestService]:
    svc = IngestService(IngestSettings(common=settings, fetch_wait_s=0.2, max_body_bytes=64 * 1024, max_http_events=50))
    await svc.start()
    yield svc
    await svc.stop()


async def post(service: IngestService, body: bytes, **headers: str) -> tuple[int, Any]:
    url = f"http://127.0.0.1:{service.http_port}/v1/events"
    async with aiohttp.ClientSession() as http, http.post(url, data=body, headers=headers) as response:
        return response.status, await response.json()


async def test_per_event_answers_and_delivery(service: IngestService, nc: Client, names: Names) -> None:
    now_ms = int(time.time() * 1000)
    good = transaction("h-1", now_ms)
    no_id = {k: v for k, v in transaction("unused", now_ms).items() if k != "id"}
    bad = transaction("h-bad", now_ms, amount="NaN")
    events = [good, no_id, bad, {"id": "h-notype", "entity": "x", "ts": now_ms}, [1], {"type": "refund", "id": "h-r"}]
    body = json.dumps(events).encode()
    status, answer = await post(service, body, **{"Content-Type": "application/json"})
    assert status == 200
    assert (answer["accepted"], answer["rejected"], answer["failed"]) == (2, 4, 0)
    results = answer["results"]
    assert [r["status"] for r in results] == ["accepted", "accepted", "rejected", "rejected", "rejected", "rejected"]
    assert results[0]["id"] == "h-1" and len(results[1]["id"]) == 32  # generated
    assert (results[2]["reason"], results[2]["field"]) == ("not_finite", "data.amount")
    assert (results[3]["reason"], results[3]["field"]) == ("missing_field", "type")
    assert results[4]["reason"] == "not_a_map"
    assert results[5]["reason"] == "unknown_type"

    js = nc.jetstream()
    await wait_for_outcomes(js, names, 6)
    normalized = await read_stream(js, names.stream("norm"))
    assert sorted(msgpack.unpackb(m.data)["id"] for m in normalized) == sorted([results[0]["id"], results[1]["id"]])
    letters = await read_stream(js, names.stream("dlq"))
    assert sorted(m.headers[REASON] for m in letters) == ["missing_field", "not_a_map", "not_finite", "unknown_type"]
    assert all(m.headers[SOURCE] == "http" and m.headers[CONTENT_TYPE] == "application/json" for m in letters)
    nan_letter = next(m for m in letters if m.headers[REASON] == "not_finite")
    assert json.loads(nan_letter.data)["id"] == "h-bad"


async def test_the_same_event_posted_twice_is_one_event(service: IngestService, nc: Client, names: Names) -> None:
    event = transaction("h-twice", int(time.time() * 1000))
    for _ in range(2):
        status, answer = await post(service, json.dumps([event]).encode())
        assert status == 200 and answer["accepted"] == 1
    events = await read_stream(nc.jetstream(), names.stream("events"), subject=names.events("transaction"))
    assert sum(1 for m in events if m.headers.get("Nats-Msg-Id") == "h-twice") == 1


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"not json", 400, "not JSON"),
        (b'{"id": 1}', 400, "JSON array"),
        (b"\xff\xfe", 400, "not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, 413, "exceeds"),
        (json.dumps([{}] * 51).encode(), 413, "limit of 50"),
        (b"[" + b" " * 70_000 + b"]", 413, "exceeds"),
    ],
)
async def test_bad_bodies(service: IngestService, body: bytes, status: int, message: str) -> None:
    answered, answer = await post(service, body)
    assert answered == status
    assert message in answer["error"]["message"]


async def test_deep_json_body_is_refused_not_crashed(service: IngestService) -> None:
    answered, answer = await post(service, b"[" * 30_000 + b"]" * 30_000)
    assert answered == 400 and "deep" in answer["error"]["message"]


async def test_schemas_are_listed(service: IngestService) -> None:
    url = f"http://127.0.0.1:{service.http_port}/v1/schemas"
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        body = await response.json()
    assert [s["type"] for s in body["schemas"]] == ["label", "transaction"]
