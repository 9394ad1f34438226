"""SIGKILL midway through a stream, restart: the final online state is that of an uninterrupted run."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from nats.aio.client import Client

from services.features.catalog import load_views
from shared.online import open_redis, read_online_features
from shared.settings import CommonSettings
from shared.subjects import Names
from tests.features.helpers import BASE_TS, expected_online, publish_events, txn, wait_drained
from tests.features.reference import close

ROOT = Path(__file__).resolve().parents[2]
VIEWS = load_views(None)
TOTAL = 4000


def _spawn(settings: CommonSettings) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "RTML_NAMESPACE": settings.namespace,
        "RTML_NATS_URL": settings.nats_url,
        "RTML_REDIS_URL": settings.redis_url,
        "RTML_DATABASE_URL": settings.database_url,
        "RTML_FEATURES_HTTP_PORT": "0",
        "RTML_FEATURES_BATCH": "25",
        "RTML_FEATURES_ACK_WAIT_S": "1",
        "RTML_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen([sys.executable, "-m", "services.features"], cwd=ROOT, env=env)


def _stream() -> list[dict[str, Any]]:
    """Distinct times, shuffled within 20 s blocks (inside the 1 min lateness): arrival order cannot matter."""
    rng = random.Random(3)
    slots = list(range(TOTAL))
    for start in range(0, TOTAL, 200):
        block = slots[start : start + 200]
        rng.shuffle(block)
        slots[start : start + 200] = block
    return [
        txn(
            i,
            f"c{rng.randint(0, 30)}",
            BASE_TS + 100 * slots[i],
            amount=round(rng.uniform(1, 300), 2),
            merchant=f"m{rng.randint(0, 9)}",
            country=rng.choice(["FR", "DE"]),
        )
        for i in range(TOTAL)
    ]


async def test_sigkill_midway_then_restart(settings: CommonSettings, names: Names, nc: Client) -> None:
    js = nc.jetstream()
    events = _stream()
    for start in range(0, TOTAL, 250):
        chunk = events[start : start + 250]
        await asyncio.gather(*(publish_events(js, names, [event]) for event in chunk))
    first = _spawn(settings)
    try:
        while True:  # wait until it is working through the stream, then kill it without warning
            await asyncio.sleep(0.02)
            try:
                info = await js.consumer_info(names.stream("norm"), names.consumer("features", "norm"))
            except Exception:  # the consumer is not created yet
                continue
            if info.ack_floor.stream_seq >= TOTAL // 10:
                break
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
    info = await js.consumer_info(names.stream("norm"), names.consumer("features", "norm"))
    assert info.ack_floor.stream_seq < TOTAL, "the stream was done before the kill: nothing was tested"
    second = _spawn(settings)
    try:
        await wait_drained(js, names, timeout_s=60)
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=20) == 0
    async with open_redis(settings.redis_url) as client:
        for view in VIEWS.values():
            want = expected_online(view, events)
            got = await read_online_features(client, names, [(view.name, entity) for entity in want])
            for (entity, vector), stored in zip(want.items(), got, strict=True):
                for name, value in vector.items():
                    assert close(stored.values[name], value, 300), (view.name, entity, name, stored.values[name], value)
