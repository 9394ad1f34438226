"""The streaming Lua update on the real Redis against a brute-force recomputation."""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import msgpack
import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from services.features.catalog import load_views
from services.features.script import _FEATURES_PER_PACK, Outcome, ViewScript, render_lua
from services.features.views import parse_view
from shared.online import AS_OF_FIELD, STATE_FIELD, VALUES_FIELD, OnlineVector, feature_key
from shared.settings import CommonSettings
from shared.subjects import Names
from tests.features.reference import Ev, accepted, brute_vector, close
from tests.features.strategies import all_aggs_view, events

VIEW = all_aggs_view()
_entities = itertools.count()


@pytest.fixture(scope="module")
def sync_redis(settings: CommonSettings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.redis_url)
    yield client
    client.close()


def _call(client: redis.Redis, names: Names, entity: str, evs: list[Ev], *, inline_max: int = 64) -> list[Outcome]:
    script = ViewScript(client, names, VIEW, inline_max=inline_max)  # type: ignore[arg-type]
    keys, args = script.call_args([(entity, e.id, e.ts, e.data) for e in evs])
    codes, _ = script.script(keys=keys, args=args)  # type: ignore[union-attr]
    return [Outcome(int(code)) for code in codes]


def _run(
    client: redis.Redis, names: Names, evs: list[Ev], *, per_call: int = 1, inline_max: int = 64
) -> tuple[str, list[Outcome]]:
    """Apply ``evs`` to a new entity, ``per_call`` events per script call; ids and distinct values
    move from the state string to sorted sets beyond ``inline_max`` of them."""
    entity = f"card{next(_entities)}"
    outcomes = []
    for start in range(0, len(evs), per_call):
        outcomes += _call(client, names, entity, evs[start : start + per_call], inline_max=inline_max)
    return entity, outcomes


def _online(client: redis.Redis, names: Names, entity: str) -> OnlineVector:
    reply = client.hmget(feature_key(names, VIEW.name, entity), [VALUES_FIELD, AS_OF_FIELD])
    packed, as_of = cast(list[bytes | None], reply)
    return OnlineVector.from_fields(packed, as_of)


@settings(max_examples=120, deadline=None)
@given(evs=events(), per_call=st.sampled_from([1, 3, 1000]), inline_max=st.sampled_from([0, 2, 64]))
def test_streamed_state_matches_brute_force(
    sync_redis: redis.Redis, names: Names, evs: list[Ev], per_call: int, inline_max: int
) -> None:
    entity, outcomes = _run(sync_redis, names, evs, per_call=per_call, inline_max=inline_max)
    applied = accepted(evs, VIEW.lateness_ms)
    assert outcomes.count(Outcome.APPLIED) == len(applied)
    as_of = max(e.ts for e in applied)
    want = brute_vector(VIEW, applied, as_of)
    got = _online(sync_redis, names, entity)
    assert set(got.values) == set(want)
    for name, value in want.items():
        assert close(got.values[name], value, 1e6), (name, got.values[name], value)
    assert got.as_of_ms == as_of


@settings(max_examples=40, deadline=None)
@given(evs=events(max_size=30), per_call=st.sampled_from([2, 7, 1000]), inline_max=st.sampled_from([0, 3, 64]))
def test_a_run_of_events_in_one_call_equals_one_call_each(
    sync_redis: redis.Redis, names: Names, evs: list[Ev], per_call: int, inline_max: int
) -> None:
    one_each, outcomes_each = _run(sync_redis, names, evs, inline_max=inline_max)
    together, outcomes_together = _run(sync_redis, names, evs, per_call=per_call, inline_max=inline_max)
    assert outcomes_together == outcomes_each
    assert _online(sync_redis, names, together) == _online(sync_redis, names, one_each)


def test_a_call_reports_the_server_time_it_ended_at(sync_redis: redis.Redis, names: Names) -> None:
    script = ViewScript(sync_redis, names, VIEW)  # type: ignore[arg-type]
    keys, args = script.call_args([(f"card{next(_entities)}", "t1", 100, {"amount": 1.0})])
    before = sync_redis.time()
    _, (seconds, micros) = script.script(keys=keys, args=args)  # type: ignore[union-attr]
    after = sync_redis.time()
    # the moment its writes became visible: after the server's clock read before the call, before the one after
    assert before <= (int(seconds), int(micros)) <= after


