"""Rebuild a view's online state from the offline log, replayed in stream order.

The replay goes through the same Lua update as the stream, so the result is the
state the view would have had had it been deployed from the start (for entities
whose TTL has not run out), and it may run while the stream keeps flowing: every
update is idempotent on the event id.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import asyncpg
import redis.asyncio as aioredis

from services.features import offline
from services.features.online import OnlineWriter
from services.features.views import FeatureView
from shared.messages import Event
from shared.subjects import Names


@dataclass(frozen=True, slots=True)
class BackfillReport:
    events: int
    applied: int
    duplicate: int
    late: int


async def backfill(
    client: aioredis.Redis, pool: asyncpg.Pool, names: Names, view: FeatureView, *, page: int = 5000
) -> BackfillReport:
    writer = OnlineWriter(client, names, {view.name: view})
    outcomes: Counter[str] = Counter()
    seen = 0
    after = -1
    while True:
        stored = await offline.replay_events(pool, view.source, after_seq=after, limit=page)
        if not stored:
            break
        events = [Event(id=s.id, type=view.source, entity=s.entity, ts=s.ts, data=dict(s.data)) for s in stored]
        for item in await writer.apply(events):
            outcomes[item.outcome.name.lower()] += 1
        seen += len(stored)
        after = stored[-1].seq
    return BackfillReport(seen, outcomes["applied"], outcomes["duplicate"], outcomes["late"])
