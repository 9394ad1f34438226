"""The online store: the streaming writer over every view, and the batch reader behind ``features.get``."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import redis.asyncio as aioredis
import structlog
from redis.exceptions import NoScriptError, ResponseError

from services.features.ordered import OrderedPipeline
from services.features.script import EVENTS_PER_CALL, EntityEvent, Outcome, ScriptCall, ViewScript
from services.features.views import FeatureView
from shared.messages import Event
from shared.online import read_online_features
from shared.subjects import Names

log = structlog.get_logger(__name__)


class Applied(NamedTuple):
    """What one (event, view) call did (a named tuple: one is made per event and view), and when
    its call ended by the Redis server's clock (ms since the epoch): the moment what it wrote became
    visible to readers (0 for a failed call)."""

    view: str
    ts: int
    outcome: Outcome
    visible_ms: float


_OUTCOMES = tuple(Outcome)  # by code: the script's codes are the outcomes' values, from 0


class OnlineWriter:
    """Applies events to every view reading their type: one script call per run of up to
    :data:`EVENTS_PER_CALL` events of a view, all calls of a batch in one pipeline, the batches'
    pipelines one after another on one connection (:class:`OrderedPipeline`): a batch may be sent
    while the one before it is still running, and Redis runs them in the order they were sent."""

    def __init__(self, client: aioredis.Redis, names: Names, views: Mapping[str, FeatureView]) -> None:
        self.client = client
        self.pipeline = OrderedPipeline(client)
        # batches that met a Redis without the scripts load them and go again one at a time, in the
        # order their replies came back (the order they were sent): an asyncio lock serves in turn
        self._reloading = asyncio.Lock()
        self.by_source: dict[str, list[ViewScript]] = {}
        for view in views.values():
            self.by_source.setdefault(view.source, []).append(ViewScript(client, names, view))

    def plan(self, events: Sequence[Event]) -> Iterator[ScriptCall]:
        """The script calls that apply ``events`` in order, one at a time (pure: built ahead, while
        the previous batch is still being written, with the loop handed back between calls)."""
        # per view, each entity's events together (in stream order): entities are independent, and
        # a call reads and writes an entity's state once however many of its events it carries
        by_type: dict[str, list[Event]] = {}
        for event in events:
            typed = by_type.get(event.type)
            if typed is None:
                by_type[event.type] = [event]
            else:
                typed.append(event)
        for event_type, typed in by_type.items():
            for script in self.by_source.get(event_type, ()):
                entity_of = script.view.entity_of
                groups: dict[str, list[EntityEvent]] = {}
                for event in typed:
                    entity = entity_of(event.entity, event.data)
                    if entity is None:
                        continue
                    item = (entity, event.id, event.ts, event.data)
                    group = groups.get(entity)
                    if group is None:
                        groups[entity] = [item]
                    else:
                        group.append(item)
                run = [item for group in groups.values() for item in group]
                for start in range(0, len(run), EVENTS_PER_CALL):
                    yield ScriptCall(script, run[start : start + EVENTS_PER_CALL])

    async def apply(self, events: Sequence[Event]) -> list[Applied]:
        """Apply ``events`` in order; each event is applied once (idempotent on its id), atomically
        with the others of its call."""
        return await self.run(list(self.plan(events)))

    async def run(self, calls: Sequence[ScriptCall]) -> list[Applied]:
        """Make ``calls`` in one pipeline (after those of earlier runs); what each event came to."""
        if not calls:
            return []
        results = await self._execute(calls)
        if any(isinstance(r, NoScriptError) for r in results):
            async with self._reloading:  # Redis restarted or flushed its scripts
                for scripts in self.by_source.values():
                    for script in scripts:
                        await script.load(self.client)
                results = await self._execute(calls)
        applied = []
        for call, result in zip(calls, results, strict=True):
            view = call.script.view.name
            if isinstance(result, ResponseError) and _is_script_error(result):
                # an event of this call breaks the script; retrying cannot help, so the call's
                # events are counted and left to the offline store
                log.error("online_update_failed", view=view, events=len(call.events), error=str(result))
                applied += [Applied(view, ts, Outcome.FAILED, 0.0) for _, _, ts, _ in call.events]
            elif isinstance(result, Exception):
                raise result  # the server refused the work (OOM, loading, ...): retry the batch
            else:
                codes, (seconds, micros) = result
                visible_ms = int(seconds) * 1000 + int(micros) / 1000
                applied += [
                    Applied(view, ts, _OUTCOMES[code], visible_ms)
                    for (_, _, ts, _), code in zip(call.events, codes, strict=True)
                ]
        return applied

    async def _execute(self, calls: Sequence[ScriptCall]) -> list[Any]:
        return await self.pipeline.execute([call.command() for call in calls])

    async def close(self) -> None:
        await self.pipeline.close()


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
            as_of = vector.as_of_ms
            position += 1
            features: dict[str, float] = {}
            freshness: dict[str, int | None] = {}
            for feature in view.features:
                value = vector.values.get(feature.name)
                features[feature.name] = feature.default if value is None else value
                freshness[feature.name] = None if value is None or as_of is None else now_ms - as_of
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
