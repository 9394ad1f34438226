"""Dead letters for the operator: list, show, and replay after a fix, through the functions and the CLI."""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import msgpack
import pytest
import structlog
from nats.aio.client import Client

from services.ingest import cli
from services.ingest.replay import get_letter, list_letters, replay
from services.ingest.schema import EventSchema
from services.ingest.service import IngestService
from services.ingest.streams import read_stream
from shared.settings import CommonSettings
from shared.subjects import Names
from tests.ingest.cases import pack, transaction

REFUND = {"type": "refund", "version": 1, "fields": {"amount": {"kind": "number", "required": True, "min": 0}}}


async def wait_for(js: object, check: object) -> None:
    for _ in range(200):
        if await check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)


async def test_replay_after_a_fix(service: IngestService, nc: Client, names: Names) -> None:
    js = nc.jetstream()
    now_ms = int(time.time() * 1000)
    refunds = [{"id": f"rf-{i}", "entity": "c", "ts": now_ms, "data": {"amount": i}} for i in range(3)]
    for body in refunds:
        await js.publish(names.events("refund"), pack(body), headers={"Nats-Msg-Id": body["id"]})
    await js.publish(names.events("transaction"), pack(transaction("tx-bad", now_ms, channel="fax")))

    async def all_dead() -> bool:
        return len(await list_letters(js, names)) == 4

    await wait_for(js, all_dead)
    letters = await list_letters(js, names, reason="unknown_type")
    # in the order they were dead-lettered: the service's fetchers may take the three in different batches
    assert sorted(msgpack.unpackb(letter.data)["id"] for letter in letters) == ["rf-0", "rf-1", "rf-2"]
    assert [letter.reason for letter in await list_letters(js, names, event_type="transaction")] == ["not_allowed"]
    assert len(await list_letters(js, names, limit=2)) == 2
    shown = await get_letter(js, names, letters[1].seq)
    assert shown is not None and shown.data == letters[1].data and shown.headers == letters[1].headers
    assert await get_letter(js, names, 10_000) is None

    service.pipeline.registry.add(EventSchema.from_dict(REFUND))  # the fix: the type is now declared
    assert await replay(js, names, letters, delete=True) == []

    async def refunds_normalized() -> bool:
        return len(await read_stream(js, names.stream("norm"), subject=names.norm("refund"))) == 3

    await wait_for(js, refunds_normalized)
    normalized = await read_stream(js, names.stream("norm"), subject=names.norm("refund"))
    assert sorted(msgpack.unpackb(m.data)["id"] for m in normalized) == ["rf-0", "rf-1", "rf-2"]
    assert await list_letters(js, names, event_type="refund") == []
    # replaying the same letters again is refused by the events stream's dedup window: still three
    assert await replay(js, names, letters) == []
    await asyncio.sleep(0.5)
    assert len(await read_stream(js, names.stream("norm"), subject=names.norm("refund"))) == 3


def run_cli(monkeypatch: pytest.MonkeyPatch, settings: CommonSettings, *argv: str) -> int:
    monkeypatch.setenv("RTML_NAMESPACE", settings.namespace)
    monkeypatch.setenv("RTML_NATS_URL", settings.nats_url)
    # the CLI sends logs to stderr when nothing configured logging; under capsys that file closes after the test
    monkeypatch.setattr(structlog, "is_configured", lambda: True)
    parser = argparse.ArgumentParser(prog="rtml")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_cli(monkeypatch: pytest.MonkeyPatch, settings: CommonSettings, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(monkeypatch, settings, "dlq", "ls") == 0
    table = capsys.readouterr().out
    assert "REASON" in table and "not_allowed" in table and "data.channel" in table and "tx-bad" in table

    assert run_cli(monkeypatch, settings, "dlq", "ls", "--json", "--reason", "not_allowed") == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [(r["type"], r["event_id"]) for r in rows] == [("transaction", "tx-bad")]

    assert run_cli(monkeypatch, settings, "dlq", "show", str(rows[0]["seq"]), "--json") == 0
    detail = json.loads(next(line for line in capsys.readouterr().out.splitlines() if line.startswith("{")))
    assert detail["payload"]["data"]["channel"] == "fax" and detail["headers"]["Rtml-Field"] == "data.channel"

    assert run_cli(monkeypatch, settings, "dlq", "show", "99999") == 1
    assert "no dead letter" in capsys.readouterr().err
    assert run_cli(monkeypatch, settings, "dlq", "replay") == 2
    assert run_cli(monkeypatch, settings, "dlq", "replay", "--reason", "not_allowed", "--dry-run") == 0
    assert (
        f"would replay {rows[0]['seq']} to {Names(settings.namespace).events('transaction')}" in capsys.readouterr().out
    )
    assert run_cli(monkeypatch, settings, "dlq", "replay", str(rows[0]["seq"])) == 0
    assert "replayed 1 of 1" in capsys.readouterr().out
