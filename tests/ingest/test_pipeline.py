"""The pure pipeline: every malformed input gets its reason, every valid one its normalized form."""

from __future__ import annotations

import time
from typing import Any

import msgpack
import pytest

from services.ingest.pipeline import INVALID_TYPE, UNKNOWN_TYPE, Accepted, Pipeline, Rejected
from services.ingest.reasons import Reason
from services.ingest.schema import build_registry
from shared.messages import Event, Label
from shared.subjects import Names
from tests.ingest.cases import Case, malformed_cases, pack, transaction, valid_cases

NOW_MS = int(time.time() * 1000)


@pytest.fixture(scope="module")
def pipeline() -> Pipeline:
    return Pipeline(build_registry(), Names("rtml"))


def run(pipeline: Pipeline, case: Case) -> Accepted | Rejected:
    return pipeline.process(
        f"rtml.events.{case.subject_type}", case.data, content_type=case.content_type, now_ms=NOW_MS
    )


@pytest.mark.parametrize("case", malformed_cases("p", NOW_MS), ids=lambda c: c.name)
def test_each_malformed_input_gets_its_reason(pipeline: Pipeline, case: Case) -> None:
    outcome = run(pipeline, case)
    assert isinstance(outcome, Rejected), outcome
    assert outcome.rejection.reason == case.reason
    assert outcome.rejection.field == case.field
    assert outcome.rejection.message


def test_dead_letter_types(pipeline: Pipeline) -> None:
    by_name = {c.name.removeprefix("p-"): c for c in malformed_cases("p", NOW_MS)}
    bad_subject = run(pipeline, by_name["bad-subject"])
    unknown = run(pipeline, by_name["unknown-type"])
    assert isinstance(bad_subject, Rejected) and isinstance(unknown, Rejected)
    assert (bad_subject.event_type, bad_subject.metric_type) == (INVALID_TYPE, INVALID_TYPE)
    assert (unknown.event_type, unknown.metric_type) == ("refund", UNKNOWN_TYPE)
    missing = run(pipeline, by_name["missing-field"])
    assert isinstance(missing, Rejected) and missing.event_id == "p-no-merchant"


@pytest.mark.parametrize("case", valid_cases("v", 8, NOW_MS), ids=lambda c: c.name)
def test_valid_inputs_are_normalized(pipeline: Pipeline, case: Case) -> None:
    outcome = run(pipeline, case)
    assert isinstance(outcome, Accepted), outcome
    body: dict[str, Any] = msgpack.unpackb(outcome.payload)
    if case.subject_type == "label":
        assert outcome.subject == "rtml.labels.label"
        label = Label.from_dict(body)
        assert label.label == 1.0 and label.event_id == outcome.msg_id and label.ts == NOW_MS
        return
    assert outcome.subject == "rtml.norm.transaction"
    event = Event.from_dict(body)
    assert event.id == outcome.msg_id and event.type == "transaction"
    assert abs(event.ts - NOW_MS) < 10
    assert event.data["currency"] == "EUR"
    assert event.data["amount"] == 12.34 and event.data["amount_minor"] == 1234
    assert event.data["country"] == "fr" and event.data["channel"] == "online"
    assert "extra" not in event.data


def test_unknown_fields_are_dropped_and_counted(pipeline: Pipeline) -> None:
    body = transaction("u1", NOW_MS, foo=1, bar={"x": 2})
    body["top"] = "level"
    outcome = pipeline.process("rtml.events.transaction", pack(body), content_type=None, now_ms=NOW_MS)
    assert isinstance(outcome, Accepted)
    assert outcome.unknown_fields == 3
    assert set(msgpack.unpackb(outcome.payload)["data"]) == {
        "card", "merchant", "amount", "amount_minor", "currency", "mcc", "country", "channel", "device",
    }  # fmt: skip


def test_json_content_type(pipeline: Pipeline) -> None:
    data = b'{"id": "j1", "entity": "c", "ts": "%d", "data": {"id": "p1", "label": "0"}}' % NOW_MS
    outcome = pipeline.process("rtml.events.label", data, content_type="application/json", now_ms=NOW_MS)
    assert isinstance(outcome, Accepted)
    assert msgpack.unpackb(outcome.payload) == {"id": "p1", "label": 0.0, "ts": NOW_MS, "event_id": "j1"}


def test_label_explicit_known_time(pipeline: Pipeline) -> None:
    body = {"id": "l9", "entity": "c", "ts": NOW_MS, "data": {"id": "p9", "label": True, "ts": "2024-01-01T00:00:00Z"}}
    outcome = pipeline.process("rtml.events.label", pack(body), content_type=None, now_ms=NOW_MS)
    assert isinstance(outcome, Accepted)
    assert Label.from_dict(msgpack.unpackb(outcome.payload)).ts == 1704067200000


def test_ids_must_be_header_safe(pipeline: Pipeline) -> None:
    for bad in ("has space", "new\nline", "é"):
        outcome = pipeline.process(
            "rtml.events.transaction", pack(transaction(bad, NOW_MS)), content_type=None, now_ms=NOW_MS
        )
        assert isinstance(outcome, Rejected) and outcome.rejection.reason == Reason.BAD_FORMAT
        assert outcome.event_id is None
