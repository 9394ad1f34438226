"""Point-in-time correct training sets from the offline log.

For each labelled event ``e`` the view's features are computed as of ``e.ts`` from
the events of the same entity that were on the stream no later than ``e`` itself
(stream sequence ``<= e.seq``) and not older than the view's TTL: nothing that
happened after ``e``, and nothing that arrived after it (a late arrival), leaks in.
The maths is :func:`services.features.windows.compute_vector`, the same the
streaming path is checked against.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pyarrow as pa
import pyarrow.parquet as pq

from services.features import offline
from services.features.views import FeatureView
from services.features.windows import Observation, compute_vector, observe

KEY_COLUMNS = ("event_id", "entity", "ts", "label")


@dataclass
class TrainingSet:
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)


async def build_training_set(
    pool: asyncpg.Pool, view: FeatureView, *, label_type: str, start_ms: int, end_ms: int
) -> TrainingSet:
    """One row per labelled event of the view's source with ``start <= ts < end``, ordered by time then id."""
    result = TrainingSet(columns=[*KEY_COLUMNS, *view.feature_names])
    labelled = await offline.labelled_events(
        pool, source=view.source, label_type=label_type, start_ms=start_ms, end_ms=end_ms
    )
    keyed = [(view.entity_of(e.entity, e.data), e, label) for e, label in labelled]
    wanted = sorted({entity for entity, _, _ in keyed if entity is not None})
    if not wanted:
        return result
    history = await offline.events_for_entities(pool, view, wanted, start_ms=start_ms - view.ttl_ms, end_ms=end_ms)
    by_entity: dict[str, list[Observation]] = defaultdict(list)
    for stored in history:
        entity = view.entity_of(stored.entity, stored.data)
        if entity is not None:
            by_entity[entity].append(observe(view, stored.id, stored.ts, stored.data, order=stored.seq))
    for entity, event, label in sorted(keyed, key=lambda item: (item[1].ts, item[1].id)):
        if entity is None:
            continue
        known = [o for o in by_entity[entity] if o.order <= event.seq and o.ts >= event.ts - view.ttl_ms]
        vector = compute_vector(view, known, event.ts)
        result.rows.append([event.id, entity, event.ts, label, *(vector[name] for name in view.feature_names)])
    return result


def write_training_set(training: TrainingSet, out: Path) -> None:
    """Write as Parquet (``.parquet``) or CSV (``.csv``)."""
    suffix = out.suffix.lower()
    if suffix == ".csv":
        with out.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(training.columns)
            writer.writerows(training.rows)
        return
    if suffix != ".parquet":
        raise ValueError(f"--out must end in .parquet or .csv, got {out.name!r}")
    columns = list(zip(*training.rows, strict=True)) if training.rows else [() for _ in training.columns]
    types = [pa.string(), pa.string(), pa.int64(), pa.float64()] + [pa.float64()] * (len(training.columns) - 4)
    table = pa.table(
        {
            name: pa.array(list(values), type=kind)
            for name, values, kind in zip(training.columns, columns, types, strict=True)
        }
    )
    pq.write_table(table, out)
