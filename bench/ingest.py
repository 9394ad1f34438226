"""Ingest: sustained throughput of one replica, and intake latency at half that rate.

One ``python -m services.ingest`` process (one replica) runs against the local NATS in a fresh namespace.

- Throughput: a backlog of ``--events`` valid transactions is published to the events stream first, then
  the replica is started; the rate is the backlog over the time from its first normalized output to its
  last (every input acked only after its output's JetStream ack), so it leaves out process start-up.
- Latency: events are published at half the measured rate for ``--seconds``; per event, the intake
  latency is the time its normalized form was stored in the norm stream minus the time the event was
  stored in the events stream, both stamped by the NATS server (so no client-side queueing is counted):
  delivery to the replica, validation, normalization, the output's publish. p50/p99 over all of them.

The load generator and the subscriber share the machine's cores with the replica and the NATS server.

    .venv/bin/python bench/ingest.py            # 100,000-event backlog, 20 s at half load
    .venv/bin/python bench/ingest.py --quick    # 30,000-event backlog, 8 s at half load
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import PubAck

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from services.ingest.streams import read_stream  # noqa: E402
from shared.bus import connect, deprovision, provision  # noqa: E402
from shared.codec import encode  # noqa: E402
from shared.subjects import Names  # noqa: E402

NATS_URL = os.environ.get("RTML_NATS_URL", "nats://127.0.0.1:4222")


def event(i: int, now_ms: int) -> tuple[str, bytes]:
    ident = f"e{i}"
    body = {
        "id": ident, "type": "transaction", "entity": f"card-{i % 5000}", "ts": now_ms,
        "data": {
            "card": f"card-{i % 5000}", "merchant": f"m-{i % 700}", "amount": f"{(i % 9000) / 100:.2f}",
            "currency": "eur", "mcc": "5411", "country": "FR", "channel": "Online", "device": f"dev-{i % 3000}",
        },
    }  # fmt: skip
    return ident, encode(body)


def start_replica(namespace: str, fetchers: int, batch: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ, "RTML_NAMESPACE": namespace, "RTML_NATS_URL": NATS_URL, "RTML_INGEST_HTTP_PORT": "0",
        "RTML_LOG_LEVEL": "WARNING", "RTML_INGEST_FETCHERS": str(fetchers), "RTML_INGEST_BATCH": str(batch),
    }  # fmt: skip
    return subprocess.Popen([sys.executable, "-m", "services.ingest"], cwd=ROOT, env=env)


async def publish_backlog(js: JetStreamContext, names: Names, count: int) -> None:
    now_ms = int(time.time() * 1000)
    window: list[asyncio.Future[PubAck]] = []
    for i in range(count):
        ident, data = event(i, now_ms)
        window.append(await js.publish_async(names.events("transaction"), data, headers={"Nats-Msg-Id": ident}))
        if len(window) >= 2000:
            await asyncio.gather(*window)
            window.clear()
    await asyncio.gather(*window)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure_throughput(js: JetStreamContext, names: Names, count: int, pid: int) -> tuple[float, float]:
    """Events per second from the first output to the last, and the replica's CPU microseconds per event."""
    stream = names.stream("norm")
    started: float | None = None
    while True:
        done = (await js.stream_info(stream)).state.messages
        now = time.perf_counter()
        if done and started is None:
            started, first, cpu_start = now, done, cpu_seconds(pid)
        if done >= count:
            assert started is not None
            return (count - first) / max(now - started, 1e-9), (cpu_seconds(pid) - cpu_start) / (count - first) * 1e6
        await asyncio.sleep(0.02)


