"""Rollout: time from a gate breach to the routing change, and what the bad candidate served meanwhile.

Runs the rollout service in-process on the real NATS and Postgres (a fresh
namespace, removed afterwards) with a recorded monitor over NATS. Each trial starts a
canary at 25 % that keeps passing, then at a random moment within the check cycle
the monitor's figures for the candidate turn slow (the breach). A KV watcher sees
the routing change the way an inference replica does, and a synthetic client
routes requests by the live policy (sticky per entity, as inference does) to count
what the candidate answered between breach and rollback.

The breach here is instantaneous in the monitor's figures; with the real monitor,
add the time its window takes to show a breach.

    python bench/rollout.py --quick
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from services.rollout.service import RolloutService
from services.rollout.settings import RolloutSettings
from shared.bus import connect, deprovision, provision
from shared.codec import decode
from shared.db import drop_schema, open_pool
from shared.routing import RoutingPolicy
from shared.settings import CommonSettings
from shared.subjects import Names
from tests.onnx_factory import logistic_model
from tests.rollout.recorded import RecordedMonitor

MODEL = "bench"
TOKEN = secrets.token_hex(8)
AUTH = {"Authorization": f"Bearer {TOKEN}"}
REQUESTS_PER_S = 2000


class Traffic:
    """Routes synthetic requests by the live policy and stamps each with the time and the version it hit."""

    def __init__(self) -> None:
        self.policy: RoutingPolicy | None = None
        self.policy_changes: list[tuple[float, RoutingPolicy]] = []
        self.served: list[tuple[float, bool]] = []  # (time, answered by the candidate)
        self._n = 0

    async def watch(self, kv: Any) -> None:
        watcher = await kv.watch(MODEL)
        while True:
            entry = await watcher.updates(timeout=3600)
            if entry is None or entry.value is None:
                continue
            policy = RoutingPolicy.from_dict(decode(entry.value))
            self.policy = policy
            self.policy_changes.append((time.perf_counter(), policy))

    async def send(self) -> None:
        tick = 0.005
        per_tick = int(REQUESTS_PER_S * tick)
        while True:
            policy = self.policy
            now = time.perf_counter()
            if policy is not None:
                for _ in range(per_tick):
                    self._n += 1
                    route = policy.route(f"entity-{self._n % 50_000}")
                    self.served.append((now, route.variant.value == "candidate"))
            await asyncio.sleep(tick)


async def trial(
    http: aiohttp.ClientSession, monitor: RecordedMonitor, traffic: Traffic, version: int, interval_s: float
) -> dict[str, float]:
    monitor.scenarios[version] = "good"
    body = {"candidate": version, "strategy": "canary", "steps": [25, 100], "dwell_s": 3600,
            "gates": {"fail_checks": 2}}  # fmt: skip
    async with http.post(f"/models/{MODEL}/rollouts", json=body, headers=AUTH) as r:
        assert r.status == 201, await r.text()
        rollout = await r.json()
    await asyncio.sleep(2 * interval_s + random.uniform(0, interval_s))  # a few passing checks, breach mid-cycle
    breach = time.perf_counter()
    monitor.scenarios[version] = "slow"
    while True:
        changes = [t for t, p in traffic.policy_changes if t > breach and p.mode.value == "stable"]
        if changes:
            routed = changes[0]
            break
        await asyncio.sleep(0.002)
    while True:  # the routing change is recorded just after it is written
        async with http.get(f"/models/{MODEL}/rollouts/{rollout['id']}") as r:
            done = await r.json()
        if done["policy_published"]:
            break
        await asyncio.sleep(0.01)
    assert done["state"] == "rolled_back", done["state"]
    window = [candidate for t, candidate in traffic.served if breach <= t < routed]
    return {
        "breach_to_routing_s": routed - breach,
        "bad_requests": float(sum(window)),
        "requests": float(len(window)),
        "recorded_first_fail_to_routing_ms": float(done["timeline"][-1]["detail"]["breach_to_routing_ms"]),
    }


async def main(quick: bool) -> dict[str, Any]:
    base = CommonSettings.from_env(os.environ, service="bench", default_http_port=0)
    common = replace(base, namespace=f"bench_{secrets.token_hex(4)}", admin_token=TOKEN, shutdown_grace_s=2.0)
    names = Names(common.namespace)
    interval_s = 1.0
    trials = 4 if quick else 12
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    async with connect(common.nats_url, name="bench-rollout") as nc:
        await provision(nc.jetstream(), names)
        monitor = RecordedMonitor(common)
        service = RolloutService(RolloutSettings(common=common, check_interval_s=interval_s))
        try:
            await monitor.start()
            await service.start()
            traffic = Traffic()
            kv = await nc.jetstream().key_value(names.routing_bucket)
            tasks = [asyncio.create_task(traffic.watch(kv)), asyncio.create_task(traffic.send())]
            async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{service.http_port}") as http:
                weights = np.random.default_rng(0).normal(size=3)
                for version in range(1, trials + 2):
                    form = aiohttp.FormData()
                    form.add_field("artifact", logistic_model(weights + version, 0.0), filename="m.onnx")
                    form.add_field("metadata", json.dumps({"features": [{"name": n} for n in ("a", "b", "c")]}))
                    async with http.post(f"/models/{MODEL}/versions", data=form, headers=AUTH) as r:
                        assert r.status == 201, await r.text()
                async with http.post(f"/models/{MODEL}/stable", json={"version": 1}, headers=AUTH) as r:
                    assert r.status == 200
                results = [await trial(http, monitor, traffic, v, interval_s) for v in range(2, trials + 2)]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            await service.stop()
            await monitor.stop()
            await deprovision(nc.jetstream(), names)
            async with open_pool(common.database_url, schema=names.schema) as pool:
                await drop_schema(pool, names.schema)
    latencies = [r["breach_to_routing_s"] for r in results]
    bad = sum(r["bad_requests"] for r in results)
    total = sum(r["requests"] for r in results)
    return {
        "trials": len(results),
        "check_interval_s": interval_s,
        "breach_to_routing_p50_s": round(statistics.median(latencies), 3),
        "breach_to_routing_max_s": round(max(latencies), 3),
        "breach_to_routing_max_check_intervals": round(max(latencies) / interval_s, 2),
        "first_fail_to_routing_max_ms": max(r["recorded_first_fail_to_routing_ms"] for r in results),
        "canary_weight_pct": 25.0,
        "bad_candidate_requests_per_trial_mean": round(bad / len(results), 1),
        "bad_candidate_share_of_requests_between_breach_and_rollback_pct": round(100 * bad / total, 2),
        "offered_load_requests_per_s": REQUESTS_PER_S,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4 trials (<= 60 s)")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        print(json.dumps(asyncio.run(main(args.quick))))
