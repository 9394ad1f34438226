"""The intake against a real JetStream: conservation, unknown types, poison messages, metrics."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator

import aiohttp
import msgpack
import pytest
from nats.aio.client import Client

from services.ingest.client import EventClient
from services.ingest.dlq import DELIVERIES, MESSAGE, REASON
from services.ingest.reasons import Reason
from services.ingest.service import IngestService
from services.ingest.settings import IngestSettings
from services.ingest.streams import read_stream
from shared.settings import CommonSettings
from shared.subjects import Names
from tests.ingest.accounting import check_conservation, publish_cases, read_ledger, wait_for_outcomes
from tests.ingest.cases import Case, malformed_cases, pack, valid_cases


@pytest.fixture(scope="module")
async def service(settings: CommonSettings) -> AsyncIterator[IngestService]:
    ingest = IngestSettings(
        common=settings,
        schema_sources=("tests.ingest.crashy_schemas",),
        batch=64,
        max_deliver=3,
        backoff_s=0.05,
        fetch_wait_s=0.2,
    )
    svc = IngestService(ingest)
    await svc.start()
    yield svc
    await svc.stop()


def event_ids(cases: list[Case]) -> dict[str, str]:
    return {c.name: msgpack.unpackb(c.data)["id"] for c in cases if c.reason is None}


async def test_conservation(service: IngestService, nc: Client, names: Names) -> None:
    now_ms = int(time.time() * 1000)
    cases = valid_cases("c", 200, now_ms) + malformed_cases("c", now_ms)
    js = nc.jetstream()
    by_seq = await publish_cases(js, names, cases)
    await wait_for_outcomes(js, names, len(cases))
    # duplicates of what was already published are dropped at the door (same Nats-Msg-Id)
    again = await js.publish(names.events(cases[0].subject_type), cases[0].data, headers={"Nats-Msg-Id": cases[0].name})
    assert again.duplicate
    await asyncio.sleep(0.3)  # give a wrongly doubled output the chance to appear before counting
    check_conservation(await read_ledger(js, names), by_seq, event_ids(cases))


async def test_poison_message_is_retried_then_dead_lettered(service: IngestService, nc: Client, names: Names) -> None:
    js = nc.jetstream()
    now_ms = int(time.time() * 1000)
    body = {"id": "poison-1", "entity": "s1", "ts": now_ms, "data": {"sensor": "a", "value": 3, "poison": True}}
    ok = {"id": "reading-ok", "entity": "s1", "ts": now_ms, "data": {"sensor": "B ", "value": "21.5"}}
    ack = await js.publish(names.events("reading"), pack(body), headers={"Nats-Msg-Id": "poison-1"})
    await js.publish(names.events("reading"), pack(ok), headers={"Nats-Msg-Id": "reading-ok"})
    letter = None
    for _ in range(200):
        letters = [m for m in await read_stream(js, names.stream("dlq"), subject=names.dlq("reading"))]
        if letters:
            letter = letters[0]
            break
        await asyncio.sleep(0.05)
    assert letter is not None
    assert letter.headers[REASON] == Reason.HANDLER_CRASH
    assert letter.headers[DELIVERIES] == "3"
    assert "poisoned reading" in letter.headers[MESSAGE]
    assert letter.data == pack(body) and int(letter.headers["Rtml-Source-Seq"]) == ack.seq
    normalized = await read_stream(js, names.stream("norm"), subject=names.norm("reading"))
    assert [msgpack.unpackb(m.data)["data"] for m in normalized] == [{"sensor": "b", "value": 21.5, "value_f": 70.7}]


async def test_metrics_count_by_type_and_reason(service: IngestService) -> None:
    url = f"http://127.0.0.1:{service.http_port}/metrics"
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        text = await response.text()
    assert 'rtml_ingest_events_accepted_total{type="transaction"} 150.0' in text
    assert 'rtml_ingest_events_accepted_total{type="label"} 50.0' in text
    assert 'rtml_ingest_events_rejected_total{reason="oversize",type="transaction"} 1.0' in text
    assert 'rtml_ingest_events_rejected_total{reason="unknown_type",type="_unknown"} 1.0' in text
    assert 'rtml_ingest_events_rejected_total{reason="handler_crash",type="reading"} 1.0' in text
    assert 'rtml_ingest_handler_crashes_total{type="reading"} 3.0' in text
    assert 'rtml_ingest_unknown_fields_total{type="transaction"} 50.0' in text
    assert "rtml_ingest_intake_latency_seconds_bucket" in text
    assert "rtml_ingest_consumer_lag" in text


def test_settings_defaults_are_the_documented_ones() -> None:
    defaults = IngestSettings.from_env({})
    assert dataclasses.replace(defaults, common=CommonSettings(http_port=8101)) == IngestSettings(
        common=CommonSettings(http_port=8101)
    )
    assert defaults.common.http_port == 8101


async def test_client_sdk(service: IngestService, nc: Client, names: Names) -> None:
    client = EventClient(nc.jetstream(), names, max_pending=8)
    data = {"merchant": "m-9", "amount": 5, "currency": "usd", "country": "us", "channel": "pos"}
    first = await client.publish_event("transaction", "card-9", data)
    ids = [await client.publish_event("transaction", "card-9", data, wait=False) for _ in range(20)]
    ids.append(await client.publish_event("label", "card-9", {"id": first, "label": 0}, id="sdk-label", wait=False))
    assert client.pending <= 8
    await client.flush()
    assert client.pending == 0 and len(set(ids)) == 21 and ids[-1] == "sdk-label"
    with pytest.raises(ValueError, match="event type"):
        await client.publish_event("bad.type", "x", {})
    js = nc.jetstream()
    wanted = {first, *ids[:-1]}
    for _ in range(200):
        normalized = await read_stream(js, names.stream("norm"), subject=names.norm("transaction"))
        if wanted <= {msgpack.unpackb(m.data)["id"] for m in normalized}:
            break
        await asyncio.sleep(0.05)
    assert wanted <= {msgpack.unpackb(m.data)["id"] for m in normalized}
    labels = await read_stream(js, names.stream("labels"), subject=names.labels("label"))
    assert any(msgpack.unpackb(m.data) == {"id": first, "label": 0.0, "ts": msgpack.unpackb(m.data)["ts"],
                                           "event_id": "sdk-label"} for m in labels)  # fmt: skip


async def test_two_replicas_share_the_consumer(service: IngestService, settings: CommonSettings, nc: Client) -> None:
    names = Names(settings.namespace)
    second = IngestService(IngestSettings(common=settings, batch=16, fetch_wait_s=0.2))
    await second.start()
    try:
        js = nc.jetstream()
        before = await read_ledger(js, names)
        now_ms = int(time.time() * 1000)
        cases = valid_cases("r2", 1000, now_ms) + malformed_cases("r2", now_ms)
        by_seq = await publish_cases(js, names, cases)
        expected = len(before.norm) + len(before.labels) + len(before.dlq) + len(cases)
        await wait_for_outcomes(js, names, expected)
    finally:
        await second.stop()
    after = await read_ledger(js, names)
    known = {(m.seq, m.subject) for m in before.norm + before.labels + before.dlq}
    fresh = type(after)(
        norm=[m for m in after.norm if (m.seq, m.subject) not in known],
        labels=[m for m in after.labels if (m.seq, m.subject) not in known],
        dlq=[m for m in after.dlq if (m.seq, m.subject) not in known],
    )
    check_conservation(fresh, by_seq, event_ids(cases))
