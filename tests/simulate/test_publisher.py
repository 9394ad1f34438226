"""The publisher on the real JetStream: subjects, Nats-Msg-Id dedup, and the CLI's file mode."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from nats.aio.client import Client

from rtml.simulate import cli
from rtml.simulate.publisher import publish
from rtml.simulate.simulator import LabelEvent, SimConfig, Simulator
from shared.codec import decode
from shared.subjects import Names

CONFIG = SimConfig(seed=3, rate_per_s=2.0, n_cards=50, n_merchants=40, chargeback_delay_s=30, legit_label_delay_s=60)


async def read_all(nc: Client, names: Names, event_type: str, expected: int) -> list[tuple[str, dict[str, object]]]:
    js = nc.jetstream()
    sub = await js.pull_subscribe(names.events(event_type), stream=names.stream("events"))
    out: list[tuple[str, dict[str, object]]] = []
    while len(out) < expected:
        for msg in await sub.fetch(min(500, expected - len(out)), timeout=5):
            out.append((msg.headers["Nats-Msg-Id"] if msg.headers else "", decode(msg.data)))
            await msg.ack()
    await sub.unsubscribe()
    return out


async def test_events_and_labels_land_on_their_subjects_once(nc: Client, names: Names) -> None:
    items = Simulator(CONFIG).take(600)
    stats = await publish(nc.jetstream(), names, items)
    n_labels = sum(isinstance(i, LabelEvent) for i in items)
    assert (stats.transactions, stats.labels, stats.duplicates) == (600 - n_labels, n_labels, 0)
    assert n_labels > 0

    # The same emissions again: JetStream drops every one inside its duplicate window.
    again = await publish(nc.jetstream(), names, Simulator(CONFIG).take(600))
    assert again.duplicates == 600
    info = await nc.jetstream().stream_info(names.stream("events"))
    assert info.state.messages == 600

    transactions = await read_all(nc, names, "transaction", 600 - n_labels)
    expected = [i.event() for i in items if not isinstance(i, LabelEvent)]
    assert [body for _, body in transactions] == expected
    assert all(msg_id == body["id"] for msg_id, body in transactions)
    labels = await read_all(nc, names, "label", n_labels)
    assert [body for _, body in labels] == [i.event() for i in items if isinstance(i, LabelEvent)]


def test_cli_writes_json_lines_without_nats(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    out = tmp_path / "events.jsonl"
    args = parser.parse_args(
        [
            *("simulate", "--seed", "5", "--count", "300", "--sim-rate", "1"),
            *("--start", "2026-01-01T00:00:00+00:00", "--drift", "amount_shift@60", "--out", str(out)),
        ]
    )
    assert args.func(args) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 300 and lines[0]["ts"] >= 1_767_225_600_000
    assert {line["type"] for line in lines} <= {"transaction", "label"}


def test_cli_refuses_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    args = parser.parse_args(["simulate", "--fraud-rate", "bank_robbery=0.1", "--out", "/dev/null"])
    assert args.func(args) == 2
    assert "bank_robbery" in capsys.readouterr().err


def test_compressed_time_never_runs_ahead_of_the_wall_clock() -> None:
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    now = 1_800_000_000_000
    args = parser.parse_args(["simulate", "--speedup", "60", "--duration-s", "3600"])
    config, _, end_ms, speedup = cli.build(args, now)
    # Simulated time at wall second e is start + 60 e; the run lasts 60 wall seconds and ends at now + 60 s.
    assert speedup == 60 and end_ms == config.start_ms + 3_600_000
    for elapsed_s in (0, 30, 60):
        assert config.start_ms + elapsed_s * 60_000 <= now + elapsed_s * 1000
    assert end_ms == now + 60_000
    with pytest.raises(ValueError, match="--duration-s"):
        cli.build(parser.parse_args(["simulate", "--speedup", "60"]), now)