def test_one_call_over_several_entities_keeps_them_apart(sync_redis: redis.Redis, names: Names) -> None:
    script = ViewScript(sync_redis, names, VIEW)  # type: ignore[arg-type]
    a, b = f"card{next(_entities)}", f"card{next(_entities)}"
    evs = [(a, "x1", 100, {"amount": 1.0}), (b, "x1", 101, {"amount": 5.0}), (a, "x2", 102, {"amount": 2.0})]
    keys, args = script.call_args(evs)
    codes, _ = script.script(keys=keys, args=args)  # type: ignore[union-attr]
    assert [Outcome(int(c)) for c in codes] == [Outcome.APPLIED] * 3  # ids are per entity
    assert _online(sync_redis, names, a) == OnlineVector(
        brute_vector(VIEW, [Ev("x1", 100, {"amount": 1.0}), Ev("x2", 102, {"amount": 2.0})], 102), 102
    )
    assert _online(sync_redis, names, b) == OnlineVector(brute_vector(VIEW, [Ev("x1", 101, {"amount": 5.0})], 101), 101)


@settings(max_examples=40, deadline=None)
@given(evs=events(max_size=25), data=st.data())
def test_redelivery_and_replay_change_nothing(
    sync_redis: redis.Redis, names: Names, evs: list[Ev], data: st.DataObject
) -> None:
    entity, _ = _run(sync_redis, names, evs)
    before = _online(sync_redis, names, entity)
    again = data.draw(st.lists(st.sampled_from(evs), max_size=10))
    for e in again:
        assert _call(sync_redis, names, entity, [e]) in ([Outcome.DUPLICATE], [Outcome.LATE])
    if again:
        assert set(_call(sync_redis, names, entity, again)) <= {Outcome.DUPLICATE, Outcome.LATE}
    assert _online(sync_redis, names, entity) == before


@pytest.mark.parametrize("inline_max", [0, 64])
def test_every_key_has_the_view_ttl(sync_redis: redis.Redis, names: Names, inline_max: int) -> None:
    evs = [Ev("a", 100, {"amount": 1.0, "merchant": "m", "country": "FR"})]
    entity, _ = _run(sync_redis, names, evs, inline_max=inline_max)
    state = f"{names.redis_prefix}fs:{VIEW.name}:{{{entity}}}"
    sets = [f"{state}{suffix}" for suffix in (":ids", ":d:merchant", ":d:country")]
    for key in [feature_key(names, VIEW.name, entity)] + (sets if inline_max == 0 else []):
        assert 0 < sync_redis.pttl(key) <= VIEW.ttl_ms, key
    assert sync_redis.exists(f"{state}:w") == 0  # the state is a field of the online hash
    if inline_max:  # one id and one value per field: all inside the state string
        assert sync_redis.exists(*sets) == 0


def test_old_buckets_are_dropped(sync_redis: redis.Redis, names: Names) -> None:
    evs = [Ev(f"e{i}", 1000 + 3 * i, {"amount": 1.0}) for i in range(200)]
    entity, _ = _run(sync_redis, names, evs)
    raw = sync_redis.hget(feature_key(names, VIEW.name, entity), STATE_FIELD)
    assert isinstance(raw, bytes)
    state = msgpack.unpackb(raw, raw=True, strict_map_key=False)  # the inline ids are msgpack bytes
    assert state[b"f"] == 2 and state[b"t"] == evs[-1].ts
    # per window a flat array of bucket records (number, events, per numeric field 5 statistics), in
    # bucket order, at most one window's worth of them
    record = 2 + 5 * len(VIEW.numeric_fields)
    assert len(state[b"b"]) == len(VIEW.windows)
    for flat, w in zip(state[b"b"], VIEW.windows, strict=True):
        numbers = flat[::record]
        assert len(flat) % record == 0 and 0 < len(numbers) <= w.buckets
        assert numbers == sorted(numbers)
    assert sync_redis.zcard(f"{names.redis_prefix}fs:{VIEW.name}:{{{entity}}}:ids") <= VIEW.lateness_ms // 3 + 1


# window states written by the script of format 1 (one msgpack map, each bucket a table), recorded
# from that script for the events listed beside them: ids and values inline, and in sorted sets
FORMAT1 = json.loads((Path(__file__).parent / "data" / "state_format1.json").read_text())


