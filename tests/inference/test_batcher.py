"""The batcher's mechanism with a fake model and a clock the test moves by hand."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.inference.batcher import Batcher
from services.inference.clock import FakeClock
from services.inference.policy import BatchPolicy
from shared.errors import BadRequest, DeadlineExceeded, Overloaded, Unavailable


class FakeModel:
    """Doubles its inputs; fails a batch holding a negative number; can be held mid-batch."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate: asyncio.Event | None = None

    async def __call__(self, batch: list[int]) -> Sequence[int]:
        self.batches.append(list(batch))
        if self.gate is not None:
            await self.gate.wait()
        if any(x < 0 for x in batch):
            raise ValueError("negative input")
        return [2 * x for x in batch]


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def make(policy: BatchPolicy) -> tuple[Batcher[int, int], FakeModel, FakeClock]:
    model, clock = FakeModel(), FakeClock()
    batcher: Batcher[int, int] = Batcher(model, policy, clock=clock)
    batcher.start()
    return batcher, model, clock


async def test_full_batches_go_at_once_and_the_rest_after_the_delay() -> None:
    batcher, model, clock = make(BatchPolicy(max_batch_size=4, max_queue_delay_us=1000, max_concurrent_batches=4))
    futures = [batcher.submit(i) for i in range(10)]
    await settle()
    assert model.batches == [[0, 1, 2, 3], [4, 5, 6, 7]]
    clock.advance(0.0009)
    await settle()
    assert len(model.batches) == 2
    clock.advance(0.0002)
    await settle()
    assert model.batches[2] == [8, 9]
    assert [f.result() for f in futures] == [2 * i for i in range(10)]
    await batcher.close()


async def test_a_lone_request_waits_exactly_the_delay() -> None:
    batcher, model, clock = make(BatchPolicy(max_batch_size=8, max_queue_delay_us=500))
    future = batcher.submit(7)
    await settle()
    clock.advance(0.0004)
    await settle()
    assert model.batches == [] and not future.done()
    clock.advance(0.0001)
    await settle()
    assert model.batches == [[7]] and future.result() == 14
    await batcher.close()


async def test_preferred_size_releases_early() -> None:
    batcher, model, _ = make(BatchPolicy(max_batch_size=16, max_queue_delay_us=10_000, preferred_batch_sizes=(2, 4)))
    for i in range(3):
        batcher.submit(i)
    await settle()
    assert model.batches == []
    batcher.submit(3)
    await settle()
    assert model.batches == [[0, 1, 2, 3]]
    await batcher.close()


async def test_batching_off_runs_one_at_a_time() -> None:
    batcher, model, _ = make(BatchPolicy(max_batch_size=1, max_queue_delay_us=10_000, max_concurrent_batches=1))
    futures = [batcher.submit(i) for i in range(3)]
    await settle()
    assert model.batches == [[0], [1], [2]]
    assert [f.result() for f in futures] == [0, 2, 4]
    await batcher.close()


async def test_passed_deadlines_answer_504_without_running() -> None:
    batcher, model, clock = make(BatchPolicy(max_batch_size=8, max_queue_delay_us=5000))
    with pytest.raises(DeadlineExceeded, match="before the request was queued"):
        batcher.submit(1, deadline=clock.now())
    short = batcher.submit(2, deadline=clock.now() + 0.001)
    long = batcher.submit(3, deadline=clock.now() + 1.0)
    clock.advance(0.002)
    await settle()
    with pytest.raises(DeadlineExceeded, match="while the request was queued"):
        short.result()
    assert model.batches == [] and not long.done()
    clock.advance(0.004)
    await settle()
    assert model.batches == [[3]] and long.result() == 6
    assert batcher.stats.expired == 2
    await batcher.close()


async def test_overflow_is_shed_at_once() -> None:
    batcher, model, _ = make(BatchPolicy(max_batch_size=8, max_queue_delay_us=5000, max_queue_size=3))
    for i in range(3):
        batcher.submit(i)
    with pytest.raises(Overloaded, match="queue full"):
        batcher.submit(99)
    assert batcher.stats.shed == 1 and batcher.depth == 3
    await batcher.close()
    assert model.batches == [[0, 1, 2]]


