"""The offline log on the real Postgres: rows written once, whatever is written again."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from services.features import offline
from shared.db import open_pool
from shared.settings import CommonSettings
from shared.subjects import Names


@pytest.fixture
async def log(settings: CommonSettings, names: Names) -> AsyncIterator[asyncpg.Pool]:
    async with open_pool(settings.database_url, schema=names.schema, max_size=1) as pool:
        await offline.ensure_tables(pool)
        await pool.execute("TRUNCATE features_events, features_labels")
        yield pool


def _row(event_id: str, seq: int, amount: float) -> tuple[object, ...]:
    return (event_id, "transaction", "c1", 1_000 + seq, seq, 5, f'{{"amount": {amount}}}')


async def _stored(pool: asyncpg.Pool) -> dict[str, tuple[int, str]]:
    rows = await pool.fetch("SELECT id, seq, data FROM features_events")
    return {row["id"]: (row["seq"], row["data"]) for row in rows}


async def test_a_batch_written_again_with_new_rows_adds_only_the_new_ones(log: asyncpg.Pool) -> None:
    await offline.write_events(log, [_row("a", 1, 1.0), _row("b", 2, 2.0)])
    # a redelivered batch beside new rows: b again (with other values), c new, c twice
    await offline.write_events(log, [_row("b", 9, 99.0), _row("c", 3, 3.0), _row("c", 4, 4.0)])
    stored = await _stored(log)
    assert sorted(stored) == ["a", "b", "c"]
    assert stored["b"][0] == 2  # the first write of b is kept
    assert stored["c"][0] == 3  # of two copies in one batch, the first


async def test_labels_written_again_are_kept_once(log: asyncpg.Pool) -> None:
    label = ("e1", "ev1", "label", 1.0, 1_000, 1, 5)
    await offline.write_labels(log, [label])
    await offline.write_labels(log, [label, ("e2", "ev2", "label", 0.0, 1_001, 2, 5)])
    assert await log.fetchval("SELECT count(*) FROM features_labels") == 2
