"""The batch consumer on the real NATS: online stores go on while offline writes lag, within bounds."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from prometheus_client import CollectorRegistry, Counter

from services.features.consumer import BatchConsumer, ConsumerSpec
from shared.subjects import Names

BATCH = 10
BURST = 4
TOTAL = 25


class Payloads:
    """A batch of the messages' payloads, in stream order."""

    def __init__(self) -> None:
        self.data: list[bytes] = []

    async def add(self, msgs: list[Msg]) -> None:
        self.data += [msg.data for msg in msgs]

    async def seal(self) -> list[bytes]:
        return self.data


async def _until(check: Callable[[], Awaitable[bool]], timeout_s: float = 10.0) -> None:
    for _ in range(int(timeout_s / 0.01)):
        if await check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"not within {timeout_s} s")


def _spec(
    names: Names, purpose: str, *, batch_size: int = BATCH, max_ack_pending: int | None = None, **settings: Any
) -> ConsumerSpec:
    """A durable of its own on a subject of its own in the norm stream, with the tests' timings (room
    for four batches unacked unless ``max_ack_pending`` says otherwise)."""
    token = secrets.token_hex(3)
    return ConsumerSpec(
        stream=names.stream("norm"), durable=f"{purpose}_{token}", subject=f"{names.namespace}.norm.{purpose}{token}",
        batch_size=batch_size, fetch_timeout_s=0.2, ack_wait_s=30, retry_max_s=0.2,
        max_ack_pending=max_ack_pending or 4 * batch_size, **settings,
    )  # fmt: skip


async def _stop(consumer: BatchConsumer, running: asyncio.Task[None], stop: asyncio.Event) -> None:
    """End the consumer's run, stop its pulling and delete its durable."""
    stop.set()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(running, timeout=5)
    await consumer.close()
    await consumer.js.delete_consumer(consumer.spec.stream, consumer.spec.durable)


async def test_small_batches_finish_beside_the_online_store_up_to_a_batch_of_messages(nc: Client, names: Names) -> None:
    js = nc.jetstream()
    spec = _spec(names, "bounded", max_ack_pending=3 * BATCH)
    subject = spec.subject
    online: list[bytes] = []
    offline: list[bytes] = []
    offline_open = asyncio.Event()

    async def store_online(batch: list[bytes]) -> None:
        online.extend(batch)

    async def store_offline(batch: list[bytes]) -> None:
        await offline_open.wait()  # Postgres slow: rows wait to be written together
        offline.extend(batch)

    failures = Counter("failures", "store failures", registry=CollectorRegistry())
    consumer = BatchConsumer(nc, spec, Payloads, store_online, failures, store_unordered=store_offline)
    await consumer.ensure()
    stop = asyncio.Event()
    running = asyncio.create_task(consumer.run(stop))

    try:
        # small bursts, each stored online at once as a small batch; with the offline writes held
        # back, the batches stored online wait to finish (unacked) until they would hold more than
        # a batch of messages between them, and then the online store waits too
        for first in range(0, TOTAL, BURST):
            for i in range(first, min(first + BURST, TOTAL)):
                await js.publish(subject, str(i).encode())
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        assert BATCH < len(online) <= 2 * BATCH < TOTAL  # past one finishing batch, within the bound
        assert offline == []
        info = await js.consumer_info(spec.stream, spec.durable)
        assert info.ack_floor.consumer_seq == 0  # nothing acked before its offline write

        offline_open.set()

        async def all_acked() -> bool:
            info = await js.consumer_info(spec.stream, spec.durable)
            return bool(info.num_ack_pending == 0 and info.num_pending == 0 and info.ack_floor.consumer_seq >= TOTAL)

        await _until(all_acked)
        assert online == [str(i).encode() for i in range(TOTAL)]  # in stream order
        assert sorted(offline, key=int) == online
    finally:
        offline_open.set()
        await _stop(consumer, running, stop)


