"""The service runtime every rtml service is built on.

A service is an object with explicit :meth:`Service.start` and :meth:`Service.stop`.
Resources are entered into one ``AsyncExitStack`` so they unwind in reverse order,
each only if it was entered. Request/reply endpoints are registered through
``nats.micro`` (so ``$SRV.PING``, ``$SRV.INFO`` and ``$SRV.STATS`` answer), and
``/healthz``, ``/readyz`` and ``/metrics`` are served over aiohttp.

nats-py awaits a subscription callback one message at a time, so an endpoint
callback that awaited its own answer would serialize the endpoint (and no batch
could ever form). The callback here only takes a slot (bounding requests in
flight), spawns the answering task and returns.

Shutdown order: stop taking work (drain endpoint subscriptions, which still
delivers what the server already sent; signal workers to stop), wait up to the
grace period for in-flight requests and workers, cancel what is left, then close
resources in reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, ClassVar, NoReturn

import nats.micro
import structlog
from aiohttp import web
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.micro.request import Request as MicroRequest
from nats.micro.service import Service as MicroService
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from shared import __version__
from shared.bus import connect, provision
from shared.codec import decode, encode
from shared.errors import ServiceError
from shared.logging import configure_logging
from shared.metrics import ServiceMetrics
from shared.settings import CommonSettings
from shared.subjects import Names
from shared.tracing import TRACEPARENT, TraceContext, current_trace, from_headers

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Request:
    """One request/reply message as a handler sees it."""

    subject: str
    data: bytes
    headers: Mapping[str, str]
    trace: TraceContext
    received_at: float = field(default_factory=time.perf_counter)

    def payload(self) -> dict[str, Any]:
        """The body as a msgpack map; a 400 ``ServiceError`` when it is not one."""
        return decode(self.data)


Handler = Callable[[Request], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A request/reply endpoint: its handler's return value is the msgpack reply."""

    name: str
    subject: str
    handler: Handler
    queue_group: str | None = None


Worker = Callable[[asyncio.Event], Awaitable[None]]


