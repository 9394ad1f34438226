"""Open-loop latency and throughput of the predict path, against a bare NATS echo.

Three targets, each its own process, measured in one run on the same machine:
(a) a bare NATS echo responder, (b) rtml predict with batching off
(``max_batch_size=1``), (c) rtml predict with batching on. The model is a
30-feature MLP (30 -> 64 -> 32 -> 1); 20 features come from Redis (one online
view), 10 from the request.

Load is open-loop: request i is sent at t0 + i/rate whatever happened to earlier
ones, and its latency counts from that scheduled time, so a stall shows up in the
percentiles instead of silently slowing the sender (no coordinated omission). The
rate rises until the target saturates (achieved < 95 % of offered, over 1 % errors,
or p99 over 200 ms, i.e. a queue building up).

    .venv/bin/python bench/inference.py --quick

The last line printed is one JSON object with the headline figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import secrets
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shared.bus import connect, deprovision, provision  # noqa: E402
from shared.codec import encode  # noqa: E402
from shared.db import drop_schema, open_pool  # noqa: E402
from shared.errors import ERROR_CODE_HEADER  # noqa: E402
from shared.online import delete_namespace_keys, feature_key, open_redis, vector_to_hash  # noqa: E402
from shared.registry import FeatureSpec, ModelMetadata, ensure_tables, register_version  # noqa: E402
from shared.routing import RoutingPolicy, write_policy  # noqa: E402
from shared.settings import CommonSettings  # noqa: E402
from shared.subjects import Names  # noqa: E402

N_ONLINE, N_REQUEST = 20, 10
N_ENTITIES = 5000
SATURATION_P99_MS = 200.0  # a shared 2-core box has scheduling spikes; the sweep stops on queueing, not noise

ECHO_SERVER = """
import asyncio, sys
import nats

async def main():
    nc = await nats.connect(sys.argv[1])
    async def echo(msg):
        await msg.respond(msg.data)
    await nc.subscribe(sys.argv[2], queue="echo", cb=echo)
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def mlp_model(n_in: int, seed: int = 0) -> bytes:
    """A 30 -> 64 -> 32 -> 1 ReLU MLP with a sigmoid score, float32 [batch, n_in] in, score [batch] out."""
    rng = np.random.default_rng(seed)
    sizes = [n_in, 64, 32, 1]
    inits, nodes, last = [], [], "x"
    for layer, (a, b) in enumerate(itertools.pairwise(sizes)):
        w = (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32)
        inits += [
            numpy_helper.from_array(w, f"w{layer}"),
            numpy_helper.from_array(np.zeros(b, np.float32), f"b{layer}"),
        ]
        nodes += [helper.make_node("Gemm", [last, f"w{layer}", f"b{layer}"], [f"h{layer}"])]
        last = f"h{layer}"
        if b > 1:
            nodes.append(helper.make_node("Relu", [last], [f"r{layer}"]))
            last = f"r{layer}"
    inits.append(numpy_helper.from_array(np.array([-1], dtype=np.int64), "flat"))
    nodes += [helper.make_node("Sigmoid", [last], ["p"]), helper.make_node("Reshape", ["p", "flat"], ["score"])]
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", n_in])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch"])], initializer=inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


FEATURES = [FeatureSpec(f"o{i}", "online", default=0.0, view="card") for i in range(N_ONLINE)] + [
    FeatureSpec(f"r{i}", "request", default=0.0) for i in range(N_REQUEST)
]


@dataclass
class Point:
    target: str
    rate: float
    sent: int
    ok: int
    errors: int
    achieved: float
    p50_ms: float
    p99_ms: float
    p999_ms: float
    server_cpu_us_per_req: float = float("nan")
    degraded: int = 0

    @property
    def saturated(self) -> bool:
        return self.achieved < 0.95 * self.rate or self.errors > 0.01 * self.sent or self.p99_ms > SATURATION_P99_MS


