"""Point-in-time export against a brute-force as-of join, on the real Postgres."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.features import offline
from services.features.export import build_training_set
from shared.db import open_pool
from shared.settings import CommonSettings
from tests.features.reference import Ev, brute_vector, close
from tests.features.strategies import all_aggs_view, events

VIEW = all_aggs_view()


def _entity(e: Ev) -> str:
    return f"c{int(e.id[1:]) % 2}"


def brute_as_of_join(arrivals: list[Ev], labels: dict[str, float]) -> dict[str, tuple[str, float, dict[str, float]]]:
    """For each labelled event: its features from the same entity's events known by its arrival, as of its time."""
    first: dict[str, int] = {}
    unique: list[Ev] = []
    for e in arrivals:
        if e.id not in first:
            first[e.id] = len(unique)
            unique.append(e)
    out = {}
    for event_id, label in labels.items():
        e = unique[first[event_id]]
        known = [x for x in unique[: first[event_id] + 1] if _entity(x) == _entity(e) and x.ts >= e.ts - VIEW.ttl_ms]
        out[event_id] = (_entity(e), label, brute_vector(VIEW, known, e.ts))
    return out


async def _export(dsn: str, schema: str, arrivals: list[Ev], labels: dict[str, float]) -> list[list[Any]]:
    async with open_pool(dsn, schema=schema, max_size=1) as pool:
        await offline.ensure_tables(pool)
        await pool.execute("TRUNCATE features_events, features_labels")
        rows = [
            (e.id, "transaction", _entity(e), e.ts, seq, 0, json.dumps(e.data)) for seq, e in enumerate(arrivals, 1)
        ]
        await offline.write_events(pool, rows)
        await offline.write_labels(
            pool, [(f"l-{i}", i, "label", v, 0, n, 0) for n, (i, v) in enumerate(labels.items(), 1)]
        )
        training = await build_training_set(pool, VIEW, label_type="label", start_ms=0, end_ms=10**9)
    return training.rows


@settings(max_examples=40, deadline=None)
@given(arrivals=events(max_size=30), data=st.data())
def test_export_equals_brute_force_as_of_join(
    settings: CommonSettings, arrivals: list[Ev], data: st.DataObject
) -> None:
    ids = sorted({e.id for e in arrivals})
    chosen = data.draw(st.lists(st.sampled_from(ids), unique=True, min_size=1))
    labels = {i: float(n % 2) for n, i in enumerate(chosen)}
    rows = asyncio.run(_export(settings.database_url, settings.namespace, arrivals, labels))
    want = brute_as_of_join(arrivals, labels)
    assert len(rows) == len(want)
    for event_id, entity, ts, label, *values in rows:
        want_entity, want_label, want_vector = want[event_id]
        assert (entity, label) == (want_entity, want_label)
        assert ts == next(e.ts for e in arrivals if e.id == event_id)
        for name, value in zip(VIEW.feature_names, values, strict=True):
            assert close(value, want_vector[name], 1e6), (event_id, name, value, want_vector[name])