class Service:
    """Base of every rtml service. Subclasses set ``name`` and override the hooks."""

    name: ClassVar[str]
    version: ClassVar[str] = __version__

    def __init__(self, common: CommonSettings) -> None:
        self.common = common
        self.names = Names(common.namespace)
        self.metrics = ServiceMetrics(self.name)
        self.nc: Client
        self.js: JetStreamContext
        self.http_port = 0
        self._stack = AsyncExitStack()
        self._micro: MicroService | None = None
        self._runner: web.AppRunner | None = None
        self._slots = asyncio.Semaphore(common.max_in_flight)
        self._answering: set[asyncio.Task[None]] = set()
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._stopping = asyncio.Event()
        self._ready = False
        self._started = False
        self.stopped = asyncio.Event()

    # Hooks for subclasses -------------------------------------------------
    async def setup(self, stack: AsyncExitStack) -> None:
        """Enter this service's resources (pools, sessions) into ``stack``."""

    def endpoints(self) -> Sequence[Endpoint]:
        """The request/reply endpoints this service serves."""
        return ()

    def workers(self) -> Mapping[str, Worker]:
        """Long-running loops (stream consumers); each gets the stop event and must return once it is set."""
        return {}

    def routes(self) -> Sequence[web.AbstractRouteDef]:
        """Extra HTTP routes beside /healthz, /readyz and /metrics."""
        return ()

    async def check_ready(self) -> str | None:
        """``None`` when ready to take work, else the reason it is not."""
        return None

    # Lifecycle ------------------------------------------------------------
    async def start(self) -> None:
        """Connect, provision, set up resources, register endpoints, serve HTTP. Idempotent."""
        if self._started:
            return
        self._started = True
        try:
            self.nc = await self._stack.enter_async_context(
                connect(self.common.nats_url, name=f"rtml-{self.name}-{self.common.namespace}")
            )
            self.js = self.nc.jetstream()
            await provision(self.js, self.names, replicas=self.common.stream_replicas)
            await self.setup(self._stack)
            await self._serve_http()
            await self._register_endpoints()
            for worker_name, worker in self.workers().items():
                self._workers[worker_name] = asyncio.create_task(
                    self._run_worker(worker_name, worker), name=f"{self.name}:{worker_name}"
                )
        except BaseException:
            await self._stack.aclose()
            raise
        self._ready = True
        self.metrics.up.set(1)
        log.info("service_started", http_port=self.http_port, endpoints=[e.subject for e in self.endpoints()])

    async def stop(self) -> None:
        """Drain, wait for in-flight work up to the grace period, then close everything. Idempotent."""
        if self.stopped.is_set() or not self._started:
            self.stopped.set()
            return
        self._ready = False
        self.metrics.up.set(0)
        log.info("service_draining", in_flight=len(self._answering))
        self._stopping.set()
        if self._micro is not None:
            await _drain_endpoints(self._micro)
        pending = set(self._answering) | set(self._workers.values())
        if pending:
            _, late = await asyncio.wait(pending, timeout=self.common.shutdown_grace_s)
            for task in late:
                task.cancel()
            if late:
                log.warning("service_cancelled_late_work", tasks=len(late))
                await asyncio.gather(*late, return_exceptions=True)
        if self._micro is not None:
            await self._micro.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        await self._stack.aclose()
        log.info("service_stopped")
        self.stopped.set()

    @property
    def is_stopping(self) -> bool:
        return self._stopping.is_set()

    # Internals ------------------------------------------------------------
    async def _register_endpoints(self) -> None:
        # Registered even without endpoints, so $SRV.PING/INFO (and `rtml status`) see every service.
        self._micro = await nats.micro.add_service(
            self.nc,
            name=f"rtml-{self.name}",
            version=self.version,
            description=f"rtml {self.name} service",
            metadata={"namespace": self.common.namespace, "http": f"{self.common.http_host}:{self.http_port}"},
        )
        for endpoint in self.endpoints():
            await self._micro.add_endpoint(
                name=endpoint.name,
                subject=endpoint.subject,
                queue_group=endpoint.queue_group or self.names.queue_group,
                handler=self._dispatcher(endpoint),
            )

    def _dispatcher(self, endpoint: Endpoint) -> Callable[[MicroRequest], Awaitable[None]]:
        async def dispatch(request: MicroRequest) -> None:
            await self._slots.acquire()
            task = asyncio.create_task(self._answer(endpoint, request._msg))
            self._answering.add(task)
            task.add_done_callback(self._answered)

        return dispatch

    def _answered(self, task: asyncio.Task[None]) -> None:
        self._answering.discard(task)
        self._slots.release()

    async def _answer(self, endpoint: Endpoint, msg: Msg) -> None:
        trace = from_headers(msg.headers)
        current_trace.set(trace)
        request = Request(subject=msg.subject, data=msg.data, headers=msg.headers or {}, trace=trace)
        self.metrics.in_flight.inc()
        reply_headers = {TRACEPARENT: trace.header()}
        try:
            try:
                result = await endpoint.handler(request)
            except ServiceError as error:
                self.metrics.errors.labels(endpoint.name, str(error.code)).inc()
                await self._reply(msg, encode(error.body()), reply_headers | error.headers())
                return
            except asyncio.CancelledError:
                shutting_down = ServiceError(503, "service shutting down before the request finished")
                self.metrics.errors.labels(endpoint.name, "503").inc()
                with contextlib.suppress(Exception):
                    await self._reply(msg, encode(shutting_down.body()), reply_headers | shutting_down.headers())
                raise
            except Exception as unexpected:
                log.exception("handler_failed", endpoint=endpoint.name)
                internal = ServiceError(500, f"internal error: {type(unexpected).__name__}")
                self.metrics.errors.labels(endpoint.name, "500").inc()
                await self._reply(msg, encode(internal.body()), reply_headers | internal.headers())
                return
            await self._reply(msg, encode(result), reply_headers)
        except Exception:
            log.exception("reply_failed", endpoint=endpoint.name)
        finally:
            self.metrics.in_flight.dec()
            self.metrics.requests.labels(endpoint.name).inc()
            self.metrics.latency.labels(endpoint.name).observe(time.perf_counter() - request.received_at)

    async def _reply(self, msg: Msg, body: bytes, headers: dict[str, str]) -> None:
        # Msg.respond would echo the request's headers; a reply carries its own.
        if msg.reply:
            await self.nc.publish(msg.reply, body, headers=headers)

    async def _run_worker(self, worker_name: str, worker: Worker) -> None:
        """Run a worker; restart it with backoff if it crashes, until the service stops."""
        delay = 0.2
        while not self._stopping.is_set():
            try:
                await worker(self._stopping)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("worker_crashed", worker=worker_name, restart_in_s=delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=delay)
                delay = min(delay * 2, 10.0)

    async def _serve_http(self) -> None:
        app = web.Application()
        app.add_routes(
            [
                web.get("/healthz", self._healthz),
                web.get("/readyz", self._readyz),
                web.get("/metrics", self._metrics),
                *self.routes(),
            ]
        )
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.common.http_host, self.common.http_port, reuse_address=True)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.http_port = sockets[0].getsockname()[1] if sockets else self.common.http_port

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "service": self.name, "version": self.version})

    async def _readyz(self, _: web.Request) -> web.Response:
        reason: str | None
        if not self._ready:
            reason = "stopping" if self._stopping.is_set() else "starting"
        elif not self.nc.is_connected:
            reason = "nats disconnected"
        else:
            reason = await self.check_ready()
        if reason is not None:
            return web.json_response({"status": "not ready", "reason": reason}, status=503)
        return web.json_response({"status": "ready"})

    async def _metrics(self, _: web.Request) -> web.Response:
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _drain_endpoints(micro: MicroService) -> None:
    """Stop taking requests but deliver those the server already sent.

    ``nats.micro.Service.stop`` unsubscribes, which discards pending messages;
    draining each endpoint subscription first answers them instead.
    """
    for endpoint in micro._endpoints:
        subscription = endpoint._subscription
        if subscription is not None:
            with contextlib.suppress(Exception):
                await subscription.drain()
    micro._endpoints = []  # drained above; stop() must not unsubscribe them again


