"""Monitor throughput and memory: how many predictions/s one replica keeps up with, and its RSS over time.

A child process first loads the prediction stream of a fresh namespace with N
prediction records (20 numeric features each, one model version with a stored
reference profile); then the monitor starts in this process with its default
settings and drains the backlog through its durable consumer (decode, windows,
detector bank, windowed tests every 1,000, Postgres join table, acks). The drain
rate is the sustained rate it keeps up with; resident memory is sampled every
tenth of the run; "flat" means no growth over the second half, once the rings
(summary log, label-join maps: ``ring_entries`` each) have filled. Everything
under the namespace is removed afterwards.

    .venv/bin/python bench/monitor.py            # 1,000,000 predictions
    .venv/bin/python bench/monitor.py --quick    # 150,000 predictions, rings of 30,000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import secrets
import time
from dataclasses import replace

import numpy as np

from services.monitor.profiles import build_reference_profile, ensure_profile_table, store_profile
from services.monitor.service import MonitorService
from services.monitor.settings import MonitorSettings
from shared.bus import connect, deprovision, provision
from shared.codec import encode
from shared.db import drop_schema, open_pool
from shared.settings import CommonSettings
from shared.subjects import Names

MODEL = "bench"
N_FEATURES = 20
FEATURES = [f"f{i}" for i in range(N_FEATURES)]


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


async def _publish(common: CommonSettings, n: int) -> None:
    names = Names(common.namespace)
    rng = np.random.default_rng(1)
    async with connect(common.nats_url, name="bench-monitor-publisher") as nc:
        now = int(time.time() * 1000)
        sent = 0
        while sent < n:
            chunk = min(10_000, n - sent)
            x = rng.normal(size=(chunk, N_FEATURES)).tolist()
            scores = rng.uniform(size=chunk).tolist()
            for i in range(chunk):
                record = {
                    "id": f"r{sent + i}", "model": MODEL, "version": 1, "variant": "stable", "entity": f"e{i % 1000}",
                    "ts": now, "score": scores[i], "degraded": False, "latency_us": 1500,
                    "features": dict(zip(FEATURES, x[i], strict=True)), "error_code": None,
                }  # fmt: skip
                await nc.publish(names.predictions(MODEL), encode(record))
            await nc.flush()
            sent += chunk


def publish(common: CommonSettings, n: int) -> None:
    asyncio.run(_publish(common, n))


async def run(n: int, *, ring: int) -> dict[str, float]:
    common = replace(CommonSettings.from_env(os.environ, service="bench", default_http_port=0),
                     namespace=f"b_{secrets.token_hex(4)}")  # fmt: skip
    names = Names(common.namespace)
    async with (
        connect(common.nats_url, name="bench-monitor") as nc,
        open_pool(common.database_url, schema=names.schema) as pool,
    ):
        await provision(nc.jetstream(), names)
        try:
            rng = np.random.default_rng(0)
            await ensure_profile_table(pool)
            await store_profile(pool, build_reference_profile(
                model=MODEL, version=1, features={f: rng.normal(size=20_000) for f in FEATURES},
                scores=rng.uniform(size=20_000),
            ))  # fmt: skip
            started = time.perf_counter()
            child = multiprocessing.get_context("spawn").Process(target=publish, args=(common, n))
            child.start()
            await asyncio.get_running_loop().run_in_executor(None, child.join)
            publish_s = time.perf_counter() - started
            rss_before = rss_mib()
            service = MonitorService(MonitorSettings(common=common, log_size=ring, label_cache=ring))
            samples: dict[int, float] = {}
            began = time.perf_counter()
            await service.start()
            try:
                step = n // 10
                next_sample = step
                progress, progressed_at = 0, time.perf_counter()
                while service.consumed < n:
                    await asyncio.sleep(0.2)
                    if service.consumed > progress:
                        progress, progressed_at = service.consumed, time.perf_counter()
                    elif time.perf_counter() - progressed_at > 30:
                        raise RuntimeError(f"monitor stalled at {progress} of {n} predictions")
                    if service.consumed >= next_sample:
                        samples[next_sample] = rss_mib()
                        next_sample += step
                drain_s = time.perf_counter() - began
                samples[n] = rss_mib()
            finally:
                await service.stop()
        finally:
            await deprovision(nc.jetstream(), names)
            await drop_schema(pool, names.schema)
    print(f"published {n} predictions in {publish_s:.1f} s; monitor drained them in {drain_s:.1f} s")
    print("resident memory (MiB) by predictions consumed: "
          + ", ".join(f"{k:,}: {v:.0f}" for k, v in sorted(samples.items())))  # fmt: skip
    half = samples[n // 2]
    return {
        "predictions": float(n),
        "features_per_prediction": float(N_FEATURES),
        "ring_entries": float(ring),
        "throughput_predictions_per_s": round(n / drain_s, 1),
        "rss_mib_before_start": round(rss_before, 1),
        "rss_mib_at_half": round(half, 1),
        "rss_mib_at_end": round(samples[n], 1),
        "rss_growth_mib_second_half": round(samples[n] - half, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="150,000 predictions instead of 1,000,000")
    parser.add_argument("--predictions", type=int, default=1_000_000)
    args = parser.parse_args()
    # quick: smaller rings so they fill within the run and the second half shows whether memory stays flat
    result = asyncio.run(run(150_000, ring=30_000) if args.quick else run(args.predictions, ring=200_000))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
