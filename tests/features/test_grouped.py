"""Group commit of offline rows: who is written with whom, and who hears of a failure."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from services.features.grouped import GroupedWrites, Row


class Recorder:
    """A write that records each call's rows, failing while ``failing`` is set."""

    def __init__(self) -> None:
        self.calls: list[list[Row]] = []
        self.failing = False

    async def __call__(self, rows: list[Row]) -> None:
        await asyncio.sleep(0.001)
        if self.failing:
            raise ConnectionError("postgres away")
        self.calls.append(rows)


def rows(*ids: Any) -> list[Row]:
    return [(i,) for i in ids]


async def test_writes_queued_within_the_linger_go_together() -> None:
    write = Recorder()
    grouped = GroupedWrites(write, linger_s=0.05, max_rows=1000)
    await asyncio.gather(grouped.write(rows(1, 2)), grouped.write(rows(3)), grouped.write(rows(4, 5)))
    assert write.calls == [rows(1, 2, 3, 4, 5)]


async def test_a_full_queue_is_written_without_waiting_out_the_linger() -> None:
    write = Recorder()
    grouped = GroupedWrites(write, linger_s=30, max_rows=3)
    await asyncio.wait_for(asyncio.gather(grouped.write(rows(1, 2)), grouped.write(rows(3))), timeout=5)
    assert write.calls == [rows(1, 2, 3)]


async def test_rows_queued_during_a_write_go_in_the_next_one() -> None:
    write = Recorder()
    grouped = GroupedWrites(write, linger_s=0, max_rows=1000)
    first = asyncio.create_task(grouped.write(rows(1)))
    await asyncio.sleep(0.0005)  # the first write is under way
    await asyncio.gather(first, grouped.write(rows(2)), grouped.write(rows(3)))
    assert write.calls == [rows(1), rows(2, 3)]


async def test_every_caller_of_a_failed_write_hears_of_it_and_can_write_again() -> None:
    write = Recorder()
    write.failing = True
    grouped = GroupedWrites(write, linger_s=0.01, max_rows=1000)
    results = await asyncio.gather(grouped.write(rows(1)), grouped.write(rows(2)), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    assert write.calls == []  # nothing is kept back from a failed write
    write.failing = False
    await grouped.write(rows(1))
    assert write.calls == [rows(1)]


async def test_a_caller_that_stops_waiting_does_not_stop_the_others() -> None:
    write = Recorder()
    grouped = GroupedWrites(write, linger_s=0.02, max_rows=1000)
    leaving = asyncio.create_task(grouped.write(rows(1)))
    staying = asyncio.create_task(grouped.write(rows(2)))
    await asyncio.sleep(0.005)
    leaving.cancel()
    await staying
    with pytest.raises(asyncio.CancelledError):
        await leaving
    assert write.calls == [rows(1, 2)]
