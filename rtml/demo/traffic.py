"""Live traffic: the simulator's stream published in compressed time, each transaction scored.

A card's transactions go one after another, as at a till: each is published to
``<ns>.events.transaction`` (``Nats-Msg-Id`` = its id) once the card's previous one
is answered; once ingest and features have folded it into the card's online
features (the Redis hash of ``watch_view`` is as of its event time or later, in its
``t`` field; a fixed ``predict_delay_s`` without Redis) it is scored with a request to
``<ns>.predict.<model>``. What the model sees then is exactly what the
point-in-time training export computes for it. The request's ``id`` is the
transaction's, so the chargeback label the simulator sends later joins it in the
monitor. Labels go to ``<ns>.events.label``. Every reply, and every error, lands
in :class:`~rtml.demo.stats.LiveStats` and the :class:`Ledger`.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

import structlog
from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import PubAck
from redis import asyncio as aioredis
from redis.exceptions import RedisError

from rtml.demo.stats import LiveStats, Reply
from rtml.simulate.publisher import Pacer
from rtml.simulate.simulator import Emission, LabelEvent, Transaction
from shared.bus import request
from shared.codec import encode
from shared.errors import ServiceError
from shared.online import AS_OF_FIELD, feature_key
from shared.subjects import Names

log = structlog.get_logger(__name__)

NO_REPLY = 408  # the request timed out: no reply at all (never counted as an answer)
NO_RESPONDERS = 503


@dataclass
class Ledger:
    """What went out: every event JetStream acknowledged, and how each predict request ended."""

    accepted: list[str] = field(default_factory=list)
    duplicates: int = 0
    predicted: dict[str, int | None] = field(default_factory=dict)  # txn id -> version, or None on error
    errors: dict[str, int] = field(default_factory=dict)  # txn id -> error code


class Traffic:
    """Publish ``emissions`` paced at ``speedup`` and score each transaction, until stopped."""

    def __init__(
        self,
        nc: Client,
        names: Names,
        emissions: Iterator[Emission],
        stats: LiveStats,
        *,
        model: str,
        speedup: float,
        predict_delay_s: float = 0.5,
        timeout_s: float = 2.0,
        max_pending: int = 256,
        max_in_flight: int = 256,
        redis: aioredis.Redis | None = None,
        watch_view: str = "card_velocity",
        fold_timeout_s: float = 3.0,
    ) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.names = names
        self.emissions = emissions
        self.stats = stats
        self.model = model
        self.speedup = speedup
        self.predict_delay_s = predict_delay_s
        self.timeout_s = timeout_s
        self.max_pending = max_pending
        self.ledger = Ledger()
        self.redis = redis
        self.watch_view = watch_view
        self.fold_timeout_s = fold_timeout_s
        self.unfolded = 0  # transactions scored before the online store showed them (timeout)
        self._redis_slots = asyncio.Semaphore(16)
        self.last_ts: int | None = None
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_of_card: dict[str, asyncio.Task[None]] = {}

    async def run(self, stop: asyncio.Event) -> None:
        """Publish until ``stop`` is set, then wait for every outstanding acknowledgement and reply."""
        pacer = Pacer(speedup=self.speedup)
        pending: deque[tuple[str, asyncio.Future[PubAck]]] = deque()
        subjects = {"transaction": self.names.events("transaction"), "label": self.names.events("label")}

        async def settle(keep: int) -> None:
            while len(pending) > keep:
                event_id, future = pending.popleft()
                ack = await future
                if ack.duplicate:
                    self.ledger.duplicates += 1
                else:
                    self.ledger.accepted.append(event_id)

        try:
            for item in self.emissions:
                if stop.is_set():
                    break
                wait = pacer.due(item.ts) - time.monotonic()
                if wait > 0:
                    await settle(0)
                    try:
                        await asyncio.wait_for(stop.wait(), timeout=wait)
                        break
                    except TimeoutError:
                        pass
                self.stats.published(time.monotonic())
                self.last_ts = item.ts
                if isinstance(item, Transaction):
                    await self._in_flight.acquire()
                    task = asyncio.create_task(self._authorize(item, self._last_of_card.get(item.card)))
                    self._last_of_card[item.card] = task
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                    continue
                if not isinstance(item, LabelEvent):  # pragma: no cover - the Emission union has two members
                    raise TypeError(type(item).__name__)
                event = item.event()
                future = await self.js.publish_async(
                    subjects["label"], encode(event), headers={"Nats-Msg-Id": event["id"]}, wait_stall=30.0
                )
                pending.append((event["id"], future))
                await settle(self.max_pending)
            await settle(0)
        finally:
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _authorize(self, txn: Transaction, previous: asyncio.Task[None] | None) -> None:
        """Publish ``txn`` once the card's previous transaction is scored, wait until it is folded in, score it.

        A card's purchases go one after another, as at a till: the next one is sent only after the previous
        one's answer, so a score never sees a later transaction of its card.
        """
        try:
            if previous is not None:
                await asyncio.wait({previous})
            event = txn.event()
            try:
                ack = await self.js.publish(
                    self.names.events("transaction"), encode(event), headers={"Nats-Msg-Id": event["id"]}, timeout=5.0
                )
            except Exception as error:  # an unaccepted event is simply not in the ledger
                log.warning("publish_failed", event_id=event["id"], error=repr(error))
                return
            if ack.duplicate:
                self.ledger.duplicates += 1
            else:
                self.ledger.accepted.append(event["id"])
            await self._predict(txn)
        finally:
            self._in_flight.release()

    async def _predict(self, txn: Transaction) -> None:
        await self._folded(txn)
        started = time.monotonic()
        payload = {"entity": txn.card, "id": txn.id}
        try:
            reply = await request(self.nc, self.names.predict(self.model), payload, timeout_s=self.timeout_s)
        except ServiceError as error:
            self._record(txn, started, None, "error", error.code)
        except NoRespondersError:
            self._record(txn, started, None, "error", NO_RESPONDERS)
        except (NatsTimeout, TimeoutError):
            self._record(txn, started, None, "error", NO_REPLY)
        else:
            self._record(txn, started, int(reply["version"]), str(reply.get("variant", "stable")), None)

    async def _folded(self, txn: Transaction) -> None:
        """Until the card's online features include ``txn`` (or a later event), at most ``fold_timeout_s``."""
        if self.redis is None:
            await asyncio.sleep(self.predict_delay_s)
            return
        key = feature_key(self.names, self.watch_view, txn.card)
        deadline = time.monotonic() + self.fold_timeout_s
        while time.monotonic() < deadline:
            try:
                async with self._redis_slots:
                    raw = await self.redis.hget(key, AS_OF_FIELD)
            except (RedisError, OSError) as error:  # the online store is not ours to judge here: score anyway
                log.warning("fold_check_failed", error=repr(error))
                await asyncio.sleep(self.predict_delay_s)
                return
            if raw is not None and int(raw) >= txn.ts:
                return
            await asyncio.sleep(0.05)
        self.unfolded += 1

    def _record(self, txn: Transaction, started: float, version: int | None, variant: str, code: int | None) -> None:
        now = time.monotonic()
        self.stats.record(Reply(now, (now - started) * 1000.0, version, variant, code))
        self.ledger.predicted[txn.id] = version
        if code is not None:
            self.ledger.errors[txn.id] = code
