"""Locust load tests for rtml: NATS request/reply predictions and the rollout admin REST API.

Locust runs on gevent, which monkey-patches the standard library; nats-py runs on
asyncio. They meet in :class:`NatsBridge`: one asyncio loop in a real OS thread
(started with the unpatched ``_thread.start_new_thread``, its selector the unpatched
epoll one) holds one NATS connection; a greenlet hands it a coroutine with
``run_coroutine_threadsafe`` and waits on a gevent ``AsyncResult`` that the loop's
thread fills through ``hub.loop.run_callback_threadsafe``, the one thread-safe way
to wake a gevent hub. So a thousand users share one connection and no greenlet
ever blocks the hub.

This file is for Locust only (``pip install -e .[loadtest]``); no service imports
it or Locust. Scenarios (``RTML_LOADTEST_SCENARIO``), all headless:

- ``steady``: ``RTML_LOADTEST_USERS`` prediction users (default 50) at
  ``RTML_LOADTEST_USER_RPS`` requests per second each (default 4) for
  ``RTML_LOADTEST_DURATION_S`` (default 60), plus one admin user;
- ``burst``: the steady load, then 10x the users for 10 s from
  ``RTML_LOADTEST_BURST_AT_S`` (default 20), then the steady load again until the
  end, to see requests beyond capacity shed (429) quickly and throughput recover.

Other settings: ``RTML_NATS_URL``, ``RTML_NAMESPACE``, ``RTML_LOADTEST_MODEL``
(default ``fraud``), ``RTML_LOADTEST_DEADLINE_MS`` (default 200),
``RTML_ROLLOUT_URL`` (default ``http://127.0.0.1:8105``), ``RTML_ADMIN_TOKEN``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Coroutine
from typing import Any

import gevent
import gevent.lock
import msgpack
import nats
from gevent.event import AsyncResult
from gevent.monkey import get_original
from locust import HttpUser, LoadTestShape, User, constant_throughput, events, task
from locust.env import Environment

from rtml.simulate.simulator import SimConfig, Simulator, Transaction

NATS_URL = os.environ.get("RTML_NATS_URL", "nats://127.0.0.1:4222")
NAMESPACE = os.environ.get("RTML_NAMESPACE", "rtml")
MODEL = os.environ.get("RTML_LOADTEST_MODEL", "fraud")
DEADLINE_MS = int(os.environ.get("RTML_LOADTEST_DEADLINE_MS", "200"))
ROLLOUT_URL = os.environ.get("RTML_ROLLOUT_URL", "http://127.0.0.1:8105")
ADMIN_TOKEN = os.environ.get("RTML_ADMIN_TOKEN", "")
SCENARIO = os.environ.get("RTML_LOADTEST_SCENARIO", "steady")
USERS = int(os.environ.get("RTML_LOADTEST_USERS", "50"))
USER_RPS = float(os.environ.get("RTML_LOADTEST_USER_RPS", "4"))
DURATION_S = float(os.environ.get("RTML_LOADTEST_DURATION_S", "60"))
BURST_AT_S = float(os.environ.get("RTML_LOADTEST_BURST_AT_S", "20"))
BURST_S = 10.0
BURST_FACTOR = 10


class ServiceErrorReply(Exception):
    """An error reply: ``Nats-Service-Error-Code`` and its message (429 shed, 504 deadline, ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code} {message}")
        self.code = code


class NatsBridge:
    """One NATS connection on an asyncio loop in a real OS thread, callable from any greenlet."""

    def __init__(self, url: str) -> None:
        self.url = url
        # The unpatched epoll selector and thread: this loop must not run on gevent's hub.
        self.loop = asyncio.SelectorEventLoop(get_original("selectors", "DefaultSelector")())
        self._client: Any = None
        get_original("_thread", "start_new_thread")(self._run, ())

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def call(self, coroutine: Coroutine[Any, Any, Any], timeout_s: float) -> Any:
        """Run ``coroutine`` on the bridge's loop; wait for it cooperatively from this greenlet.

        Only ``call_soon_threadsafe`` (a deque append and a self-pipe write) crosses
        into the loop's thread and only ``run_callback_threadsafe`` crosses back, so no
        lock is ever shared between gevent and the loop's thread.
        """
        hub = gevent.get_hub()
        result: AsyncResult = AsyncResult()

        def start() -> None:
            task = self.loop.create_task(coroutine)
            task.add_done_callback(lambda done: hub.loop.run_callback_threadsafe(_settle, result, done))

        self.loop.call_soon_threadsafe(start)
        return result.get(timeout=timeout_s)

    async def _connect(self) -> Any:
        if self._client is None:
            self._client = await nats.connect(self.url, name="rtml-loadtest", max_reconnect_attempts=-1)
        return self._client

    def connect(self) -> None:
        self.call(self._connect(), timeout_s=10)

    async def _request(self, subject: str, payload: bytes, timeout_s: float) -> tuple[bytes, dict[str, str]]:
        client = await self._connect()
        message = await client.request(subject, payload, timeout=timeout_s)
        return message.data, dict(message.headers or {})

    def request(self, subject: str, payload: bytes, timeout_s: float) -> tuple[bytes, dict[str, str]]:
        return self.call(self._request(subject, payload, timeout_s), timeout_s + 5)  # type: ignore[no-any-return]

    def close(self) -> None:
        if self._client is not None:
            self.call(self._client.drain(), timeout_s=10)
        self.loop.call_soon_threadsafe(self.loop.stop)


