"""The inference service: ``<ns>.predict.<model>`` answered from dynamically batched model versions.

One wildcard ``nats.micro`` endpoint on ``<ns>.predict.*`` in the namespace queue
group serves every model that has a routing policy; replicas scale out by starting
more. The model comes from the subject's last token. Errors: 400 malformed request
or wrong feature types, 404 no routing policy for the model, 429 shed, 503 nothing
loaded (or online features required and unavailable), 504 deadline passed.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from typing import Any, ClassVar

import asyncpg
import structlog
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from services.inference.backends import make_backend
from services.inference.metrics import InferenceMetrics
from services.inference.models import ModelState, ModelTable
from services.inference.policy import BatchPolicy
from services.inference.predlog import LogEntry, PredictionLog
from services.inference.runner import Job, LoadedVersion, OnlineStore, Result
from services.inference.settings import SERVICE, InferenceSettings
from shared.codec import decode
from shared.db import open_pool
from shared.errors import DeadlineExceeded, NotFound, Overloaded, ServiceError, Unavailable
from shared.messages import PredictRequest
from shared.online import open_redis
from shared.registry import ensure_tables, fetch_artifact, get_version
from shared.routing import RoutingPolicy, Variant
from shared.runtime import Endpoint, Request, Service, Worker

log = structlog.get_logger(__name__)

DELETE_OPERATIONS = ("DEL", "PURGE")


class InferenceService(Service):
    name: ClassVar[str] = SERVICE

    def __init__(self, settings: InferenceSettings) -> None:
        super().__init__(settings.common)
        self.settings = settings
        self.inference_metrics = InferenceMetrics(self.metrics)
        self.pool: asyncpg.Pool
        self.store: ObjectStore
        self.online: OnlineStore
        self.log: PredictionLog
        self.table = ModelTable(self._load, self.inference_metrics, close_timeout_s=settings.common.shutdown_grace_s)
        self._routing_synced = asyncio.Event()

    # Lifecycle hooks -------------------------------------------------------
    async def setup(self, stack: AsyncExitStack) -> None:
        redis = await stack.enter_async_context(open_redis(self.common.redis_url))
        self.online = OnlineStore(redis, self.names, self.settings.features_timeout_s)
        self.pool = await stack.enter_async_context(open_pool(self.common.database_url, schema=self.names.schema))
        await ensure_tables(self.pool)
        self.store = await self.js.object_store(self.names.models_bucket)
        self.log = PredictionLog(
            self.nc, self.names, max_pending=self.settings.log_max_pending,
            on_drop=self.inference_metrics.log_dropped.inc,
        )  # fmt: skip
        # Unwound in reverse: the batchers answer what is queued, then the log publishes the last records.
        stack.push_async_callback(self.log.flush)
        stack.push_async_callback(self.table.close, self.common.shutdown_grace_s)

    async def stop(self) -> None:
        if self._started and not self.stopped.is_set():
            self.table.drain()
        await super().stop()

    def endpoints(self) -> Sequence[Endpoint]:
        return [Endpoint("predict", f"{self.names.namespace}.predict.*", self.predict)]

    def workers(self) -> Mapping[str, Worker]:
        return {"routing": self._watch_routing, "prediction_log": self.log.run}

    async def check_ready(self) -> str | None:
        return None if self._routing_synced.is_set() else "routing policies not loaded yet"

    async def wait_synced(self, timeout_s: float = 30.0) -> None:
        """Wait until the first snapshot of routing policies has been applied."""
        await asyncio.wait_for(self._routing_synced.wait(), timeout_s)

    # Model loading ---------------------------------------------------------
    async def _load(self, model: str, number: int) -> LoadedVersion:
        version = await get_version(self.pool, model, number)
        artifact = await fetch_artifact(self.store, version)  # refuses a sha256 mismatch
        policy = BatchPolicy.from_dict(version.metadata.batch_policy)
        backend = make_backend(
            self.settings.backend, intra_op_threads=self.settings.intra_op_threads,
            max_batch_size=policy.max_batch_size, preferred_batch_sizes=policy.preferred_batch_sizes,
            concurrent_batches=policy.max_concurrent_batches, cache_dir=self.settings.trt_cache_dir,
        )  # fmt: skip
        await asyncio.to_thread(backend.load, artifact, len(version.metadata.features))
        if self.settings.warm_up_rounds:
            await asyncio.to_thread(backend.warm_up, policy.warm_up_sizes(), self.settings.warm_up_rounds)
        return LoadedVersion(version, backend, self.online, self.inference_metrics)

    async def _watch_routing(self, stop: asyncio.Event) -> None:
        kv: KeyValue = await self.js.key_value(self.names.routing_bucket)
        watcher = await kv.watchall()
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                update = asyncio.ensure_future(watcher.__anext__())  # type: ignore[no-untyped-call]
                await asyncio.wait({update, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not update.done():
                    update.cancel()
                    break
                try:
                    entry = update.result()
                except StopAsyncIteration:
                    break
                if entry is None:  # the initial snapshot has been delivered
                    self._routing_synced.set()
                    log.info("routing_synced", models=self.table.models)
                    continue
                if entry.operation in DELETE_OPERATIONS or not entry.value:
                    await self.table.remove(entry.key)
                    continue
                try:
                    policy = RoutingPolicy.from_dict(decode(entry.value))
                except (ServiceError, KeyError, TypeError, ValueError) as error:
                    log.error("routing_policy_invalid", model=entry.key, error=str(error))
                    continue
                await self.table.apply(policy)
        finally:
            stopping.cancel()
            await watcher.stop()  # type: ignore[no-untyped-call]

    # The endpoint ----------------------------------------------------------
    async def predict(self, req: Request) -> dict[str, Any]:
        model = req.subject.rsplit(".", 1)[-1]
        state = self.table.get(model)
        if state is None:
            if not self._routing_synced.is_set():  # just started: the policies are still loading
                raise Unavailable("routing policies not loaded yet")
            raise NotFound(f"model {model!r} is not served: it has no routing policy")
        request = PredictRequest.from_dict(req.payload())
        route = state.policy.route(request.entity)
        variant = route.variant.value
        loaded = state.versions.get(route.version)
        if loaded is None and route.variant is Variant.CANDIDATE:
            loaded, variant = state.versions.get(state.policy.stable), Variant.STABLE.value
        request_id = request.id or secrets.token_hex(8)
        if loaded is None:
            self._log_error(
                req, model=model, version=route.version, variant=variant, request_id=request_id,
                entity=request.entity, code=503,
            )  # fmt: skip
            raise Unavailable(f"model {model!r} has no loaded version to answer with")
        loaded.signature.check(request.features)
        job = Job(request_id, request.entity, request.features, variant)
        metrics = loaded.variants[variant]
        try:
            result = await loaded.batcher.submit(job, self._deadline(request.deadline_ms))
        except ServiceError as error:
            if isinstance(error, Overloaded):
                metrics.shed.inc()
            elif isinstance(error, DeadlineExceeded):
                metrics.timeouts.inc()
            self._log_error(
                req, model=model, version=loaded.number, variant=variant, request_id=request_id,
                entity=request.entity, code=error.code,
            )  # fmt: skip
            raise
        total_us = int((time.perf_counter() - req.received_at) * 1e6)
        timings = {"features": result.features_us, "queue": result.queue_us, "model": result.model_us,
                   "total": total_us}  # fmt: skip
        self._observe(metrics, timings)
        self.log.add(
            LogEntry(
                request_id, model, loaded.number, variant, request.entity, result.score, result.degraded, total_us,
                loaded.signature.names, result.row, timings_us=timings,
            )
        )  # fmt: skip
        if route.shadow_version is not None:
            # Scheduled after this handler returns, so the reply is published before the shadow is queued.
            asyncio.get_running_loop().call_soon(self._shadow, state, route.shadow_version, loaded, job, result)
        return {
            "id": request_id, "model": model, "version": loaded.number, "score": result.score, "variant": variant,
            "degraded": result.degraded, "timings_us": timings,
        }  # fmt: skip

    def _deadline(self, deadline_ms: int | None) -> float | None:
        if deadline_ms is None:
            return None
        remaining_s = deadline_ms / 1000.0 - time.time()
        return asyncio.get_running_loop().time() + remaining_s

    @staticmethod
    def _observe(metrics: Any, timings: Mapping[str, int]) -> None:
        metrics.predictions.inc()
        metrics.features.observe(timings["features"] / 1e6)
        metrics.queue.observe(timings["queue"] / 1e6)
        metrics.model.observe(timings["model"] / 1e6)
        metrics.total.observe(timings["total"] / 1e6)

    def _log_error(
        self, req: Request, *, model: str, version: int, variant: str, request_id: str, entity: str, code: int
    ) -> None:
        latency_us = int((time.perf_counter() - req.received_at) * 1e6)
        self.log.add(LogEntry(request_id, model, version, variant, entity, None, False, latency_us, error_code=code))

    # Shadow traffic --------------------------------------------------------
    def _shadow(self, state: ModelState, number: int, stable: LoadedVersion, job: Job, result: Result) -> None:
        shadow = state.versions.get(number)
        if shadow is None:
            self.inference_metrics.shadow_dropped.labels(state.policy.model).inc()
            return
        same_inputs = shadow.signature.names == stable.signature.names
        mirrored = Job(
            job.id, job.entity, job.features, Variant.SHADOW.value,
            row=result.row if same_inputs else None, degraded=result.degraded if same_inputs else False,
        )  # fmt: skip
        try:
            future = shadow.batcher.submit(mirrored)
        except ServiceError:
            self.inference_metrics.shadow_dropped.labels(state.policy.model).inc()
            return
        future.add_done_callback(lambda done: self._shadow_done(shadow, mirrored, done))

    def _shadow_done(self, shadow: LoadedVersion, job: Job, done: asyncio.Future[Result]) -> None:
        latency_us = int((time.perf_counter() - job.enqueued) * 1e6)
        if done.cancelled() or done.exception() is not None:
            error = None if done.cancelled() else done.exception()
            code = error.code if isinstance(error, ServiceError) else 500
            self.log.add(LogEntry(job.id, shadow.model, shadow.number, job.variant, job.entity, None, False,
                                  latency_us, error_code=code))  # fmt: skip
            return
        result = done.result()
        timings = {"features": result.features_us, "queue": result.queue_us, "model": result.model_us,
                   "total": latency_us}  # fmt: skip
        self._observe(shadow.variants[Variant.SHADOW.value], timings)
        self.log.add(
            LogEntry(
                job.id, shadow.model, shadow.number, job.variant, job.entity, result.score, result.degraded,
                latency_us, shadow.signature.names, result.row, timings_us=timings,
            )
        )  # fmt: skip