async def test_batches_are_earliest_deadline_first() -> None:
    batcher, model, clock = make(BatchPolicy(max_batch_size=3, max_queue_delay_us=10_000, max_concurrent_batches=1))
    model.gate = asyncio.Event()
    batcher.submit(0)  # the first batch holds the single slot while the queue builds up
    clock.advance(0.02)
    await settle()
    deadlines = {10: 0.9, 11: 0.3, 12: 0.5, 13: 0.1, 14: 0.7, 15: 0.2}
    for value, seconds in deadlines.items():
        batcher.submit(value, deadline=clock.now() + seconds)
    model.gate.set()
    await settle()
    assert model.batches[1:] == [[13, 15, 11], [12, 14, 10]]
    await batcher.close()


async def test_concurrency_is_bounded() -> None:
    batcher, model, _ = make(BatchPolicy(max_batch_size=1, max_queue_delay_us=0, max_concurrent_batches=2))
    model.gate = asyncio.Event()
    futures = [batcher.submit(i) for i in range(5)]
    await settle()
    assert len(model.batches) == 2 and batcher.in_flight_batches == 2 and batcher.depth == 3
    model.gate.set()
    await settle()
    assert [f.result() for f in futures] == [0, 2, 4, 6, 8]
    await batcher.close()


async def test_a_failed_batch_fails_only_its_requests() -> None:
    batcher, model, clock = make(BatchPolicy(max_batch_size=2, max_queue_delay_us=1000, max_concurrent_batches=4))
    futures = [batcher.submit(x) for x in (1, -1, 2, 3, 4)]
    await settle()
    clock.advance(0.001)
    await settle()
    assert model.batches == [[1, -1], [2, 3], [4]]
    for failed in futures[:2]:
        with pytest.raises(ValueError, match="negative input"):
            failed.result()
    assert [f.result() for f in futures[2:]] == [4, 6, 8]
    assert batcher.stats.failed_batches == 1
    await batcher.close()


async def test_close_answers_everything_queued_then_refuses() -> None:
    batcher, _model, _ = make(BatchPolicy(max_batch_size=4, max_queue_delay_us=10_000_000))
    futures = [batcher.submit(i) for i in range(6)]
    await settle()
    await batcher.close(timeout_s=5)
    assert [f.result() for f in futures] == [2 * i for i in range(6)]
    with pytest.raises(Unavailable, match="shutting down"):
        batcher.submit(1)


async def test_close_fails_what_cannot_finish_in_time() -> None:
    batcher, model, _ = make(BatchPolicy(max_batch_size=1, max_queue_delay_us=0, max_concurrent_batches=1))
    model.gate = asyncio.Event()  # never opened: the batch hangs
    futures = [batcher.submit(i) for i in range(3)]
    await settle()
    await batcher.close(timeout_s=0.05)
    await batcher.wait_closed()
    for future in futures[1:]:
        with pytest.raises(Unavailable):
            future.result()


async def test_adaptive_wait_is_capped_by_the_batch_cost() -> None:
    clock = FakeClock()
    model = FakeModel()
    gate = asyncio.Event()

    async def slow_model(batch: list[int]) -> Sequence[int]:
        clock.advance(0.0002)  # each batch "costs" 200 us
        if batch == [1]:
            await gate.wait()  # this batch stays running while the next requests queue
        return await model(batch)

    batcher: Batcher[int, int] = Batcher(
        slow_model,
        BatchPolicy(max_batch_size=8, max_queue_delay_us=5000, adaptive=True, max_concurrent_batches=2),
        clock=clock,
    )
    batcher.start()
    batcher.submit(0)
    await settle()
    assert batcher.batch_cost_s == pytest.approx(0.0002)
    batcher.submit(1)
    await settle()  # no batch running: released at once, then held
    batcher.submit(2)
    batcher.submit(3)
    await settle()
    assert model.batches == [[0]]  # [1] is running, so 2 and 3 wait for company
    clock.advance(0.00021)  # past the batch cost, well short of the 5 ms max_queue_delay
    await settle()
    assert model.batches == [[0], [2, 3]]
    gate.set()
    await settle()
    assert model.batches == [[0], [2, 3], [1]]
    await batcher.close()


