"""The monitor service: consumes the prediction log and labels, raises alerts, answers summaries.

Workers: a durable pull consumer on ``<ns>.predictions.>`` feeds each model
version's windows and detectors (and the Postgres join table); one on
``<ns>.labels.>`` joins labels to predictions for live performance. Signals from
the engine go through the :class:`~services.monitor.alerts.AlertManager`.
Endpoint: ``<ns>.monitor.summary`` (the rollout controller's gate input). HTTP
routes are in :mod:`services.monitor.api`.

On start the windows are rebuilt by replaying the last ``rebuild_s`` seconds of
the prediction stream up to where the durable consumer had acknowledged, with no
alerts and no writes, so a restart resumes with full windows and warm detectors.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import math
import time
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from typing import Any, ClassVar

import asyncpg
import nats.errors
import structlog
from aiohttp import web
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from services.monitor import store
from services.monitor.alerts import AlertManager
from services.monitor.api import MonitorApi
from services.monitor.engine import ModelMonitor, Signal, VersionMonitor
from services.monitor.metrics import MonitorMetrics
from services.monitor.profiles import ensure_profile_table, load_profile
from services.monitor.settings import MonitorSettings
from services.monitor.summary import SummaryRequest, summarize
from services.monitor.windows import LogSlice, LruMap, PredictionLog
from shared.codec import decode, encode
from shared.db import open_pool
from shared.errors import ServiceError
from shared.messages import Label, PredictionRecord
from shared.runtime import Endpoint, Request, Service, Worker

log = structlog.get_logger(__name__)

PROFILE_RETRY_S = 30.0
ACK_WAIT_S = 60.0
RETENTION_EVERY_S = 3600.0


class MonitorService(Service):
    name: ClassVar[str] = "monitor"

    def __init__(self, settings: MonitorSettings) -> None:
        super().__init__(settings.common)
        self.settings = settings
        self.monitor_metrics = MonitorMetrics(self.metrics)
        self.models: dict[str, ModelMonitor] = {}
        self.labels: LruMap[str, float] = LruMap(settings.label_cache)
        self.recent: LruMap[str, list[store.Scored]] = LruMap(settings.label_cache)
        self._profile_retry: dict[tuple[str, int], float] = {}
        self.pool: asyncpg.Pool
        self.alerts: AlertManager
        self.rebuilt = 0
        self.labels_rebuilt = 0
        self.consumed = 0
        self._writing: asyncio.Task[None] | None = None

    # lifecycle ---------------------------------------------------------------
    async def setup(self, stack: AsyncExitStack) -> None:
        self.pool = await stack.enter_async_context(open_pool(self.common.database_url, schema=self.names.schema))
        await ensure_profile_table(self.pool)
        await store.ensure_tables(self.pool)
        self.alerts = AlertManager(
            self.pool, self._publish_alert, clear_windows=lambda model: self.settings.model(model).clear_windows
        )
        await self.alerts.setup()
        self.monitor_metrics.alerts_open.set(self.alerts.open_count)
        await self._rebuild()
        await self._rebuild_labels()
        for purpose, flow in (("predictions", "predictions"), ("labels", "labels")):
            await self._ensure_consumer(purpose, flow)

    def endpoints(self) -> Sequence[Endpoint]:
        return [Endpoint("summary", f"{self.names.namespace}.monitor.summary", self.summary)]

    def workers(self) -> Mapping[str, Worker]:
        return {
            "predictions": self._consume_predictions,
            "labels": self._consume_labels,
            "retention": self._retention,
        }

    def routes(self) -> Sequence[web.AbstractRouteDef]:
        return MonitorApi(self).routes()

    # consumers -----------------------------------------------------------------
    def _consumer_config(self, purpose: str, flow: str) -> ConsumerConfig:
        start = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=self.settings.rebuild_s)
        return ConsumerConfig(
            durable_name=self.names.consumer(self.name, purpose),
            filter_subject=f"{self.names.namespace}.{flow}.>",
            # one monitor replica consumes in order, so acking a batch's last message acks the batch
            ack_policy=AckPolicy.ALL,
            ack_wait=ACK_WAIT_S,
            # a first start catches up on the recent past rather than the whole retention
            deliver_policy=DeliverPolicy.BY_START_TIME,
            opt_start_time=start,
            max_ack_pending=20 * self.settings.batch,
        )

    async def _ensure_consumer(self, purpose: str, flow: str) -> None:
        stream, durable = self.names.stream(flow), self.names.consumer(self.name, purpose)
        try:
            await self.js.consumer_info(stream, durable)
        except NotFoundError:
            await self.js.add_consumer(stream, config=self._consumer_config(purpose, flow))

    async def _pull_loop(self, purpose: str, flow: str, stop: asyncio.Event, handle: Any) -> None:
        """Fetch the next batch while this one is handled; ack a handled batch with one ack (AckPolicy.ALL)."""
        subscription = await self.js.pull_subscribe(
            f"{self.names.namespace}.{flow}.>",
            durable=self.names.consumer(self.name, purpose),
            stream=self.names.stream(flow),
        )

        def fetch() -> asyncio.Future[list[Msg]]:
            return asyncio.ensure_future(subscription.fetch(self.settings.batch, timeout=self.settings.fetch_wait_s))

        upcoming: asyncio.Future[list[Msg]] | None = fetch()
        try:
            while upcoming is not None:
                try:
                    msgs = await upcoming
                except TimeoutError:
                    msgs = []
                except nats.errors.Error as error:
                    msgs = []
                    log.warning("pull_failed", consumer=purpose, error=str(error) or type(error).__name__)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=0.5)
                upcoming = None if stop.is_set() else fetch()
                if msgs:
                    await handle(msgs)
                    await msgs[-1].ack()
        finally:
            if upcoming is not None:
                upcoming.cancel()
                with contextlib.suppress(BaseException):
                    await upcoming
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()

    async def _consume_predictions(self, stop: asyncio.Event) -> None:
        try:
            await self._pull_loop("predictions", "predictions", stop, self.handle_predictions)
        finally:
            await self._wait_for_write()

    async def _consume_labels(self, stop: asyncio.Event) -> None:
        await self._pull_loop("labels", "labels", stop, self.handle_labels)

    async def _retention(self, stop: asyncio.Event) -> None:
        """Hourly, drop join rows past the retention: labels that late are no longer joined."""
        while not stop.is_set():
            cutoff = int((time.time() - self.settings.join_retention_s) * 1000)
            deleted = await store.forget_before(self.pool, cutoff)
            if deleted:
                log.info("join_rows_forgotten", predictions=deleted, before_ms=cutoff)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=RETENTION_EVERY_S)

    async def _rebuild_labels(self) -> None:
        """Refill the labelled windows from the Postgres join (the latest ``label_cache`` labels), silently."""
        joined = await store.recent_joins(self.pool, self.settings.label_cache)
        for id_, scored, label in joined:
            self.labels[id_] = label
            _, monitor = await self._version(scored.model, scored.version)
            monitor.observe_label(scored.variant, scored.score, label)  # signals dropped: nothing new happened
        if joined:
            log.info("labels_rebuilt", joined=len(joined))
        self.labels_rebuilt = len(joined)

    async def _rebuild(self) -> None:
        """Replay the recent prediction stream up to the durable's ack floor into the windows, silently."""
        if self.settings.rebuild_s <= 0:
            return
        stream, durable = self.names.stream("predictions"), self.names.consumer(self.name, "predictions")
        try:
            info = await self.js.consumer_info(stream, durable)
        except NotFoundError:
            return
        last = info.ack_floor.stream_seq if info.ack_floor and info.ack_floor.stream_seq else 0
        if last <= 0:
            return
        start = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=self.settings.rebuild_s)
        subscription = await self.js.pull_subscribe(
            self.names.predictions(">"),
            stream=stream,
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=start, ack_policy=AckPolicy.NONE,
                inactive_threshold=30.0,
            ),
        )  # fmt: skip
        try:
            done = False
            while not done:
                try:
                    msgs = await subscription.fetch(self.settings.batch, timeout=1.0)
                except TimeoutError:
                    break
                keep = [m for m in msgs if m.metadata.sequence.stream <= last]
                done = len(keep) < len(msgs) or (bool(msgs) and msgs[-1].metadata.sequence.stream >= last)
                await self.handle_predictions(keep, live=False)
                self.rebuilt += len(keep)
        finally:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
        log.info("windows_rebuilt", predictions=self.rebuilt, up_to_seq=last)

    # predictions -----------------------------------------------------------------
    async def _version(self, model_name: str, version: int) -> tuple[ModelMonitor, VersionMonitor]:
        model = self.models.get(model_name)
        if model is None:
            model = ModelMonitor(model_name, self.settings.model(model_name), log_size=self.settings.log_size)
            self.models[model_name] = model
        monitor = model.versions.get(version)
        key = (model_name, version)
        if monitor is None or (monitor.profile is None and time.monotonic() >= self._profile_retry.get(key, 0.0)):
            try:
                profile = await load_profile(self.pool, model_name, version)
            except ServiceError as error:  # a malformed stored profile must not stop the stream
                log.error("reference_profile_unreadable", model=model_name, version=version, error=error.message)
                profile = None
            if monitor is None or profile is not None:
                monitor = VersionMonitor(model_name, version, profile, model.config)
                model.versions[version] = monitor
            if profile is None:
                if key not in self._profile_retry:
                    log.warning("no_reference_profile", model=model_name, version=version)
                self._profile_retry[key] = time.monotonic() + PROFILE_RETRY_S
            else:
                log.info("reference_profile_loaded", model=model_name, version=version, features=len(profile.features))
        return model, monitor

    async def handle_predictions(self, msgs: Sequence[Msg], *, live: bool = True) -> None:
        """Decode a fetched batch, feed it per model version in stream order, then write the join rows."""
        records: list[PredictionRecord] = []
        for msg in msgs:
            try:
                # PredictionRecord.from_dict refuses nested values itself
                records.append(PredictionRecord.from_dict(decode(msg.data, check_depth=False)))
            except ServiceError as error:
                self.monitor_metrics.bad_messages.labels("predictions").inc()
                log.warning("bad_prediction_record", subject=msg.subject, error=error.message)
            except (TypeError, ValueError) as error:  # e.g. a feature value that is no number
                self.monitor_metrics.bad_messages.labels("predictions").inc()
                log.warning("bad_prediction_record", subject=msg.subject, error=str(error))
        await self.observe_batch(records, live=live)
        if live and records:
            rows = [(r.id, r.model, r.version, r.variant, r.ts, r.score) for r in records]
            # one write in flight: it overlaps the next batch's processing, and memory stays bounded
            await self._wait_for_write()
            self._writing = asyncio.create_task(store.write_predictions(self.pool, rows))

    async def _wait_for_write(self) -> None:
        if self._writing is None:
            return
        try:
            await self._writing
        except Exception as error:
            log.error("prediction_join_write_failed", error=str(error))
        self._writing = None

    async def observe(self, record: PredictionRecord, *, live: bool = True) -> None:
        await self.observe_batch([record], live=live)

    async def observe_batch(self, records: Sequence[PredictionRecord], *, live: bool = True) -> None:
        """Take prediction records into the log, the windows and the detectors; apply what they signal."""
        groups: dict[tuple[str, int], list[PredictionRecord]] = {}
        for record in records:
            groups.setdefault((record.model, record.version), []).append(record)
        for (model_name, version), group in groups.items():
            model, monitor = await self._version(model_name, version)
            recent = self.recent
            for record in group:
                model.record(record)
                if record.score is not None:
                    scored = store.Scored(record.model, record.version, record.variant, record.score)
                    earlier = recent.get(record.id)
                    recent[record.id] = [scored] if earlier is None else [*earlier, scored][-4:]
            before = monitor.last
            signals = monitor.observe_batch(group, signals=live)
            if monitor.last is not before:
                self._export_evaluation(monitor)
            for signal in signals:
                await self._apply(model_name, signal)
            if live:
                self.consumed += len(group)
                self.monitor_metrics.predictions.labels(model_name).inc(len(group))

    def _export_evaluation(self, monitor: VersionMonitor) -> None:
        version = str(monitor.version)
        for result in monitor.last.features:
            for statistic, value in result.statistics.items():
                if value is not None and math.isfinite(value):
                    self.monitor_metrics.drift.labels(monitor.model, version, result.feature, statistic).set(value)
        for figure in ("mean", "entropy", "near_threshold_share"):
            value = monitor.last.confidence.get(figure)
            if isinstance(value, float):
                self.monitor_metrics.confidence.labels(monitor.model, version, figure).set(value)

    async def _apply(self, model: str, signal: Signal) -> None:
        key = (signal.kind, model, signal.version, signal.feature)
        if signal.breach is None:
            was_open = self.alerts.is_open(key)
            await self.alerts.clean(key, signal.window)
            if was_open and not self.alerts.is_open(key):
                self.monitor_metrics.alerts_resolved.labels(signal.kind).inc()
        else:
            if signal.breach.statistic == "cusum":
                self.monitor_metrics.detector_alarms.labels(model, signal.feature).inc()
            was_open = self.alerts.is_open(key)
            await self.alerts.breach(key, signal.breach)
            if not was_open and self.alerts.is_open(key):
                self.monitor_metrics.alerts_raised.labels(signal.kind).inc()
        self.monitor_metrics.alerts_open.set(self.alerts.open_count)

    async def _publish_alert(self, kind: str, body: dict[str, Any], msg_id: str) -> None:
        await self.js.publish(self.names.alerts(kind), encode(body), headers={"Nats-Msg-Id": msg_id})

    # labels ------------------------------------------------------------------------
    async def handle_labels(self, msgs: Sequence[Msg]) -> None:
        parsed: list[tuple[str, Label]] = []
        for msg in msgs:
            try:
                label = Label.from_dict(decode(msg.data))
            except ServiceError as error:
                self.monitor_metrics.bad_messages.labels("labels").inc()
                log.warning("bad_label", subject=msg.subject, error=error.message)
                continue
            parsed.append((label.event_id or f"{label.id}:{label.ts}", label))
        if not parsed:
            return
        fresh_ids = await store.write_labels(self.pool, [(e, lab.id, lab.label, lab.ts) for e, lab in parsed])
        fresh = [lab for e, lab in parsed if e in fresh_ids]
        self.monitor_metrics.labels.labels("duplicate").inc(len(parsed) - len(fresh))
        missing = [lab.id for lab in fresh if lab.id not in self.recent]
        found = await store.find_predictions(self.pool, missing) if missing else {}
        for label in fresh:
            self.labels[label.id] = label.label
            scored = self.recent.get(label.id) or found.get(label.id)
            if not scored:
                self.monitor_metrics.labels.labels("unmatched").inc()
                continue
            self.monitor_metrics.labels.labels("joined").inc()
            for item in scored:
                model, monitor = await self._version(item.model, item.version)
                before = monitor.last_performance
                signals = monitor.observe_label(item.variant, item.score, label.label)
                if monitor.last_performance is not before:
                    self._export_performance(monitor)
                    signals.extend(model.compare_to_stable())
                for signal in signals:
                    await self._apply(item.model, signal)

    def _export_performance(self, monitor: VersionMonitor) -> None:
        for variant, figures in monitor.last_performance.items():
            for metric, value in figures.to_dict().items():
                if isinstance(value, float):
                    self.monitor_metrics.performance.labels(monitor.model, str(monitor.version), variant, metric).set(
                        value
                    )

    # summary ------------------------------------------------------------------------
    def slice(self, model_name: str, window_s: float) -> LogSlice:
        model = self.models.get(model_name)
        log_ = model.log if model is not None else PredictionLog(capacity=1)
        return log_.since(int(time.time() * 1000) - round(window_s * 1000))

    def summarize(self, request: SummaryRequest) -> dict[str, Any]:
        part = self.slice(request.model, request.window_s)
        return summarize(request, part, self.labels.get, self.settings.summary_min_samples)

    async def summary(self, request: Request) -> dict[str, Any]:
        return self.summarize(SummaryRequest.from_dict(request.payload()))
