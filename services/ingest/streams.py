"""Reading a stream's stored messages back, in sequence order, without disturbing any durable consumer.

An ephemeral pull consumer with no acks walks the stream from a start sequence; it is removed afterwards.
Used by ``rtml dlq`` and by tests that account for every message.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import nats.errors
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy


@dataclass(frozen=True, slots=True)
class StoredMessage:
    seq: int
    subject: str
    data: bytes
    headers: dict[str, str]
    time_ms: int | None
    time_us: int | None = None  # the same stream timestamp, to the microsecond


async def read_stream(
    js: JetStreamContext,
    stream: str,
    *,
    subject: str | None = None,
    start_seq: int = 1,
    limit: int | None = None,
    batch: int = 1000,
) -> list[StoredMessage]:
    """Messages of ``stream`` (only ``subject`` if given; wildcards allowed) from ``start_seq``, at most ``limit``."""
    config = ConsumerConfig(
        ack_policy=AckPolicy.NONE,
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
        opt_start_seq=max(1, start_seq),
        inactive_threshold=30.0,
        mem_storage=True,
    )
    filter_subject = subject or ">"
    sub = await js.pull_subscribe(filter_subject, stream=stream, config=config)
    out: list[StoredMessage] = []
    try:
        remaining = (await sub.consumer_info()).num_pending or 0
        if limit is not None:
            remaining = min(remaining, limit)
        while remaining > 0:
            try:
                msgs = await sub.fetch(min(batch, remaining), timeout=2.0)
            except (nats.errors.TimeoutError, TimeoutError):
                break
            for msg in msgs:
                meta = msg.metadata
                stamp = meta.timestamp.timestamp() if meta.timestamp is not None else None
                out.append(
                    StoredMessage(
                        seq=meta.sequence.stream,
                        subject=msg.subject,
                        data=msg.data,
                        headers=dict(msg.headers or {}),
                        time_ms=int(stamp * 1000) if stamp is not None else None,
                        time_us=round(stamp * 1e6) if stamp is not None else None,
                    )
                )
            remaining -= len(msgs)
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
        with contextlib.suppress(Exception):
            info = await sub.consumer_info()
            await js.delete_consumer(stream, info.name)
    return out