@pytest.mark.parametrize("case", ["inline", "spilled"])
def test_a_state_of_the_previous_format_goes_on_being_updated(sync_redis: redis.Redis, names: Names, case: str) -> None:
    recorded = FORMAT1["states"][case]
    entity = f"card{next(_entities)}"
    prefix = f"{names.redis_prefix}fs:{VIEW.name}:{{{entity}}}"
    sync_redis.set(f"{prefix}:w", base64.b64decode(recorded["w"]))
    # written while the state had a key of its own: the online hash then held the values and time only
    online_key = feature_key(names, VIEW.name, entity)
    sync_redis.hset(online_key, mapping={AS_OF_FIELD: max(e["ts"] for e in FORMAT1["events"])})
    for suffix, members in recorded["sets"].items():
        sync_redis.zadd(prefix + suffix, dict(members))
    first = [Ev(e["id"], e["ts"], e["data"]) for e in FORMAT1["events"]]
    later = [
        Ev("b1", 1030, {"amount": 2.0, "merchant": "m4", "country": "US"}),
        first[4],  # already applied
        Ev("b2", 1026, {"amount": 9.0, "qty": 1, "merchant": "m1"}),  # out of order, within the lateness
    ]
    outcomes = _call(sync_redis, names, entity, later, inline_max=64 if case == "inline" else 0)
    assert outcomes == [Outcome.APPLIED, Outcome.DUPLICATE, Outcome.APPLIED]
    want = brute_vector(VIEW, [*first, later[0], later[2]], 1030)
    got = _online(sync_redis, names, entity)
    assert got.as_of_ms == 1030
    for name, value in want.items():
        assert close(got.values[name], value, 1e6), (name, got.values[name], value)
    raw = sync_redis.hget(online_key, STATE_FIELD)
    assert isinstance(raw, bytes) and msgpack.unpackb(raw, raw=True, strict_map_key=False)[b"f"] == 2
    assert sync_redis.exists(f"{prefix}:w") == 0  # moved into the hash


def test_a_field_read_only_by_last_has_no_window_totals(sync_redis: redis.Redis, names: Names) -> None:
    view = parse_view(
        {
            "name": "last_only",
            "source": "transaction",
            "entity": "card",
            "features": [
                {"name": "n_1m", "agg": "count", "window": "1m"},
                {"name": "spent_1m", "agg": "sum", "field": "amount", "window": "1m"},
                {"name": "last_price", "agg": "last", "field": "price"},
            ],
        }
    )
    script = ViewScript(sync_redis, names, view)  # type: ignore[arg-type]
    entity = f"card{next(_entities)}"
    evs = [Ev("p1", 100, {"amount": 3.0, "price": 2.5}), Ev("p2", 6_000, {"amount": 4.0, "price": 4.0})]
    keys, args = script.call_args([(entity, e.id, e.ts, e.data) for e in evs])
    codes, _ = script.script(keys=keys, args=args)  # type: ignore[union-attr]
    assert [Outcome(int(c)) for c in codes] == [Outcome.APPLIED] * 2
    packed, as_of = cast(
        list[bytes | None], sync_redis.hmget(feature_key(names, view.name, entity), [VALUES_FIELD, AS_OF_FIELD])
    )
    assert OnlineVector.from_fields(packed, as_of) == OnlineVector(brute_vector(view, evs, 6_000), 6_000)


def test_a_view_of_more_features_than_one_pack_takes(sync_redis: redis.Redis, names: Names) -> None:
    count = _FEATURES_PER_PACK + 5  # the feature map is packed in two pieces
    view = parse_view(
        {
            "name": "wide",
            "source": "transaction",
            "entity": "card",
            "features": [{"name": f"n{q}_1m", "agg": "count", "window": "1m"} for q in range(count)],
        }
    )
    script = ViewScript(sync_redis, names, view)  # type: ignore[arg-type]
    entity = f"card{next(_entities)}"
    keys, args = script.call_args([(entity, "w1", 100, {}), (entity, "w2", 200, {})])
    script.script(keys=keys, args=args)  # type: ignore[union-attr]
    packed, as_of = cast(
        list[bytes | None], sync_redis.hmget(feature_key(names, view.name, entity), [VALUES_FIELD, AS_OF_FIELD])
    )
    assert OnlineVector.from_fields(packed, as_of) == OnlineVector({f"n{q}_1m": 2.0 for q in range(count)}, 200)


def test_fraud_views_render() -> None:
    for view in load_views(None).values():
        assert f"view {view.name} v{view.version}" in render_lua(view)


BOUNDARY_CASES = [
    # a value whose latest time is exactly the first instant of the widest distinct window
    [Ev("a", 60, {"merchant": "m1"}), Ev("b", 119, {"merchant": "m2"})],
    # the same at the bucketed windows' edges, and an event exactly at the lateness bound
    [Ev("a", 100, {"amount": 1.0}), Ev("b", 119, {"amount": 2.0}), Ev("c", 94, {"amount": 4.0})],
    [Ev("a", 0, {"amount": 1.0, "merchant": "x"}), Ev("b", 20, {"amount": 3.0}), Ev("c", 40, {"merchant": "x"})],
]


@pytest.mark.parametrize("evs", BOUNDARY_CASES)
def test_window_boundaries(sync_redis: redis.Redis, names: Names, evs: list[Ev]) -> None:
    entity, _ = _run(sync_redis, names, evs)
    applied = accepted(evs, VIEW.lateness_ms)
    want = brute_vector(VIEW, applied, max(e.ts for e in applied))
    got = _online(sync_redis, names, entity)
    assert {k: got.values[k] for k in want} == pytest.approx(want)
