"""A pull consumer that keeps a request outstanding and hands out whatever has arrived, as a batch.

nats-py's ``fetch(n)`` returns only when ``n`` messages have arrived or the request expired, so at a low
rate every batch waits for its deadline. Here a pull request stays outstanding (as nats.go's ``Consume``
keeps one): messages stream into a local queue as the server has them, and :meth:`next_batch` returns as
soon as one is there, with up to ``batch`` of those already queued. One request at a time, for
``credit`` messages, each with a reply subject of its own: the next is sent once it is used up or has
ended (status 408 expired, 409), and the end of an earlier request is told apart by its subject, so the
credit counted is always the live request's exactly (with requests topped up while others were live,
each end subtracting its unused credit from one shared count, it could only be approximate). A request that
ends while a caller waits for its first message is replaced at once, so a message arriving during the
rest of that wait is delivered. The server sends a heartbeat (status 100) every ``heartbeat_s`` while
the request has nothing to deliver; a request that goes silent for three heartbeats is written off and
asked afresh (also while a caller waits): one lost with a connection (a reconnect), or one that
nats-server 2.9.10 drops without a word while messages wait (seen here in most runs of 10 s at 2,500
messages/s with 8,000 of credit; delivery stopped until the write-off, then three expiry periods, 3 s;
now about 0.4 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

STATUS = "Status"
IDLE_HEARTBEAT = "100"

# How long after a pull request's expiry messages handed back are redelivered (PullPump.hand_back).
HAND_BACK_MARGIN_S = 0.5


def stream_position(msg: Msg) -> tuple[int, int]:
    """A JetStream message's stream sequence and the time the stream stored it (ms since the epoch),
    read off its reply subject: ``$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer
    seq>.<ns>.<pending>``, or with domain and account hash after ``ACK`` (and a random token at the
    end). ``msg.metadata`` parses the same into a dataclass with a datetime, several times the cost
    for a reader that wants these two numbers of every message.

    >>> stream_position(Msg(None, reply="$JS.ACK.s.c.1.42.7.1700000000123456789.0"))
    (42, 1700000000123)
    """
    tokens = (msg.reply or "").split(".")
    if tokens[:2] == ["$JS", "ACK"]:
        if len(tokens) == 9:
            return int(tokens[5]), int(tokens[7]) // 1_000_000
        if len(tokens) >= 11:
            return int(tokens[7]), int(tokens[9]) // 1_000_000
    raise nats.errors.NotJSMessageError


class PullPump:
    def __init__(
        self,
        nc: Client,
        stream: str,
        consumer: str,
        *,
        batch: int,
        credit: int | None = None,
        expires_s: float = 1.0,
        heartbeat_s: float = 0.1,
    ) -> None:
        self.nc = nc
        self.batch = batch
        self.credit = max(credit or 2 * batch, batch + 1)
        self.expires_ns = int(expires_s * 1e9)
        # the server says a request is alive every heartbeat while it has nothing to deliver; three
        # heartbeats without a word mean the request is gone (at most half the expiry: the server's rule)
        self.heartbeat_ns = int(min(heartbeat_s, expires_s / 2) * 1e9)
        self.silence_s = 3 * self.heartbeat_ns / 1e9
        self._heard_at = time.monotonic()
        self._next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._inbox = nc.new_inbox()  # each request replies to <inbox>.<its number>
        self._requests = 0
        self._reply = ""  # the outstanding request's reply subject
        self._queue: asyncio.Queue[Msg] = asyncio.Queue()
        self._outstanding = 0
        self._waiting = 0  # next_batch calls waiting for a first message
        self._sub: Subscription | None = None

    async def start(self) -> None:
        self._sub = await self.nc.subscribe(f"{self._inbox}.*", cb=self._on_message)

    async def stop(self) -> None:
        """Unsubscribe, and hand back what arrived but was not taken (:meth:`hand_back`)."""
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None
        held = []
        while not self._queue.empty():
            held.append(self._queue.get_nowait())
        await self.hand_back(held)

    async def hand_back(self, msgs: list[Msg]) -> None:
        """Have ``msgs`` redelivered (nak) once this pump's pull request has surely ended: redelivered at
        once, the server may hand them straight back to that request even after its subscriber has gone
        (nats-server 2.9.10 did, here), where nobody reads them until the ack wait (30 s) runs out."""
        delay_s = self.expires_ns / 1e9 + HAND_BACK_MARGIN_S
        for msg in msgs:
            with contextlib.suppress(nats.errors.Error):
                await msg.nak(delay=delay_s)

    async def _on_message(self, msg: Msg) -> None:
        self._heard_at = time.monotonic()
        status = msg.headers.get(STATUS) if msg.headers else None
        if not status:
            self._outstanding -= 1
            self._queue.put_nowait(msg)
        elif status == IDLE_HEARTBEAT:
            return
        elif msg.subject == self._reply:
            self._outstanding = 0  # 408 request expired, 409 consumer changes or limits: the request is over
        else:
            return  # the end of a request already written off
        if not self._outstanding and self._waiting:
            # someone is waiting: ask again now, or what arrives before their wait ends is not delivered
            with contextlib.suppress(nats.errors.Error):
                await self._request()

    async def _request(self) -> None:
        if self._outstanding and time.monotonic() - self._heard_at > self.silence_s:
            self._outstanding = 0  # no message, heartbeat or end from the request we know of: it was lost
        if self._outstanding > 0:
            return
        body = json.dumps(
            {"batch": self.credit, "expires": self.expires_ns, "idle_heartbeat": self.heartbeat_ns}
        ).encode()
        self._outstanding = self.credit  # before the publish yields: a concurrent caller sends nothing
        self._heard_at = time.monotonic()  # the silence clock starts with the request
        self._requests += 1
        self._reply = f"{self._inbox}.{self._requests}"
        try:
            await self.nc.publish(self._next_subject, body, reply=self._reply)
        except nats.errors.Error:
            self._outstanding = 0
            raise

    async def next_batch(self, timeout_s: float, *, limit: int | None = None) -> list[Msg]:
        """Up to ``limit`` (default ``batch``) messages: waits at most ``timeout_s`` for the first,
        none for the rest."""
        await self._request()
        try:
            msgs = [self._queue.get_nowait()]
        except asyncio.QueueEmpty:
            first = await self._wait_first(timeout_s)
            if first is None:
                return []
            msgs = [first]
        most = self.batch if limit is None else limit
        while len(msgs) < most:
            try:
                msgs.append(self._queue.get_nowait())
            except asyncio.QueueEmpty:
                break
        return msgs

    async def _wait_first(self, timeout_s: float) -> Msg | None:
        """The first message to arrive within ``timeout_s``; the request is looked at every heartbeat
        meanwhile, so a lost one is replaced while the caller waits."""
        deadline = time.monotonic() + timeout_s
        self._waiting += 1
        try:
            while (left := deadline - time.monotonic()) > 0:
                try:
                    return await asyncio.wait_for(self._queue.get(), timeout=min(left, self.heartbeat_ns / 1e9))
                except TimeoutError:
                    await self._request()
            return None
        finally:
            self._waiting -= 1
