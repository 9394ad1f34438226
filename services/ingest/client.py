"""The client SDK: publish events to the events stream with generated ids and pipelined acks.

Usage::

    async with connect(url, name="app") as nc:
        client = EventClient(nc.jetstream(), Names("rtml"))
        await client.publish_event("transaction", "card-1", {"amount": 12.5, ...})   # waits for its ack
        await client.publish_event("transaction", "card-2", {...}, wait=False)       # pipelined
        await client.flush()                                                        # all acked, or raises
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from collections.abc import Mapping
from typing import Any

from nats.js import JetStreamContext
from nats.js.api import PubAck

from shared.codec import encode
from shared.subjects import Names, check_token
from shared.tracing import outgoing_headers


class EventClient:
    """Publishes ``{"id", "type", "entity", "ts", "data"}`` to ``<ns>.events.<type>`` with ``Nats-Msg-Id`` = id.

    At most ``max_pending`` publishes await their acks at once; beyond that a publish first waits for the
    oldest. A publish JetStream refuses raises (``wait=True``) or is raised by the next :meth:`flush`.
    """

    def __init__(self, js: JetStreamContext, names: Names, *, max_pending: int = 1024, stall_s: float = 10.0) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, got {max_pending}")
        self.js = js
        self.names = names
        self.max_pending = max_pending
        self.stall_s = stall_s
        self._pending: deque[asyncio.Future[PubAck]] = deque()

    async def publish_event(
        self,
        event_type: str,
        entity: str,
        data: Mapping[str, Any],
        ts: int | None = None,
        id: str | None = None,
        *,
        wait: bool = True,
    ) -> str:
        """Publish one event; returns its id (generated when not given). ``ts`` defaults to now, in ms."""
        check_token("event type", event_type)
        ident = id if id is not None else uuid.uuid4().hex
        body = {
            "id": ident,
            "type": event_type,
            "entity": entity,
            "ts": ts if ts is not None else int(time.time() * 1000),
            "data": dict(data),
        }
        while len(self._pending) >= self.max_pending:
            await self._settle_oldest()
        future = await self.js.publish_async(
            self.names.events(event_type), encode(body), headers=outgoing_headers({"Nats-Msg-Id": ident}),
            wait_stall=self.stall_s,
        )  # fmt: skip
        if wait:
            await future
        else:
            self._pending.append(future)
        return ident

    async def flush(self) -> None:
        """Wait for every pipelined publish's ack; raises the first failure after all have settled."""
        first: BaseException | None = None
        while self._pending:
            try:
                await self._settle_oldest()
            except Exception as error:
                first = first or error
        if first is not None:
            raise first

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def _settle_oldest(self) -> None:
        await self._pending.popleft()
