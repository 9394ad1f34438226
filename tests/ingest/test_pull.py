"""The pull pump against a real JetStream: batches of what has arrived, and recovery from lost requests."""

from __future__ import annotations

import asyncio

from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig

from services.ingest.pull import PullPump
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