async def test_two_stores_go_on_at_once_and_a_failed_one_goes_again_before_the_one_behind(
    nc: Client, names: Names
) -> None:
    js = nc.jetstream()
    size = 5
    spec = _spec(names, "inflight", batch_size=size, stores_in_flight=2)
    subject = spec.subject
    stored: list[bytes] = []
    running = most_running = 0
    failures_left = {b"0": 2, b"5": 1}  # the batch holding message 0 fails twice, message 5's once

    async def store_online(batch: list[bytes]) -> None:
        nonlocal running, most_running
        running += 1
        most_running = max(most_running, running)
        try:
            for first, left in failures_left.items():
                if first in batch and left:
                    failures_left[first] -= 1
                    # message 0's batch fails slowly (0.5 s, then 0.5 s more after a 0.05 s backoff),
                    # so message 5's batch, failing fast, would go again before it if retries ran freely
                    await asyncio.sleep(0.5 if first == b"0" else 0.02)
                    raise RuntimeError(f"store of the batch holding {first!r} failed")
            stored.extend(batch)
        finally:
            running -= 1

    failures = Counter("failures", "store failures", registry=CollectorRegistry())
    consumer = BatchConsumer(nc, spec, Payloads, store_online, failures)
    await consumer.ensure()
    for i in range(size):
        await js.publish(subject, str(i).encode())
    stop = asyncio.Event()
    running_task = asyncio.create_task(consumer.run(stop))
    try:
        await asyncio.sleep(0.1)  # the first batch's store is under way (failing slowly, for 0.5 s)
        for i in range(size, 2 * size):
            await js.publish(subject, str(i).encode())

        async def all_acked() -> bool:
            info = await js.consumer_info(spec.stream, spec.durable)
            return bool(info.num_ack_pending == 0 and info.num_pending == 0 and info.ack_floor.consumer_seq >= 2 * size)

        await _until(all_acked)
        assert most_running == 2  # the second batch's store ran beside the first's
        assert stored == [str(i).encode() for i in range(2 * size)]  # retries kept stream order
        assert failures_left == {b"0": 0, b"5": 0}
    finally:
        await _stop(consumer, running_task, stop)


async def test_a_batch_lingers_after_its_first_message_for_those_that_follow(nc: Client, names: Names) -> None:
    js = nc.jetstream()
    sizes: dict[float, list[int]] = {}
    for linger_s in (0.0, 0.4):
        spec = _spec(names, "linger", stores_in_flight=2, linger_s=linger_s)
        subject = spec.subject
        seen = sizes[linger_s] = []

        async def store_online(batch: list[bytes], seen: list[int] = seen) -> None:
            seen.append(len(batch))

        async def all_stored(seen: list[int] = seen) -> bool:
            return sum(seen) == 3

        failures = Counter("failures", "store failures", registry=CollectorRegistry())
        consumer = BatchConsumer(nc, spec, Payloads, store_online, failures)
        await consumer.ensure()
        stop = asyncio.Event()
        running = asyncio.create_task(consumer.run(stop))
        try:
            for i in range(3):  # three messages 0.1 s apart, with room for a store all along
                await js.publish(subject, str(i).encode())
                await asyncio.sleep(0.1)
            await _until(all_stored)
        finally:
            await _stop(consumer, running, stop)
    assert sizes[0.0] == [1, 1, 1]  # each goes as it arrives
    assert sizes[0.4] == [3]  # the first waits 0.4 s for company: the other two join it


async def test_a_batch_gathered_when_the_run_is_cancelled_comes_back_before_the_ack_wait(
    nc: Client, names: Names
) -> None:
    js = nc.jetstream()
    spec = _spec(names, "handback", linger_s=30)
    subject = spec.subject
    stored: list[bytes] = []

    async def store_online(batch: list[bytes]) -> None:
        stored.extend(batch)

    async def delivered() -> bool:
        info = await js.consumer_info(spec.stream, spec.durable)
        return bool(info.num_ack_pending == 1)

    async def all_stored() -> bool:
        return stored == [b"0"]

    failures = Counter("failures", "store failures", registry=CollectorRegistry())
    first = BatchConsumer(nc, spec, Payloads, store_online, failures)
    await first.ensure()
    running = asyncio.create_task(first.run(asyncio.Event()))
    await js.publish(subject, b"0")
    await _until(delivered)
    await asyncio.sleep(0.3)  # taken by the consumer, and lingering (30 s) for company
    running.cancel()  # as a service's stop cancels work still running after its grace period
    await asyncio.gather(running, return_exceptions=True)
    await first.close()
    assert stored == []

    # a replica taking over gets the message within seconds (once the first one's pull request has
    # expired), not after the 30 s ack wait
    second = BatchConsumer(nc, replace(spec, linger_s=0), Payloads, store_online, failures)
    await second.ensure()
    stop = asyncio.Event()
    try:
        running = asyncio.create_task(second.run(stop))
        await _until(all_stored, timeout_s=5)
    finally:
        await _stop(second, running, stop)
