"""How the online writer lays a batch out into script calls (no Redis needed: nothing is sent)."""

from __future__ import annotations

import redis.asyncio as aioredis

from services.features.online import _OUTCOMES, OnlineWriter
from services.features.script import EVENTS_PER_CALL, Outcome
from shared.messages import Event
from shared.subjects import Names
from tests.features.strategies import all_aggs_view


def _event(i: int, card: str) -> Event:
    return Event(id=f"e{i}", type="transaction", entity=card, ts=1_000 + i, data={"amount": 1.0})


def test_a_views_events_are_grouped_by_entity_in_stream_order() -> None:
    view = all_aggs_view()
    writer = OnlineWriter(aioredis.Redis(), Names("t"), {view.name: view})
    cards = ["a", "b", "a", "c", "b", "a"]
    (call,) = list(writer.plan([_event(i, card) for i, card in enumerate(cards)]))
    assert [(entity, event_id) for entity, event_id, _, _ in call.events] == [
        ("a", "e0"), ("a", "e2"), ("a", "e5"), ("b", "e1"), ("b", "e4"), ("c", "e3"),
    ]  # fmt: skip


def test_a_long_run_is_split_into_bounded_calls() -> None:
    view = all_aggs_view()
    writer = OnlineWriter(aioredis.Redis(), Names("t"), {view.name: view})
    events = [_event(i, f"card{i % 7}") for i in range(2 * EVENTS_PER_CALL + 5)]
    calls = list(writer.plan(events))
    assert [len(call.events) for call in calls] == [EVENTS_PER_CALL, EVENTS_PER_CALL, 5]
    laid_out = [event_id for call in calls for _, event_id, _, _ in call.events]
    grouped = [e.id for card in range(7) for e in events if e.entity == f"card{card}"]
    assert laid_out == grouped


def test_outcomes_are_indexed_by_the_script_codes() -> None:
    assert [outcome.value for outcome in _OUTCOMES] == list(range(len(Outcome)))