async def measure_latency(nc: Client, names: Names, *, rate: float, seconds: float, offset: int) -> list[float]:
    """Publish at ``rate`` for ``seconds``; per event, output stored time minus input stored time (server clock).

    The generator paces itself in 1 ms ticks: each tick publishes the events due by then as plain NATS
    publishes (the events stream stores them; no reply inbox, so no ack to handle per event) and
    flushes once. That keeps the generator's own CPU low on the two cores it shares with the replica
    and the server; that every event was stored is checked from the stream afterwards.
    """
    js = nc.jetstream()
    total = int(rate * seconds)
    subject = names.events("transaction")
    first_seq = (await js.stream_info(names.stream("events"))).state.last_seq + 1
    norm_before = (await js.stream_info(names.stream("norm"))).state.last_seq
    begin = time.perf_counter()
    now_ms = int(time.time() * 1000)
    sent = 0
    while sent < total:
        due = min(total, int((time.perf_counter() - begin) * rate) + 1)
        for k in range(sent, due):
            ident, data = event(offset + k, now_ms + k // 1000)
            await nc.publish(subject, data, headers={"Nats-Msg-Id": ident})
        sent = due
        await nc.flush()
        await asyncio.sleep(0.001)
    achieved = total / (time.perf_counter() - begin)
    print(f"published {total} at {achieved:,.0f}/s (target {rate:,.0f}/s)", file=sys.stderr)
    deadline = time.perf_counter() + 60
    while (await js.stream_info(names.stream("norm"))).state.last_seq < norm_before + total:
        if time.perf_counter() > deadline:
            raise RuntimeError("events never came out normalized")
        await asyncio.sleep(0.05)
    stored = (await js.stream_info(names.stream("events"))).state.last_seq - first_seq + 1
    if stored != total:
        raise RuntimeError(f"{total} events published, {stored} stored")
    inputs = await read_stream(js, names.stream("events"), start_seq=first_seq)
    outputs = await read_stream(js, names.stream("norm"), start_seq=norm_before + 1)
    stored_in = {m.headers["Nats-Msg-Id"]: m.time_us for m in inputs}
    latencies = []
    for m in outputs:
        start, end = stored_in.get(m.headers["Nats-Msg-Id"]), m.time_us
        if start is not None and end is not None:
            latencies.append((end - start) / 1e6)
    return latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a run of at most 60 s")
    parser.add_argument("--events", type=int, help="backlog size for the throughput run")
    parser.add_argument("--seconds", type=float, help="duration of the latency run")
    parser.add_argument("--rate", type=float, help="latency run rate (default: half the measured throughput)")
    parser.add_argument("--fetchers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    count = args.events or (30_000 if args.quick else 100_000)
    seconds = args.seconds or (8.0 if args.quick else 20.0)
    names = Names(f"bench_{secrets.token_hex(4)}")
    async with connect(NATS_URL, name="bench-ingest") as nc:
        js = nc.jetstream()
        await provision(js, names)
        replica: subprocess.Popen[bytes] | None = None
        try:
            t0 = time.perf_counter()
            await publish_backlog(js, names, count)
            publish_rate = count / (time.perf_counter() - t0)
            print(f"published backlog of {count} at {publish_rate:,.0f}/s", file=sys.stderr)
            replica = start_replica(names.namespace, args.fetchers, args.batch)
            throughput, cpu_us = await measure_throughput(js, names, count, replica.pid)
            print(f"throughput {throughput:,.0f} events/s, replica CPU {cpu_us:.0f} us/event", file=sys.stderr)
            rate = args.rate or throughput / 2
            latencies = await measure_latency(nc, names, rate=rate, seconds=seconds, offset=count)
            p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
            print(f"latency at {rate:,.0f}/s: p50 {p50 * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms", file=sys.stderr)
        finally:
            if replica is not None:
                replica.send_signal(signal.SIGTERM)
                replica.wait(timeout=30)
            await deprovision(js, names)
    print(
        json.dumps(
            {
                "throughput_events_per_s": round(throughput),
                "replica_cpu_us_per_event": round(cpu_us, 1),
                "latency_rate_events_per_s": round(rate),
                "latency_events": len(latencies),
                "latency_p50_ms": round(p50 * 1e3, 3),
                "latency_p99_ms": round(p99 * 1e3, 3),
                "latency_mean_ms": round(statistics.fmean(latencies) * 1e3, 3),
                "backlog_events": count,
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
