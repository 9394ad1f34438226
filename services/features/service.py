"""The features service: streams normalized events into window state and both stores.

Workers: ``norm`` consumes ``<ns>.norm.>`` (online update + offline log), ``labels``
consumes ``<ns>.labels.>`` (offline log), ``lag`` polls both consumers' backlog.
Endpoint: ``<ns>.features.get`` answers feature vectors for a batch of entities.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from typing import Any, ClassVar

import asyncpg
import redis.asyncio as aioredis
import structlog
from nats.aio.msg import Msg
from prometheus_client import Counter, Gauge, Histogram
from redis.exceptions import RedisError

from services.features import offline
from services.features.consumer import SLICE, BatchConsumer, ConsumerSpec
from services.features.grouped import GroupedWrites
from services.features.online import OnlineWriter, read_vectors
from services.features.rows import event_row, label_row
from services.features.script import Outcome, ScriptCall
from services.features.settings import FeaturesSettings
from services.features.views import FeatureView
from shared.codec import decode
from shared.db import open_pool
from shared.errors import BadRequest, NotFound, ServiceError, Unavailable
from shared.messages import Event, Label
from shared.online import open_redis
from shared.pull import stream_position
from shared.runtime import Endpoint, Request, Service, Worker

log = structlog.get_logger(__name__)

FRESHNESS_BUCKETS_S = (
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip


# Event times must be exact as Lua numbers (doubles) and fit Postgres bigint.
MAX_EXACT_MS = 2**53


class EventBatch:
    """Norm messages parsed as they arrive into events and offline rows; the online calls are
    planned once the batch is complete (a view's events are grouped by entity over the batch)."""

    def __init__(self, writer: OnlineWriter, bad_messages: Counter) -> None:
        self.writer = writer
        self.bad_messages = bad_messages
        self.events: list[Event] = []
        self.rows: list[tuple[Any, ...]] = []
        self.calls: list[ScriptCall] = []

    async def add(self, msgs: list[Msg]) -> None:
        for position, msg in enumerate(msgs, 1):
            if position % SLICE == 0:
                await asyncio.sleep(0)  # see consumer.SLICE
            try:
                event = Event.from_dict(decode(msg.data))
            except ServiceError as error:
                self.bad_messages.inc()
                log.warning("bad_event_dropped", subject=msg.subject, error=error.message)
                continue
            if not -MAX_EXACT_MS <= event.ts <= MAX_EXACT_MS:
                self.bad_messages.inc()
                log.warning("bad_event_dropped", subject=msg.subject, error=f"ts {event.ts} is out of range")
                continue
            seq, ingested = stream_position(msg)
            self.events.append(event)
            self.rows.append(event_row(event, seq, ingested))

    async def seal(self) -> EventBatch:
        for call in self.writer.plan(self.events):
            self.calls.append(call)
            await asyncio.sleep(0)
        return self


class LabelBatch:
    """Label messages parsed as they arrive into offline rows."""

    def __init__(self, bad_messages: Counter) -> None:
        self.bad_messages = bad_messages
        self.rows: list[tuple[Any, ...]] = []

    async def add(self, msgs: list[Msg]) -> None:
        for msg in msgs:
            try:
                label = Label.from_dict(decode(msg.data))
            except ServiceError as error:
                self.bad_messages.inc()
                log.warning("bad_label_dropped", subject=msg.subject, error=error.message)
                continue
            seq, ingested = stream_position(msg)
            self.rows.append(label_row(label, msg.subject.rsplit(".", 1)[-1], seq, ingested))

    async def seal(self) -> list[tuple[Any, ...]]:
        return self.rows


class FeaturesService(Service):
    name: ClassVar[str] = "features"

    def __init__(self, settings: FeaturesSettings, views: Mapping[str, FeatureView]) -> None:
        super().__init__(settings.common)
        self.settings = settings
        self.views = dict(views)
        self.redis: aioredis.Redis
        self.pool: asyncpg.Pool
        self.writer: OnlineWriter
        self.offline_events: GroupedWrites
        self.consumers: dict[str, BatchConsumer] = {}
        self.pending: dict[str, int] = {}
        m = self.metrics
        self.events_total = Counter(
            m.name("events_total"), "Event applications per view by outcome (applied, duplicate, late)",
            ["view", "outcome"], registry=m.registry,
        )  # fmt: skip
        self.freshness = Histogram(
            m.name("freshness_seconds"), "Event time to online visibility, per view",
            ["view"], buckets=FRESHNESS_BUCKETS_S, registry=m.registry,
        )  # fmt: skip
        self.pending_gauge = Gauge(
            m.name("consumer_pending"), "Messages not yet acked by a consumer", ["consumer"], registry=m.registry
        )
        self.write_failures = Counter(
            m.name("store_failures_total"), "Batches whose store failed (retried)", ["consumer"], registry=m.registry
        )
        self.offline_rows = Counter(
            m.name("offline_rows_total"), "Rows copied to the offline store", ["table"], registry=m.registry
        )
        self.bad_messages = Counter(
            m.name("bad_messages_total"), "Messages dropped as malformed", ["consumer"], registry=m.registry
        )

    # Resources ------------------------------------------------------------
    async def setup(self, stack: AsyncExitStack) -> None:
        self.redis = await stack.enter_async_context(open_redis(self.common.redis_url))
        self.pool = await stack.enter_async_context(
            open_pool(self.common.database_url, schema=self.names.schema, max_size=4)
        )
        await offline.ensure_tables(self.pool)
        await offline.register_views(self.pool, self.views.values())
        self.offline_events = GroupedWrites(
            lambda rows: offline.write_events(self.pool, rows),
            linger_s=self.settings.offline_linger_s, max_rows=self.settings.batch_size,
        )  # fmt: skip
        self.writer = OnlineWriter(self.redis, self.names, self.views)
        stack.push_async_callback(self.writer.close)
        s = self.settings

        def spec(flow: str, purpose: str, stores_in_flight: int) -> ConsumerSpec:
            return ConsumerSpec(
                stream=self.names.stream(flow),
                durable=self.names.consumer("features", purpose),
                subject=f"{self.names.namespace}.{flow}.>",
                batch_size=s.batch_size,
                fetch_timeout_s=s.fetch_timeout_s,
                ack_wait_s=s.ack_wait_s,
                retry_max_s=s.retry_max_s,
                max_ack_pending=s.ack_pending_cap,
                stores_in_flight=stores_in_flight,
                linger_s=s.linger_s,
            )

        self.consumers = {
            "norm": BatchConsumer(
                self.nc, spec("norm", "norm", s.stores_in_flight), self._new_event_batch, self._store_online,
                self.write_failures.labels("norm"), store_unordered=self._store_offline,
            ),
            "labels": BatchConsumer(
                self.nc, spec("labels", "labels", 1), self._new_label_batch, self._store_labels,
                self.write_failures.labels("labels"),
            ),
        }  # fmt: skip
        for consumer in self.consumers.values():
            await consumer.ensure()
            stack.push_async_callback(consumer.close)
        log.info("features_views", views={v.name: v.version for v in self.views.values()})

    def endpoints(self) -> Sequence[Endpoint]:
        return [Endpoint("get", self.names.features_get, self.get_features)]

    def workers(self) -> Mapping[str, Worker]:
        return {"norm": self.consumers["norm"].run, "labels": self.consumers["labels"].run, "lag": self._watch_lag}

    async def check_ready(self) -> str | None:
        for name, pending in self.pending.items():
            if pending > self.settings.max_lag_msgs:
                return f"consumer {name} is {pending} messages behind (bound {self.settings.max_lag_msgs})"
        return None

    # Events ---------------------------------------------------------------
    def _new_event_batch(self) -> EventBatch:
        return EventBatch(self.writer, self.bad_messages.labels("norm"))

    # A batch's two stores start together: the online one in stream order (window state depends
    # on the order events arrive in), the offline one (idempotent, order-free rows) alongside,
    # still running while the next batch's online store goes ahead.
    async def _store_offline(self, batch: EventBatch) -> None:
        if batch.rows:
            await self.offline_events.write(batch.rows)
            self.offline_rows.labels("features_events").inc(len(batch.rows))

    async def _store_online(self, batch: EventBatch) -> None:
        if not batch.calls:
            return
        applied = await self.writer.run(batch.calls)
        counts: dict[tuple[str, Outcome], int] = {}
        freshness = {view: self.freshness.labels(view) for view in self.views}  # a label lookup costs per call
        for item in applied:
            counts[(item.view, item.outcome)] = counts.get((item.view, item.outcome), 0) + 1
            if item.outcome == Outcome.APPLIED:
                # from the event's time to the end of the call that applied it, by Redis's clock: the
                # moment readers see it (not when the reply reached this replica, later by its trip back
                # and whatever this replica's loop was busy with)
                freshness[item.view].observe(max(0.0, (item.visible_ms - item.ts) / 1000))
        for (view, outcome), count in counts.items():
            self.events_total.labels(view, outcome.name.lower()).inc(count)

    # Labels ---------------------------------------------------------------
    def _new_label_batch(self) -> LabelBatch:
        return LabelBatch(self.bad_messages.labels("labels"))

    async def _store_labels(self, rows: list[tuple[Any, ...]]) -> None:
        await offline.write_labels(self.pool, rows)
        self.offline_rows.labels("features_labels").inc(len(rows))

    # Lag ------------------------------------------------------------------
    async def _watch_lag(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            for name, consumer in self.consumers.items():
                try:
                    pending = await consumer.pending()
                except Exception as error:  # NATS away: keep the last figure, try again next tick
                    log.debug("lag_poll_failed", consumer=name, error=repr(error))
                    continue
                self.pending[name] = pending
                self.pending_gauge.labels(name).set(pending)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.settings.lag_poll_s)

    # Online read ----------------------------------------------------------
    async def get_features(self, request: Request) -> dict[str, Any]:
        """``{"entities": [str], "views": [str]?}`` -> ``{"now_ms", "vectors": [...]}`` (all views by default)."""
        body = request.payload()
        entities = body.get("entities")
        if not isinstance(entities, list) or not entities:
            raise BadRequest("field 'entities' must be a non-empty list of strings")
        if len(entities) > self.settings.max_entities:
            raise BadRequest(f"at most {self.settings.max_entities} entities per request, got {len(entities)}")
        if not all(isinstance(e, str) and e for e in entities):
            raise BadRequest("field 'entities' must hold non-empty strings")
        names = body.get("views", list(self.views))
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise BadRequest("field 'views' must be a non-empty list of view names")
        unknown = [n for n in names if n not in self.views]
        if unknown:
            raise NotFound(f"unknown view(s): {', '.join(unknown)}; known: {', '.join(sorted(self.views))}")
        now_ms = int(time.time() * 1000)
        try:
            vectors = await read_vectors(
                self.redis, self.names, [self.views[n] for n in names], entities, now_ms=now_ms
            )
        except RedisError as error:
            raise Unavailable(f"online store unavailable: {error}") from error
        return {"now_ms": now_ms, "vectors": vectors}