async def test_adaptive_releases_at_once_when_no_batch_runs() -> None:
    clock = FakeClock()
    model = FakeModel()
    batcher: Batcher[int, int] = Batcher(
        model, BatchPolicy(max_batch_size=8, max_queue_delay_us=5000, adaptive=True), clock=clock
    )
    batcher.start()
    first = batcher.submit(1)
    await settle()
    assert model.batches == [[1]] and first.result() == 2
    await batcher.close()


def test_policy_refuses_bad_values() -> None:
    with pytest.raises(BadRequest, match="unknown keys"):
        BatchPolicy.from_dict({"max_batch": 3})
    with pytest.raises(BadRequest, match="preferred_batch_sizes"):
        BatchPolicy.from_dict({"max_batch_size": 4, "preferred_batch_sizes": [8]})
    assert BatchPolicy.from_dict({"preferred_batch_sizes": [8, 2, 8]}).preferred_batch_sizes == (2, 8)


@settings(max_examples=40, deadline=None)
@given(
    steps=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 800)), min_size=1, max_size=30),
    max_batch=st.integers(1, 6),
    concurrency=st.integers(1, 3),
)
def test_every_request_is_answered_once_in_bounded_batches(
    steps: list[tuple[int, int]], max_batch: int, concurrency: int
) -> None:
    """Against a brute-force reference: each request either runs once (result 2x) or expires, never both."""

    async def scenario() -> None:
        policy = BatchPolicy(
            max_batch_size=max_batch, max_queue_delay_us=300, default_timeout_ms=1, max_concurrent_batches=concurrency
        )
        batcher, model, clock = make(policy)
        futures: list[tuple[int, asyncio.Future[int]]] = []
        value = 0
        for arrivals, gap_us in steps:
            for _ in range(arrivals):
                futures.append((value, batcher.submit(value)))
                value += 1
            await settle()
            clock.advance(gap_us / 1e6)
            await settle()
        clock.advance(1.0)
        await settle()
        ran = [x for batch in model.batches for x in batch]
        assert len(ran) == len(set(ran))
        assert all(1 <= len(batch) <= max_batch for batch in model.batches)
        for x, future in futures:
            assert future.done()
            if x in ran:
                assert future.result() == 2 * x
            else:
                assert isinstance(future.exception(), DeadlineExceeded)
        await batcher.close()

    asyncio.run(scenario())


async def test_drain_releases_without_waiting_out_the_delay() -> None:
    batcher, model, _ = make(BatchPolicy(max_batch_size=8, max_queue_delay_us=10_000_000))
    first = batcher.submit(1)
    await settle()
    assert model.batches == []
    batcher.drain()
    await settle()
    second = batcher.submit(2)
    await settle()
    assert model.batches == [[1], [2]] and (first.result(), second.result()) == (2, 4)
    await batcher.close()


async def test_a_request_that_would_miss_its_deadline_in_the_queue_is_shed_at_once() -> None:
    batcher, model, clock = make(BatchPolicy(max_batch_size=2, max_queue_delay_us=0, max_concurrent_batches=1))
    model.gate = asyncio.Event()
    first = batcher.submit(1, deadline=10.0)
    await settle()
    clock.advance(0.010)  # the first batch takes 10 ms: the batcher now knows what a batch costs
    model.gate.set()
    await settle()
    assert first.result() == 2 and batcher.batch_cost_s == pytest.approx(0.010)
    model.gate = asyncio.Event()
    queued = [batcher.submit(i, deadline=clock.now() + 1.0) for i in range(6)]  # 2 run, 4 wait: 3 batches ahead
    await settle()
    assert batcher.expected_wait_s() == pytest.approx(0.030)
    with pytest.raises(Overloaded, match="past this deadline"):
        batcher.submit(99, deadline=clock.now() + 0.025)
    late_enough = batcher.submit(100, deadline=clock.now() + 0.035)
    model.gate.set()
    for _ in range(4):
        clock.advance(0.010)
        await settle()
    assert [f.result() for f in queued] == [2 * i for i in range(6)] and late_enough.result() == 200
    assert batcher.stats.shed == 1
    await batcher.close()
