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
from dataclasses import dataclass

import nats.errors
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, PubAck
from nats.js.errors import NotFoundError

from services.ingest.dlq import CONTENT_TYPE, dead_letter_headers
from services.ingest.metrics import IngestMetrics
from services.ingest.pipeline import Accepted, Outcome, Pipeline, Rejected
from services.ingest.pull import PullPump
from services.ingest.reasons import Reason, Rejection
from services.ingest.settings import IngestSettings
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
        try:
            await asyncio.gather(*(self._loop(pump, stop) for _ in range(self.settings.fetchers)))
        finally:
            await pump.stop()

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
        results = await self._publish_all(publications)
        for publication, result in zip(publications, results, strict=True):
            await self._settle(publication, result)

    async def _publish_all(self, publications: list[Publication]) -> list[PubAck | BaseException]:
        """Publish every output at once; each result is its JetStream ack or why there is none.

        ``publish_async`` pipelines the publishes on one reply subscription (``js.publish`` would pay a
        request and a timer per message); outputs unanswered after ``publish_timeout_s`` count as failed.
        """
        futures: list[asyncio.Future[PubAck]] = []
        for publication in publications:
            try:
                future = await self.js.publish_async(
                    publication.subject, publication.payload, headers=publication.headers,
                    wait_stall=self.settings.publish_timeout_s,
                )  # fmt: skip
            except Exception as error:
                future = asyncio.get_running_loop().create_future()
                future.set_exception(error)
            futures.append(future)
        if futures:
            _, late = await asyncio.wait(futures, timeout=self.settings.publish_timeout_s)
            for future in late:
                future.cancel()
        results: list[PubAck | BaseException] = []
        for future in futures:
            if future.cancelled():
                results.append(TimeoutError("no JetStream ack in time"))
            else:
                failure = future.exception()
                results.append(failure if failure is not None else future.result())
        return results

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

    async def _settle(self, publication: Publication, result: PubAck | BaseException) -> None:
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
        if isinstance(outcome, Accepted):
            self.metrics.accepted.labels(outcome.event_type).inc()
            if outcome.unknown_fields:
                self.metrics.unknown_fields.labels(outcome.event_type).inc(outcome.unknown_fields)
            self.metrics.latency.labels(outcome.event_type).observe(max(0.0, time.time() - publication.stored_at))
        else:
            self.metrics.rejected.labels(outcome.metric_type, outcome.rejection.reason.value).inc()
