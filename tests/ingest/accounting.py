"""Helpers for the conservation tests: publish inputs, wait until every one has an outcome, read the outcomes."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field

import msgpack
from nats.js import JetStreamContext

from services.ingest.dlq import EVENT_ID, FIELD, REASON, SOURCE_SEQ
from services.ingest.streams import StoredMessage, read_stream
from shared.subjects import Names
from tests.ingest.cases import Case


@dataclass
class Ledger:
    """What came out: normalized/label ids, and dead letters keyed by the input's events-stream sequence."""

    norm: list[StoredMessage] = field(default_factory=list)
    labels: list[StoredMessage] = field(default_factory=list)
    dlq: list[StoredMessage] = field(default_factory=list)

    def accepted_ids(self) -> Counter[str]:
        ids: Counter[str] = Counter(msgpack.unpackb(m.data)["id"] for m in self.norm)
        ids.update(msgpack.unpackb(m.data)["event_id"] for m in self.labels)
        return ids

    def dead_letters_by_seq(self) -> Counter[int]:
        return Counter(int(m.headers[SOURCE_SEQ]) for m in self.dlq)


async def publish_cases(js: JetStreamContext, names: Names, cases: list[Case], *, window: int = 512) -> dict[int, Case]:
    """Publish every case (``Nats-Msg-Id`` = the case name); returns the events-stream sequence of each."""
    by_seq: dict[int, Case] = {}
    for start in range(0, len(cases), window):
        chunk = cases[start : start + window]
        acks = await asyncio.gather(
            *(
                js.publish(
                    names.events(c.subject_type),
                    c.data,
                    headers={"Nats-Msg-Id": c.name, **({"Content-Type": c.content_type} if c.content_type else {})},
                )
                for c in chunk
            )
        )
        for case, ack in zip(chunk, acks, strict=True):
            assert not ack.duplicate, case.name
            by_seq[ack.seq] = case
    return by_seq


async def stream_count(js: JetStreamContext, stream: str) -> int:
    return (await js.stream_info(stream)).state.messages


async def wait_for_outcomes(js: JetStreamContext, names: Names, expected: int, *, bound_s: float = 60.0) -> None:
    """Wait (up to a generous bound, a hang guard and not a speed assertion) until ``expected`` outputs exist."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + bound_s
    while True:
        total = sum([await stream_count(js, names.stream(flow)) for flow in ("norm", "labels", "dlq")])
        if total >= expected or loop.time() > deadline:
            return
        await asyncio.sleep(0.1)


async def read_ledger(js: JetStreamContext, names: Names) -> Ledger:
    return Ledger(
        norm=await read_stream(js, names.stream("norm")),
        labels=await read_stream(js, names.stream("labels")),
        dlq=await read_stream(js, names.stream("dlq")),
    )


def check_conservation(ledger: Ledger, by_seq: dict[int, Case], event_ids: dict[str, str]) -> None:
    """Exactly the valid inputs came out normalized, exactly the rest dead-lettered with their reason, once each.

    ``event_ids`` maps a valid case's name to its event id.
    """
    valid = {seq: case for seq, case in by_seq.items() if case.reason is None}
    invalid = {seq: case for seq, case in by_seq.items() if case.reason is not None}
    accepted = ledger.accepted_ids()
    assert accepted == Counter(event_ids[c.name] for c in valid.values())
    dead = ledger.dead_letters_by_seq()
    assert dead == Counter(invalid.keys())
    for letter in ledger.dlq:
        case = invalid[int(letter.headers[SOURCE_SEQ])]
        assert letter.data == case.data, case.name  # the original bytes, untouched
        assert letter.headers[REASON] == case.reason, case.name
        assert letter.headers[FIELD] == case.field, case.name
        if case.subject_type not in ("a.b",):
            assert letter.subject.endswith(f".dlq.{case.subject_type}"), case.name
    for letter in ledger.dlq:
        if EVENT_ID in letter.headers:
            assert letter.headers[EVENT_ID]