async def open_loop(nc: Any, subject: str, payloads: list[bytes], rate: float, duration_s: float) -> Point:
    loop = asyncio.get_running_loop()
    n = max(1, int(rate * duration_s))
    latencies: list[float] = []
    errors = 0
    degraded = 0
    last_done = 0.0

    async def one(i: int, scheduled: float) -> None:
        nonlocal errors, degraded, last_done
        try:
            msg = await nc.request(subject, payloads[i % len(payloads)], timeout=2.0)
        except Exception:
            errors += 1
            return
        done = loop.time()
        if msg.headers and ERROR_CODE_HEADER in msg.headers:
            errors += 1
            return
        latencies.append(done - scheduled)
        if b"\xa8degraded\xc3" in msg.data:  # msgpack "degraded": true, without decoding every reply
            degraded += 1
        last_done = max(last_done, done)

    tasks = []
    t0 = loop.time() + 0.01
    i = 0
    while i < n:
        now = loop.time()
        due = t0 + i / rate
        if due > now:
            await asyncio.sleep(due - now)
            continue
        while i < n and t0 + i / rate <= now:
            tasks.append(asyncio.create_task(one(i, t0 + i / rate)))
            i += 1
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    lat = np.array(latencies) * 1000 if latencies else np.array([float("nan")])
    span = max(last_done - t0, 1e-9)
    return Point(
        target="", rate=rate, sent=n, ok=len(latencies), errors=errors, achieved=len(latencies) / span,
        p50_ms=float(np.percentile(lat, 50)), p99_ms=float(np.percentile(lat, 99)),
        p999_ms=float(np.percentile(lat, 99.9)), degraded=degraded,
    )  # fmt: skip


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used (Linux /proc), so load from others does not count."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def sweep(  # noqa: PLR0917
    nc: Any, target: str, subject: str, payloads: list[bytes], rates: list[float], duration_s: float, pid: int
) -> list[Point]:
    await open_loop(nc, subject, payloads, min(rates[0], 500), 0.5)  # warm the path
    points = []
    for rate in rates:
        cpu_before = cpu_seconds(pid)
        point = await open_loop(nc, subject, payloads, rate, duration_s)
        await asyncio.sleep(0.2)  # the prediction log is published just after the replies
        point.server_cpu_us_per_req = (cpu_seconds(pid) - cpu_before) / max(point.ok, 1) * 1e6
        point.target = target
        points.append(point)
        print(
            f"{target:<10} rate={rate:>6.0f}/s achieved={point.achieved:>7.0f}/s ok={point.ok:>6} "
            f"err={point.errors:>4} "
            f"p50={point.p50_ms:6.2f}ms p99={point.p99_ms:7.2f}ms p99.9={point.p999_ms:7.2f}ms "
            f"server_cpu={point.server_cpu_us_per_req:5.0f}us/req degraded={point.degraded}",
            flush=True,
        )
        if point.saturated:
            break
        await asyncio.sleep(0.3)
    return points


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_for(nc: Any, subject: str, payload: bytes, process: asyncio.subprocess.Process) -> None:
    for _ in range(600):
        if process.returncode is not None:
            raise RuntimeError(f"{subject}: the server exited with {process.returncode}")
        with contextlib.suppress(Exception):
            msg = await nc.request(subject, payload, timeout=1.0)
            if not (msg.headers and ERROR_CODE_HEADER in msg.headers):
                return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{subject} never answered")


