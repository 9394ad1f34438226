"""The NATS side of every service: connection, provisioning, request helpers.

Provisioning is idempotent: each stream, KV bucket and object store named in the
architecture contract is created when missing and updated when its configuration
changed, all under the namespace, so running it twice or from two services at once
is harmless.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any

import nats
import structlog
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import (
    DiscardPolicy,
    KeyValueConfig,
    ObjectStoreConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError, NotFoundError

from shared.codec import decode, encode
from shared.errors import raise_for_reply
from shared.subjects import Names
from shared.tracing import outgoing_headers

log = structlog.get_logger(__name__)

STREAM_NAME_IN_USE = 10058
DAY_S = 86_400.0


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """One durable flow of the contract: its stream name suffix, subjects and limits."""

    flow: str
    max_age_s: float
    duplicate_window_s: float = 120.0
    max_msg_bytes: int = 1 << 20

    def config(self, names: Names, *, replicas: int = 1) -> StreamConfig:
        subject = f"{names.namespace}.{self.flow}.>"
        return StreamConfig(
            name=names.stream(self.flow),
            subjects=[subject],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            discard=DiscardPolicy.OLD,
            max_age=self.max_age_s,
            duplicate_window=self.duplicate_window_s,
            max_msg_size=self.max_msg_bytes,
            num_replicas=replicas,
        )


STREAMS: tuple[StreamSpec, ...] = (
    StreamSpec("events", max_age_s=7 * DAY_S),
    StreamSpec("norm", max_age_s=7 * DAY_S),
    StreamSpec("dlq", max_age_s=30 * DAY_S),
    StreamSpec("predictions", max_age_s=2 * DAY_S),
    StreamSpec("labels", max_age_s=30 * DAY_S),
    StreamSpec("alerts", max_age_s=30 * DAY_S),
)
ROUTING_HISTORY = 16


@asynccontextmanager
async def connect(url: str, *, name: str, startup_timeout_s: float = 30.0) -> AsyncIterator[Client]:
    """A NATS connection that reconnects forever; drained on exit.

    nats-py keeps retrying even the first connection when reconnecting is allowed,
    so a service started alongside its server waits for it; ``startup_timeout_s``
    bounds that wait, after which :class:`ConnectionError` names the URL.
    """

    async def on_error(error: Exception) -> None:
        log.warning("nats_error", error=str(error))

    async def on_disconnected() -> None:
        log.warning("nats_disconnected")

    async def on_reconnected() -> None:
        log.info("nats_reconnected", server=str(client.connected_url.netloc if client.connected_url else ""))

    client = Client()
    try:
        await asyncio.wait_for(
            client.connect(
                url,
                name=name,
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=1,
                connect_timeout=2,
                error_cb=on_error,
                disconnected_cb=on_disconnected,
                reconnected_cb=on_reconnected,
                drain_timeout=30,
            ),
            timeout=startup_timeout_s,
        )
    except (OSError, nats.errors.NoServersError, TimeoutError) as error:
        await client.close()
        raise ConnectionError(f"cannot reach NATS at {url} within {startup_timeout_s:g}s: {error!r}") from error
    try:
        yield client
    finally:
        if not client.is_closed:
            try:
                await client.drain()
            except (nats.errors.ConnectionClosedError, nats.errors.FlushTimeoutError, TimeoutError):
                await client.close()


async def ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    """Create the stream, or update it in place when its configuration changed."""
    try:
        await js.add_stream(config)
    except BadRequestError as error:
        if error.err_code != STREAM_NAME_IN_USE:
            raise
        await js.update_stream(config)


async def provision(js: JetStreamContext, names: Names, *, replicas: int = 1) -> None:
    """Create or update every stream, KV bucket and object store of the namespace.

    ``replicas`` is the JetStream replication factor (3 on a three-node cluster, 1 on one server).
    """
    for spec in STREAMS:
        await ensure_stream(js, spec.config(names, replicas=replicas))
    try:
        await js.create_key_value(
            KeyValueConfig(bucket=names.routing_bucket, history=ROUTING_HISTORY, replicas=replicas)
        )
    except BadRequestError as error:
        if error.err_code != STREAM_NAME_IN_USE:
            raise
        stream = f"KV_{names.routing_bucket}"
        info = await js.stream_info(stream)
        info.config.max_msgs_per_subject = ROUTING_HISTORY
        info.config.num_replicas = replicas
        await js.update_stream(info.config)
    try:
        await js.create_object_store(names.models_bucket, config=ObjectStoreConfig(replicas=replicas))
    except BadRequestError as error:
        if error.err_code != STREAM_NAME_IN_USE:
            raise
        info = await js.stream_info(f"OBJ_{names.models_bucket}")
        info.config.num_replicas = replicas
        await js.update_stream(info.config)


async def deprovision(js: JetStreamContext, names: Names) -> None:
    """Remove every stream and bucket of the namespace (tests and ``rtml infra reset``)."""
    for spec in STREAMS:
        with suppress(NotFoundError):
            await js.delete_stream(names.stream(spec.flow))
    for delete, bucket in ((js.delete_key_value, names.routing_bucket), (js.delete_object_store, names.models_bucket)):
        with suppress(NotFoundError):
            await delete(bucket)


async def request(client: Client, subject: str, payload: dict[str, Any], *, timeout_s: float = 2.0) -> dict[str, Any]:
    """msgpack request/reply carrying the trace; raises the typed :class:`ServiceError` on an error reply."""
    reply = await client.request(subject, encode(payload), timeout=timeout_s, headers=outgoing_headers())
    raise_for_reply(reply.headers)
    return decode(reply.data)
