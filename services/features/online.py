"""The online store: the streaming writer over every view, and the batch reader behind ``features.get``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
import structlog
from redis.exceptions import NoScriptError, ResponseError

from services.features.script import Outcome, ViewScript
from services.features.views import FeatureView
from shared.messages import Event
from shared.online import read_online_features
from shared.subjects import Names

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Applied:
    """What one (event, view) call did."""

    view: str
    ts: int
    outcome: Outcome


class OnlineWriter:
    """Applies events to every view reading their type, many calls per pipelined round trip."""

    def __init__(self, client: aioredis.Redis, names: Names, views: Mapping[str, FeatureView]) -> None:
        self.client = client
        self.by_source: dict[str, list[ViewScript]] = {}
        for view in views.values():
            self.by_source.setdefault(view.source, []).append(ViewScript(client, names, view))

    async def apply(self, events: Sequence[Event]) -> list[Applied]:
        """Apply ``events`` in order; each call is atomic and idempotent on the event id."""
        plan = [
            (script, entity, event)
            for event in events
            for script in self.by_source.get(event.type, ())
            if (entity := script.view.entity_of(event.entity, event.data)) is not None
        ]
        if not plan:
            return []
        results = await self._execute(plan)
        if any(isinstance(r, NoScriptError) for r in results):
            for scripts in self.by_source.values():  # Redis restarted or flushed its scripts
                for script in scripts:
                    await script.load(self.client)
            results = await self._execute(plan)
        applied = []
        for (script, _, event), result in zip(plan, results, strict=True):
            view = script.view.name
            if isinstance(result, ResponseError) and _is_script_error(result):
                # this event breaks the script (nothing was written: Redis scripts are atomic);
                # retrying cannot help, so it is counted and left to the offline store
                log.error("online_update_failed", view=view, error=str(result))
                applied.append(Applied(view, event.ts, Outcome.FAILED))
            elif isinstance(result, Exception):
                raise result  # the server refused the work (OOM, loading, ...): retry the batch
            else:
                applied.append(Applied(view, event.ts, Outcome(int(result))))
        return applied

    async def _execute(self, plan: Sequence[tuple[ViewScript, str, Event]]) -> list[Any]:
        async with self.client.pipeline(transaction=False) as pipe:
            for script, entity, event in plan:
                script.enqueue(pipe, entity, event.id, event.ts, event.data)
            return list(await pipe.execute(raise_on_error=False))


def _is_script_error(error: ResponseError) -> bool:
    message = str(error)
    return "user_script" in message or "Error running script" in message


async def read_vectors(
    client: aioredis.Redis,
    names: Names,
    views: Sequence[FeatureView],
    entities: Sequence[str],
    *,
    now_ms: int,
) -> list[dict[str, Any]]:
    """Each (entity, view) vector with defaults for what is unknown and per-feature freshness.

    Freshness is ``now - t`` in ms, where ``t`` is the event time the value is as of;
    ``None`` for a default (nothing seen).
    """
    wanted = [(view.name, entity) for entity in entities for view in views]
    stored = await read_online_features(client, names, wanted)
    out: list[dict[str, Any]] = []
    position = 0
    for entity in entities:
        for view in views:
            vector = stored[position]
            position += 1
            features: dict[str, float] = {}
            freshness: dict[str, int | None] = {}
            for feature in view.features:
                value = vector.values.get(feature.name)
                updated = vector.updated_ms.get(feature.name)
                features[feature.name] = feature.default if value is None else value
                freshness[feature.name] = None if updated is None or value is None else now_ms - updated
            out.append(
                {
                    "entity": entity,
                    "view": view.name,
                    "version": view.version,
                    "found": bool(vector.values),
                    "features": features,
                    "freshness_ms": freshness,
                }
            )
    return out
