"""The intake loop: a durable pull consumer on the events stream, batch by batch, at-least-once.

For each fetched batch every input gets an outcome; all outputs (normalized events, labels, dead
letters) are published concurrently with ``Nats-Msg-Id`` set, and an input is acked only once JetStream
has acked its output. An output that fails to publish leaves its input unacked (nak with a delay), so it
comes back; the outputs' msg ids make the retry harmless. A handler crash is retried with backoff up to
``max_deliver`` deliveries, then dead-lettered as ``handler_crash``. Several replicas (and several fetch
loops per replica) share the one durable consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from dataclasses import dataclass

import nats.errors
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from services.ingest.acked import AckedPublisher
from services.ingest.dlq import CONTENT_TYPE, dead_letter_headers
from services.ingest.metrics import IngestMetrics
from services.ingest.pipeline import Accepted, Outcome, Pipeline, Rejected
from services.ingest.reasons import Reason, Rejection
from services.ingest.settings import IngestSettings
from shared.pull import PullPump
from shared.subjects import Names
from shared.tracing import TRACEPARENT, TraceContext

log = structlog.get_logger(__name__)

SCHEMA_HEADER = "Rtml-Schema"
MSG_ID = "Nats-Msg-Id"


@dataclass(frozen=True, slots=True)
class Publication:
    """An output to publish, and the input it answers (acked once the output is)."""

    msg: Msg
    subject: str
    payload: bytes
    headers: dict[str, str]
    outcome: Outcome
    stored_at: float  # the input's stream timestamp, epoch seconds


def consumer_config(names: Names, settings: IngestSettings) -> ConsumerConfig:
    # max_deliver stays unlimited: a bounded server-side max_deliver would drop a poison message silently,
    # where ours dead-letters it with a reason.
    return ConsumerConfig(
        durable_name=names.consumer("ingest"),
        filter_subject=names.events(">"),
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=settings.ack_wait_s,
        max_deliver=-1,
        max_ack_pending=max(4 * settings.batch * settings.fetchers, 1024) * 4,
        max_waiting=512,
    )


class Intake:
    def __init__(
        self, nc: Client, names: Names, pipeline: Pipeline, settings: IngestSettings, metrics: IngestMetrics
    ) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.names = names
        self.pipeline = pipeline
        self.settings = settings
        self.metrics = metrics
        self.publisher = AckedPublisher(nc)

    async def ensure_consumer(self) -> None:
        """Create the durable consumer unless it exists (replicas racing here is harmless: same config)."""
        stream, durable = self.names.stream("events"), self.names.consumer("ingest")
        try:
            await self.js.consumer_info(stream, durable)
        except NotFoundError:
            await self.js.add_consumer(stream, config=consumer_config(self.names, self.settings))

    async def run(self, stop: asyncio.Event) -> None:
        """The worker: ``fetchers`` loops over one pump until ``stop`` is set; each finishes its batch first."""
        await self.ensure_consumer()
        pump = PullPump(self.nc, self.names.stream("events"), self.names.consumer("ingest"), batch=self.settings.batch)
        await pump.start()
        await self.publisher.start()
        try:
            await asyncio.gather(*(self._loop(pump, stop) for _ in range(self.settings.fetchers)))
        finally:
            await pump.stop()
            await self.publisher.stop()

    async def _loop(self, pump: PullPump, stop: asyncio.Event) -> None:
        delay = 0.1
        while not stop.is_set():
            try:
                msgs = await pump.next_batch(self.settings.fetch_wait_s)
            except nats.errors.Error as error:
                log.warning("pull_failed", error=str(error) or type(error).__name__, retry_in_s=delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay)
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.1
            if not msgs:
                self.metrics.lag.set(0)
                continue
            await self.handle_batch(msgs)

    async def handle_batch(self, msgs: list[Msg]) -> None:
        """Decide every input of the batch, publish every output, then ack or nak each input."""
        self.metrics.batch_size.observe(len(msgs))
        now = time.time()
        now_ms = int(now * 1000)
        publications: list[Publication] = []
        for msg in msgs:
            publication = await self._decide(msg, now_ms)
            if publication is not None:
                publications.append(publication)
        if msgs:
            with contextlib.suppress(Exception):
                self.metrics.lag.set(msgs[-1].metadata.num_pending)
        results = await self.publisher.publish_all(
            [(p.subject, p.payload, p.headers) for p in publications], timeout_s=self.settings.publish_timeout_s
        )
        tally = BatchTally()
        for publication, result in zip(publications, results, strict=True):
            await self._settle(publication, result, tally)
        tally.record(self.metrics, time.time())

    async def _decide(self, msg: Msg, now_ms: int) -> Publication | None:
        meta = msg.metadata
        headers = msg.headers or {}
        content_type = headers.get(CONTENT_TYPE)
        stored_at = meta.timestamp.timestamp() if meta.timestamp is not None else now_ms / 1000
        try:
            outcome = self.pipeline.process(msg.subject, msg.data, content_type=content_type, now_ms=now_ms)
            out_headers: dict[str, str]
            if isinstance(outcome, Accepted):
                out_headers = {MSG_ID: outcome.msg_id, SCHEMA_HEADER: f"{outcome.event_type}@{outcome.schema_version}"}
                subject, payload = outcome.subject, outcome.payload
            else:
                out_headers = self._dlq_headers(msg, outcome, now_ms, content_type)
                subject, payload = self.names.dlq(outcome.event_type), msg.data
        except Exception as error:
            return await self._crashed(msg, error, now_ms, content_type, stored_at)
        trace = TraceContext.parse(headers.get(TRACEPARENT))
        if trace is not None:
            out_headers[TRACEPARENT] = trace.child().header()
        return Publication(msg, subject, payload, out_headers, outcome, stored_at)

    def _dlq_headers(self, msg: Msg, outcome: Rejected, now_ms: int, content_type: str | None) -> dict[str, str]:
        meta = msg.metadata
        return dead_letter_headers(
            outcome.rejection,
            subject=msg.subject,
            event_id=outcome.event_id,
            source="nats",
            source_key=str(meta.sequence.stream),
            deliveries=meta.num_delivered,
            rejected_at_ms=now_ms,
            content_type=content_type,
        )

    async def _crashed(
        self, msg: Msg, error: Exception, now_ms: int, content_type: str | None, stored_at: float
    ) -> Publication | None:
        """A poison input: nak with backoff until ``max_deliver`` deliveries, then dead-letter it."""
        meta = msg.metadata
        event_type = self.pipeline.type_of_subject(msg.subject)
        metric_type = "_invalid" if event_type is None else self.pipeline._metric_type(event_type)
        self.metrics.crashes.labels(metric_type).inc()
        deliveries = meta.num_delivered
        log.error(
            "handler_crashed", subject=msg.subject, seq=meta.sequence.stream, deliveries=deliveries,
            error=f"{type(error).__name__}: {error}", exc_info=error,
        )  # fmt: skip
        if deliveries < self.settings.max_deliver:
            delay = min(self.settings.backoff_s * 2 ** (deliveries - 1), self.settings.max_backoff_s)
            with contextlib.suppress(Exception):
                await msg.nak(delay=delay)
            return None
        rejection = Rejection(
            Reason.HANDLER_CRASH, "", f"handling raised {type(error).__name__}: {error} ({deliveries} deliveries)"
        )
        outcome = Rejected(event_type or "_invalid", metric_type, rejection, None)
        headers = self._dlq_headers(msg, outcome, now_ms, content_type)
        return Publication(msg, self.names.dlq(outcome.event_type), msg.data, headers, outcome, stored_at)

    async def _settle(self, publication: Publication, result: bytes | BaseException, tally: BatchTally) -> None:
        msg, outcome = publication.msg, publication.outcome
        if isinstance(result, BaseException):
            self.metrics.publish_failures.inc()
            deliveries = msg.metadata.num_delivered
            delay = min(self.settings.backoff_s * 2 ** (deliveries - 1), self.settings.max_backoff_s)
            log.warning("publish_failed", subject=publication.subject, error=str(result) or type(result).__name__)
            with contextlib.suppress(Exception):
                await msg.nak(delay=delay)
            return
        try:
            await msg.ack()
        except Exception as error:  # the input comes back after ack_wait; its output is deduplicated then
            log.warning("ack_failed", error=str(error) or type(error).__name__)
            return
        tally.add(outcome, publication.stored_at)


class BatchTally:
    """A batch's outcomes, counted locally and added to the metrics once (label lookups cost per call)."""

    def __init__(self) -> None:
        self.accepted: Counter[str] = Counter()
        self.unknown_fields: Counter[str] = Counter()
        self.rejected: Counter[tuple[str, str]] = Counter()
        self.stored_at: dict[str, list[float]] = {}

    def add(self, outcome: Outcome, stored_at: float) -> None:
        if isinstance(outcome, Accepted):
            self.accepted[outcome.event_type] += 1
            self.unknown_fields[outcome.event_type] += outcome.unknown_fields
            self.stored_at.setdefault(outcome.event_type, []).append(stored_at)
        else:
            self.rejected[outcome.metric_type, outcome.rejection.reason.value] += 1

    def record(self, metrics: IngestMetrics, now: float) -> None:
        for event_type, count in self.accepted.items():
            metrics.accepted.labels(event_type).inc(count)
            if self.unknown_fields[event_type]:
                metrics.unknown_fields.labels(event_type).inc(self.unknown_fields[event_type])
            latency = metrics.latency.labels(event_type)
            for stored_at in self.stored_at[event_type]:
                latency.observe(max(0.0, now - stored_at))
        for (event_type, reason), count in self.rejected.items():
            metrics.rejected.labels(event_type, reason).inc(count)