async def main(args: argparse.Namespace) -> dict[str, Any]:
    base = CommonSettings.from_env(os.environ, service="bench", default_http_port=0)
    names = Names(f"bench_{secrets.token_hex(4)}")
    rates = [500.0, 1000.0, 2000.0, 3000.0, 4000.0, 6000.0, 8000.0] if args.quick else [
        250.0, 500.0, 1000.0, 1500.0, 2000.0, 2500.0, 3000.0, 4000.0, 5000.0, 6000.0, 8000.0, 10000.0, 12000.0
    ]  # fmt: skip
    duration_s = 1.5 if args.quick else 5.0
    env = {
        **os.environ, "RTML_NAMESPACE": names.namespace, "RTML_NATS_URL": base.nats_url,
        "RTML_REDIS_URL": base.redis_url, "RTML_DATABASE_URL": base.database_url,
        "RTML_INFERENCE_HTTP_PORT": str(free_port()), "RTML_MAX_IN_FLIGHT": "8192",
        "RTML_LOG_LEVEL": "WARNING",
    }  # fmt: skip
    rng = np.random.default_rng(0)
    payloads = [
        encode({"entity": f"card_{i % N_ENTITIES}",
                "features": {f"r{j}": float(v) for j, v in enumerate(rng.standard_normal(N_REQUEST))}})
        for i in range(2000)
    ]  # fmt: skip
    processes: list[asyncio.subprocess.Process] = []
    results: dict[str, list[Point]] = {}
    async with connect(base.nats_url, name="rtml-bench") as nc:
        js = nc.jetstream()
        await provision(js, names)
        try:
            async with open_pool(base.database_url, schema=names.schema) as pool, open_redis(base.redis_url) as redis:
                await ensure_tables(pool)
                store = await js.object_store(names.models_bucket)
                kv = await js.key_value(names.routing_bucket)
                artifact = mlp_model(N_ONLINE + N_REQUEST)
                policies = {
                    "batch": {"max_batch_size": 64, "max_queue_delay_us": 300, "adaptive": True,
                              "max_concurrent_batches": 2, "max_queue_size": 8192},
                    "nobatch": {"max_batch_size": 1, "max_queue_delay_us": 0, "max_concurrent_batches": 2,
                                "max_queue_size": 8192},
                }  # fmt: skip
                for model, policy in policies.items():
                    version = await register_version(
                        pool, store, model, artifact, ModelMetadata(features=FEATURES, batch_policy=policy)
                    )
                    await write_policy(kv, RoutingPolicy(model, stable=version.version))
                async with redis.pipeline(transaction=False) as pipe:
                    for e in range(N_ENTITIES):
                        values = {f"o{i}": float(v) for i, v in enumerate(rng.standard_normal(N_ONLINE))}
                        pipe.hset(feature_key(names, "card", f"card_{e}"), mapping=vector_to_hash(values))  # type: ignore[arg-type]
                    await pipe.execute()

            echo_subject = f"{names.namespace}.echo"
            echo = await asyncio.create_subprocess_exec(
                sys.executable, "-c", ECHO_SERVER, base.nats_url, echo_subject, stdout=asyncio.subprocess.DEVNULL
            )
            processes.append(echo)
            await wait_for(nc, echo_subject, payloads[0], echo)
            results["echo"] = await sweep(nc, "echo", echo_subject, payloads, rates, duration_s, echo.pid)
            echo.terminate()
            await echo.wait()

            server = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "services.inference", cwd=ROOT, env=env,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            processes.append(server)
            for model in ("nobatch", "batch"):
                await wait_for(nc, names.predict(model), payloads[0], server)
            results["nobatch"] = await sweep(
                nc, "nobatch", names.predict("nobatch"), payloads, rates, duration_s, server.pid
            )
            await asyncio.sleep(3.0)  # let a saturated backlog drain before the next target
            results["batch"] = await sweep(nc, "batch", names.predict("batch"), payloads, rates, duration_s, server.pid)
        finally:
            for process in processes:
                if process.returncode is None:
                    process.terminate()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(process.wait(), 15)
                    if process.returncode is None:
                        process.kill()
            await deprovision(js, names)
            async with open_redis(base.redis_url) as redis:
                await delete_namespace_keys(redis, names.redis_prefix)
            async with open_pool(base.database_url, schema=names.schema) as pool:
                await drop_schema(pool, names.schema)

    def sustainable(points: list[Point]) -> float:
        good = [p.achieved for p in points if not p.saturated]
        return max(good) if good else 0.0

    def p99_at(points: list[Point], rate: float) -> float | None:
        hit = [p.p99_ms for p in points if p.rate == rate and not p.saturated]
        return hit[0] if hit else None

    batch_p99_2ms = [p.rate for p in results["batch"] if not p.saturated and p.p99_ms < 2.0]
    echo_rps, nobatch_rps, batch_rps = (sustainable(results[t]) for t in ("echo", "nobatch", "batch"))

    def cpu_at_lowest_rate(points: list[Point]) -> float:
        return round(points[0].server_cpu_us_per_req, 1) if points else float("nan")

    return {
        "load_avg_1m_at_end": os.getloadavg()[0],
        "echo_server_cpu_us_per_req": cpu_at_lowest_rate(results["echo"]),
        "nobatch_server_cpu_us_per_req": cpu_at_lowest_rate(results["nobatch"]),
        "batch_server_cpu_us_per_req": cpu_at_lowest_rate(results["batch"]),
        "echo_sustained_rps": round(echo_rps),
        "nobatch_sustained_rps": round(nobatch_rps),
        "batch_sustained_rps": round(batch_rps),
        "batch_p99_ms_at_2000_rps": p99_at(results["batch"], 2000.0),
        "batch_max_rps_with_p99_under_2ms": max(batch_p99_2ms) if batch_p99_2ms else 0,
        "batch_vs_nobatch_x": round(batch_rps / nobatch_rps, 2) if nobatch_rps else None,
        "batch_vs_echo_pct": round(100 * batch_rps / echo_rps, 1) if echo_rps else None,
        "points": [p.__dict__ | {"saturated": p.saturated} for t in results.values() for p in t],
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short steps, fewer rates (<= 60 s)")
    started = time.perf_counter()
    summary = asyncio.run(main(parser.parse_args()))
    points = summary.pop("points")
    summary["wall_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps({"points": points}))
    print(json.dumps(summary))
