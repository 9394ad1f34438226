"""Arbitrary bytes and arbitrary maps thrown at the intake: it never crashes, and every input ends up
normalized or dead-lettered (never both, never neither)."""

from __future__ import annotations

import math
import time

import msgpack
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from nats.aio.client import Client

from services.ingest.dlq import REASON, SOURCE_SEQ
from services.ingest.pipeline import Accepted, Pipeline, Rejected
from services.ingest.reasons import Reason
from services.ingest.schema import build_registry
from services.ingest.service import IngestService
from shared.messages import Event, Label
from shared.subjects import Names
from tests.ingest.accounting import read_ledger, wait_for_outcomes
from tests.ingest.cases import pack, transaction

NOW_MS = int(time.time() * 1000)
INT64 = st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1)
SCALARS = st.none() | st.booleans() | INT64 | st.floats() | st.text(max_size=20) | st.binary(max_size=10)
VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)  # fmt: skip
KEYS = st.sampled_from(["id", "type", "entity", "ts", "data"]) | st.text(max_size=8)
FIELDS = st.sampled_from(["card", "merchant", "amount", "amount_minor", "currency", "mcc", "country", "channel", "x"])
TYPES = st.sampled_from(["transaction", "label", "refund", "a.b"])


@st.composite
def near_valid(draw: st.DrawFn) -> tuple[str, bytes]:
    """A valid transaction with one data field replaced by an arbitrary value (or removed)."""
    body = transaction(f"nv-{draw(st.integers(0, 10**9))}", NOW_MS - draw(st.integers(0, 10**6)))
    name = draw(FIELDS)
    value = draw(VALUES)
    if value is None:
        body["data"].pop(name, None)
    else:
        body["data"][name] = value
    return "transaction", pack(body)


ARBITRARY_BYTES = st.tuples(TYPES, st.binary(max_size=300))
ARBITRARY_MAPS = st.tuples(TYPES, st.dictionaries(KEYS, VALUES, max_size=6).map(pack))
INPUTS = ARBITRARY_BYTES | ARBITRARY_MAPS | near_valid()


def check_accepted(outcome: Accepted) -> None:
    body = msgpack.unpackb(outcome.payload)
    if outcome.subject.endswith(".labels.label"):
        assert math.isfinite(Label.from_dict(body).label)
        return
    event = Event.from_dict(body)
    assert event.id == outcome.msg_id
    for value in event.data.values():
        assert isinstance(value, str | int | float | bool)
        assert not isinstance(value, float) or math.isfinite(value)


@hypothesis_settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(INPUTS)
def test_pipeline_never_raises(item: tuple[str, bytes]) -> None:
    event_type, data = item
    pipeline = Pipeline(build_registry(), Names("rtml"))
    outcome = pipeline.process(f"rtml.events.{event_type}", data, content_type=None, now_ms=NOW_MS)
    if isinstance(outcome, Accepted):
        check_accepted(outcome)
    else:
        assert isinstance(outcome, Rejected)
        assert outcome.rejection.reason in set(Reason) - {Reason.HANDLER_CRASH}


async def test_service_accounts_for_every_arbitrary_input(service: IngestService, nc: Client, names: Names) -> None:
    inputs: list[tuple[str, bytes]] = []

    @hypothesis_settings(max_examples=300, deadline=None, database=None)
    @given(INPUTS)
    def collect(item: tuple[str, bytes]) -> None:
        inputs.append(item)

    collect()
    js = nc.jetstream()
    published: dict[int, tuple[str, bytes]] = {}
    for index, (event_type, data) in enumerate(inputs):
        ack = await js.publish(names.events(event_type), data, headers={"Nats-Msg-Id": f"prop-{index}"})
        published[ack.seq] = (event_type, data)
    now_ms = int(time.time() * 1000)
    predicted = {
        seq: service.pipeline.process(names.events(event_type), data, content_type=None, now_ms=now_ms)
        for seq, (event_type, data) in published.items()
    }
    predicted_ids = {o.msg_id for o in predicted.values() if isinstance(o, Accepted)}
    rejected = sum(1 for o in predicted.values() if isinstance(o, Rejected))
    await wait_for_outcomes(js, names, rejected + len(predicted_ids))  # equal event ids are one event, by design
    ledger = await read_ledger(js, names)
    dead = ledger.dead_letters_by_seq()
    accepted = ledger.accepted_ids()
    assert max(dead.values(), default=1) == 1 and max(accepted.values(), default=1) == 1  # none twice
    assert set(accepted) == predicted_ids
    for seq, outcome in predicted.items():
        if isinstance(outcome, Accepted):
            assert seq not in dead and outcome.msg_id in accepted
        else:
            assert dead[seq] == 1, published[seq]  # nothing lost
    assert all(letter.headers[REASON] != Reason.HANDLER_CRASH for letter in ledger.dlq)
    assert {int(letter.headers[SOURCE_SEQ]) for letter in ledger.dlq} <= set(published)
