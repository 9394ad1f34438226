"""Conservation across a crash: the service is SIGKILLed midway and restarted; the outcome is the same.

The service runs as a real process (``python -m services.ingest``). Inputs it had fetched but not acked
when killed come back after the consumer's ack wait; the outputs' msg ids make their republishing harmless.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import msgpack
import structlog
from nats.aio.client import Client

from shared.settings import CommonSettings
from shared.subjects import Names
from tests.conftest import PROJECT_ROOT
from tests.ingest.accounting import check_conservation, publish_cases, read_ledger, stream_count, wait_for_outcomes
from tests.ingest.cases import malformed_cases, valid_cases

log = structlog.get_logger(__name__)


def start_service(settings: CommonSettings) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "RTML_NAMESPACE": settings.namespace,
        "RTML_NATS_URL": settings.nats_url,
        "RTML_INGEST_HTTP_PORT": "0",
        "RTML_INGEST_ACK_WAIT_S": "2",
        "RTML_INGEST_BATCH": "128",
        "RTML_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "services.ingest"], cwd=PROJECT_ROOT, env=env, stderr=subprocess.DEVNULL
    )


async def outputs(nc: Client, names: Names) -> int:
    js = nc.jetstream()
    return sum([await stream_count(js, names.stream(flow)) for flow in ("norm", "labels", "dlq")])


async def test_conservation_across_sigkill(settings: CommonSettings, names: Names, nc: Client) -> None:
    now_ms = int(time.time() * 1000)
    cases = valid_cases("k", 6000, now_ms)
    for round_ in range(20):
        cases += malformed_cases(f"k{round_}", now_ms)
    js = nc.jetstream()
    by_seq = await publish_cases(js, names, cases)

    first = start_service(settings)
    try:
        for _ in range(600):  # until it has made progress (bounded: a hang guard)
            if await outputs(nc, names) >= 500 or first.poll() is not None:
                break
            await asyncio.sleep(0.05)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    at_kill = await outputs(nc, names)
    log.info("ingest_killed", outputs_at_kill=at_kill, inputs=len(cases))

    second = start_service(settings)
    try:
        await wait_for_outcomes(js, names, len(cases), bound_s=90)
        await asyncio.sleep(2.5)  # past the ack wait: a redelivered input would have been republished by now
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=30) == 0

    event_ids = {c.name: msgpack.unpackb(c.data)["id"] for c in cases if c.reason is None}
    check_conservation(await read_ledger(js, names), by_seq, event_ids)