def serve(build: Callable[[Mapping[str, str]], Service]) -> NoReturn:
    """Every service's ``main()``: build it from the environment, configure logging, run until signalled.

    A configuration error (a :class:`ValueError`, which :class:`SettingsError` is) stops the
    process with its message and exit code 2 instead of a traceback.
    """
    try:
        service = build(os.environ)
    except ValueError as error:
        print(f"rtml: configuration error: {error}", file=sys.stderr)
        raise SystemExit(2) from error
    configure_logging(
        service=service.name,
        version=service.version,
        namespace=service.common.namespace,
        level=os.environ.get("RTML_LOG_LEVEL", "INFO"),
    )
    raise SystemExit(asyncio.run(run_until_signalled(service)))


# Allocations between two young-generation collections (CPython's default is 700). A service
# allocates in batches (a features batch decodes 1,000 events, each a few containers) that live
# until the batch is done, and every young collection walks what survives of them: with the
# default, decoding and planning a batch cost about a quarter more (features, 20,000 events,
# best of five: 23-25 us per event against 18-19). Reference counting still frees nearly
# everything at once; only cyclic garbage waits longer.
YOUNG_GENERATION_THRESHOLD = 50_000


def tune_collector() -> None:
    """Set the collector up for a started service: what start-up allocated (modules, clients,
    models) lives as long as the process, so it is moved out of the generations (a full
    collection no longer walks it), and young collections come every
    :data:`YOUNG_GENERATION_THRESHOLD` allocations."""
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, older, oldest)


async def run_until_signalled(service: Service) -> int:
    """Start ``service``, run until SIGTERM or SIGINT, stop it gracefully; the process exit code."""
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop_requested.set)
    try:
        await service.start()
    except Exception as error:
        log.error("service_start_failed", error=str(error))
        return 1
    tune_collector()
    await stop_requested.wait()
    log.info("signal_received")
    await service.stop()
    return 0
