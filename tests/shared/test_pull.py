"""The pull pump against a real JetStream: batches of what has arrived, and recovery from lost requests."""

from __future__ import annotations

import asyncio

import nats.errors
import pytest
from hypothesis import given
from hypothesis import strategies as st
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig

from shared.pull import PullPump, stream_position
from shared.subjects import Names


async def make_pump(nc: Client, names: Names, durable: str, **kwargs: float) -> PullPump:
    config = ConsumerConfig(durable_name=durable, ack_policy=AckPolicy.EXPLICIT, filter_subject=names.events(durable))
    await nc.jetstream().add_consumer(names.stream("events"), config=config)
    pump = PullPump(nc, names.stream("events"), durable, batch=100, **kwargs)  # type: ignore[arg-type]
    await pump.start()
    return pump


async def test_a_batch_is_what_has_arrived(nc: Client, names: Names) -> None:
    pump = await make_pump(nc, names, "arrived")
    try:
        for i in range(3):
            await nc.jetstream().publish(names.events("arrived"), b"%d" % i)
        # a pump that waited for a full batch of 100 would hang here until the 30 s wait: the guard fails it first
        got: list[bytes] = []
        while len(got) < 3:
            got += [m.data for m in await asyncio.wait_for(pump.next_batch(30.0), timeout=10)]
        assert got == [b"0", b"1", b"2"]
        assert await pump.next_batch(0.2) == []
    finally:
        await pump.stop()


async def test_credit_lost_with_a_connection_is_written_off(nc: Client, names: Names) -> None:
    pump = await make_pump(nc, names, "lost", expires_s=0.3)
    try:
        pump._outstanding = pump.credit  # as if our requests had vanished with a dropped connection
        await nc.jetstream().publish(names.events("lost"), b"x")
        got: list[bytes] = []
        for _ in range(100):  # bounded: 100 waits of 0.1 s
            got += [m.data for m in await pump.next_batch(0.1)]
            if got:
                break
        assert got == [b"x"]
    finally:
        await pump.stop()


async def test_a_message_arriving_after_the_request_expired_still_ends_the_wait(nc: Client, names: Names) -> None:
    pump = await make_pump(nc, names, "expired", expires_s=0.2)
    try:

        async def publish_later() -> None:
            await asyncio.sleep(0.6)  # the first request expired at 0.2 s
            await nc.jetstream().publish(names.events("expired"), b"late")

        publisher = asyncio.create_task(publish_later())
        started = asyncio.get_running_loop().time()
        got = await pump.next_batch(3.0)
        waited = asyncio.get_running_loop().time() - started
        await publisher
        assert [m.data for m in got] == [b"late"]
        assert waited < 2.0, f"delivered only after {waited:.2f} s"
    finally:
        await pump.stop()


def _metadata_position(msg: Msg) -> tuple[int, int]:
    meta = msg.metadata  # nats-py's parse
    return meta.sequence.stream, int(meta.timestamp.timestamp() * 1000)


@st.composite
def ack_replies(draw: st.DrawFn) -> tuple[str, int, int]:
    """Reply subjects of JetStream messages, without and with domain and account hash (and a random
    token), with the stream sequence and the stored time (ns) they carry."""
    name = st.text("abcXYZ_-09", min_size=1, max_size=8)
    count = st.integers(0, 2**53)
    stream, consumer = draw(name), draw(name)
    delivered, sseq, cseq, pending = (draw(count) for _ in range(4))
    ns = draw(st.integers(0, 2**62))
    tail = f"{stream}.{consumer}.{delivered}.{sseq}.{cseq}.{ns}.{pending}"
    domain = draw(st.one_of(st.none(), name))
    if domain is None:
        return f"$JS.ACK.{tail}", sseq, ns
    return f"$JS.ACK.{domain}.ACCHASH.{tail}" + (".r4nd" if draw(st.booleans()) else ""), sseq, ns


@given(drawn=ack_replies())
def test_stream_position_reads_the_reply(drawn: tuple[str, int, int]) -> None:
    reply, sseq, ns = drawn
    msg = Msg(None, reply=reply)  # type: ignore[arg-type]
    assert stream_position(msg) == (sseq, ns // 1_000_000)  # the time floored to the ms, exactly
    # nats-py's parse agrees on the sequence; its time goes through a float and a datetime rounded to
    # the microsecond, so it may be a millisecond off
    seq, ms = _metadata_position(msg)
    assert seq == sseq and abs(ms - ns // 1_000_000) <= 1


@pytest.mark.parametrize("reply", ["", "inbox.abc", "$JS.ACK.too.short"])
def test_a_reply_that_is_not_jetstream_is_refused(reply: str) -> None:
    with pytest.raises(nats.errors.NotJSMessageError):
        stream_position(Msg(None, reply=reply))  # type: ignore[arg-type]


async def test_stream_position_of_a_delivered_message(nc: Client, names: Names) -> None:
    pump = await make_pump(nc, names, "position")
    try:
        ack = await nc.jetstream().publish(names.events("position"), b"x")
        (msg,) = await asyncio.wait_for(pump.next_batch(5.0), timeout=10)
        assert stream_position(msg) == _metadata_position(msg)
        assert stream_position(msg)[0] == ack.seq
    finally:
        await pump.stop()
