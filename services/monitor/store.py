"""The prediction/label join in Postgres: labels arrive minutes to days after their predictions.

Predictions are written in batches (COPY) as they stream past; a label is matched
in memory while its prediction is recent, and here otherwise. Labels are keyed by
their event id, so a redelivered label is recognised and counted once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS monitor_predictions (
    id       text NOT NULL,
    model    text NOT NULL,
    version  integer NOT NULL,
    variant  text NOT NULL,
    ts       bigint NOT NULL,
    score    double precision
);
CREATE INDEX IF NOT EXISTS monitor_predictions_id ON monitor_predictions (id);
CREATE INDEX IF NOT EXISTS monitor_predictions_ts ON monitor_predictions (ts);
CREATE TABLE IF NOT EXISTS monitor_labels (
    event_id  text PRIMARY KEY,
    id        text NOT NULL,
    label     double precision NOT NULL,
    ts        bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS monitor_labels_id ON monitor_labels (id);
"""


@dataclass(frozen=True, slots=True)
class Scored:
    """One scored prediction a label can join."""

    model: str
    version: int
    variant: str
    score: float


async def ensure_tables(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as connection:
        await connection.execute(SCHEMA_SQL)


async def write_predictions(pool: asyncpg.Pool, rows: Sequence[tuple[str, str, int, str, int, float | None]]) -> None:
    """``(id, model, version, variant, ts, score)`` rows, in one COPY."""
    if not rows:
        return
    async with pool.acquire() as connection:
        await connection.copy_records_to_table(
            "monitor_predictions", records=rows, columns=["id", "model", "version", "variant", "ts", "score"]
        )


async def find_predictions(pool: asyncpg.Pool, ids: Sequence[str]) -> dict[str, list[Scored]]:
    """The scored predictions of each id (a shadow run shares its stable answer's id)."""
    if not ids:
        return {}
    rows = await pool.fetch(
        """SELECT DISTINCT id, model, version, variant, score FROM monitor_predictions
           WHERE id = ANY($1::text[]) AND score IS NOT NULL""",
        list(ids),
    )
    found: dict[str, list[Scored]] = {}
    for row in rows:
        found.setdefault(row["id"], []).append(Scored(row["model"], row["version"], row["variant"], row["score"]))
    return found


async def recent_joins(pool: asyncpg.Pool, limit: int) -> list[tuple[str, Scored, float]]:
    """The latest ``limit`` labels joined to their scored predictions, oldest first: ``(id, prediction, label)``."""
    rows = await pool.fetch(
        """SELECT j.id, j.model, j.version, j.variant, j.score, j.label FROM (
               SELECT DISTINCT ON (l.event_id, p.model, p.version, p.variant)
                      l.id, l.ts, l.event_id, p.model, p.version, p.variant, p.score, l.label
               FROM (SELECT * FROM monitor_labels ORDER BY ts DESC, event_id DESC LIMIT $1) l
               JOIN monitor_predictions p ON p.id = l.id AND p.score IS NOT NULL
           ) j ORDER BY j.ts, j.event_id""",
        limit,
    )
    return [(r["id"], Scored(r["model"], r["version"], r["variant"], r["score"]), r["label"]) for r in rows]


async def forget_before(pool: asyncpg.Pool, ts_ms: int) -> int:
    """Delete join rows (predictions and labels) older than ``ts_ms``; how many predictions went."""
    async with pool.acquire() as connection, connection.transaction():
        deleted = await connection.execute("DELETE FROM monitor_predictions WHERE ts < $1", ts_ms)
        await connection.execute("DELETE FROM monitor_labels WHERE ts < $1", ts_ms)
    return int(deleted.split()[-1])


async def write_labels(pool: asyncpg.Pool, labels: Sequence[tuple[str, str, float, int]]) -> set[str]:
    """Store ``(event_id, id, label, ts)``; the event ids that were new (the others are redeliveries)."""
    if not labels:
        return set()
    rows = await pool.fetch(
        """INSERT INTO monitor_labels (event_id, id, label, ts)
           SELECT * FROM unnest($1::text[], $2::text[], $3::float8[], $4::bigint[])
           ON CONFLICT (event_id) DO NOTHING RETURNING event_id""",
        [e for e, _, _, _ in labels],
        [i for _, i, _, _ in labels],
        [y for _, _, y, _ in labels],
        [t for _, _, _, t in labels],
    )
    return {row["event_id"] for row in rows}