def _settle(result: AsyncResult, future: Any) -> None:
    error = future.exception()
    if error is not None:
        result.set_exception(error)
    else:
        result.set(future.result())


_bridge: NatsBridge | None = None
_bridge_lock = gevent.lock.Semaphore()


def bridge() -> NatsBridge:
    """The process's one bridge, connected by the first user to need it (the others wait)."""
    global _bridge  # noqa: PLW0603 - one connection per Locust process, made on first use
    with _bridge_lock:
        if _bridge is None:
            candidate = NatsBridge(NATS_URL)
            candidate.connect()
            _bridge = candidate
        return _bridge


@events.quitting.add_listener  # type: ignore[untyped-decorator]
def _close_bridge(environment: Environment, **_: Any) -> None:
    if _bridge is not None:
        _bridge.close()


# One seeded stream of realistic transactions per Locust process; greenlets take turns at it.
TRAFFIC = (
    e
    for e in Simulator(SimConfig(seed=int(os.environ.get("RTML_LOADTEST_SEED", "7")), n_cards=5_000))
    if isinstance(e, Transaction)
)


class PredictUser(User):
    """Asks ``<ns>.predict.<model>`` for a score per simulated transaction, with a deadline."""

    wait_time = constant_throughput(USER_RPS)
    weight = 20

    def on_start(self) -> None:
        self.nats = bridge()
        self.subject = f"{NAMESPACE}.predict.{MODEL}"

    @task
    def predict(self) -> None:
        tx = next(TRAFFIC)
        body = {
            "entity": tx.card,
            "id": f"lt-{tx.id}",
            "features": {k: v for k, v in tx.event()["data"].items() if k != "currency"},
            "deadline_ms": int(time.time() * 1000) + DEADLINE_MS,
        }
        payload = msgpack.packb(body, use_bin_type=True)
        started = time.perf_counter()
        error: Exception | None = None
        length = 0
        try:
            data, headers = self.nats.request(self.subject, payload, DEADLINE_MS / 1000 + 1.0)
            length = len(data)
            code = headers.get("Nats-Service-Error-Code")
            if code:
                error = ServiceErrorReply(code, headers.get("Nats-Service-Error", ""))
        except Exception as exc:  # a timeout or no responders is a failure to report, not a crash
            error = exc
        self.environment.events.request.fire(
            request_type="NATS",
            name="predict",
            response_time=(time.perf_counter() - started) * 1000,
            response_length=length,
            exception=error,
            context={},
        )


class AdminUser(HttpUser):
    """Reads the rollout service's REST API the way an operator's dashboard would."""

    host = ROLLOUT_URL
    wait_time = constant_throughput(2)
    weight = 1
    fixed_count = 1

    def on_start(self) -> None:
        if ADMIN_TOKEN:
            self.client.headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"

    @task(3)
    def model(self) -> None:
        self.client.get(f"/models/{MODEL}", name="/models/{name}")

    @task(3)
    def routing(self) -> None:
        self.client.get(f"/models/{MODEL}/routing", name="/models/{name}/routing")

    @task(1)
    def models(self) -> None:
        self.client.get("/models")

    @task(1)
    def rollouts(self) -> None:
        self.client.get(f"/models/{MODEL}/rollouts", name="/models/{name}/rollouts")


class Scenario(LoadTestShape):
    """``steady``: constant users; ``burst``: 10x the users for 10 s in the middle."""

    def tick(self) -> tuple[int, float] | None:
        elapsed = float(self.get_run_time())  # type: ignore[no-untyped-call]
        if elapsed >= DURATION_S:
            return None
        users = USERS + 1  # plus the admin user
        if SCENARIO == "burst" and BURST_AT_S <= elapsed < BURST_AT_S + BURST_S:
            return USERS * BURST_FACTOR + 1, float(USERS * BURST_FACTOR)
        # Spawn (and after the burst, stop) users within about a second.
        return users, float(max(USERS * BURST_FACTOR, 10))


if SCENARIO not in ("steady", "burst"):
    raise SystemExit(f"RTML_LOADTEST_SCENARIO={SCENARIO!r}: expected steady or burst")
