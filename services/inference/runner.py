"""One loaded model version: its backend, its batcher, and the batch pipeline between them.

A batch is assembled in one Redis read for all its requests, run through
the backend in one call, and split back into one result per request with the
time each stage took.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from services.inference.backends import Backend, FloatArray
from services.inference.batcher import Batcher
from services.inference.features import Lookup, Signature
from services.inference.metrics import InferenceMetrics, VariantMetrics
from services.inference.policy import BatchPolicy
from shared.errors import Unavailable
from shared.messages import Scalar
from shared.online import OnlineVector, read_online_features
from shared.registry import ModelVersion
from shared.subjects import Names

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class Job:
    """One request on its way through a version's batcher."""

    id: str
    entity: str
    features: Mapping[str, Scalar]
    variant: str
    enqueued: float = field(default_factory=time.perf_counter)
    row: FloatArray | None = None  # a shadow run reuses the stable run's vector
    degraded: bool = False


@dataclass(frozen=True, slots=True)
class Result:
    score: float
    degraded: bool
    row: FloatArray
    queue_us: int
    features_us: int
    model_us: int


class OnlineStore:
    """Reads a batch's online features in one round trip, bounded in time."""

    def __init__(self, redis: aioredis.Redis, names: Names, timeout_s: float) -> None:
        self.redis = redis
        self.names = names
        self.timeout_s = timeout_s

    async def read(
        self, wanted: Sequence[Lookup], fields_by_view: Mapping[str, Sequence[str]]
    ) -> dict[Lookup, OnlineVector] | None:
        """The vectors found (only the fields the model uses), or ``None`` when the store did not answer in time.

        One round trip through :func:`shared.online.read_online_features`, the reader of the
        layout the features service writes.
        """
        if not wanted:
            return {}
        try:
            async with asyncio.timeout(self.timeout_s):
                stored = await read_online_features(self.redis, self.names, wanted)
        except (RedisError, OSError, TimeoutError) as error:
            log.warning("online_store_unavailable", error=str(error) or type(error).__name__)
            return None
        found: dict[Lookup, OnlineVector] = {}
        for (view, entity), vector in zip(wanted, stored, strict=True):
            values = {name: vector.values[name] for name in fields_by_view[view] if name in vector.values}
            if values:
                found[(view, entity)] = OnlineVector(values, vector.as_of_ms)
        return found


class LoadedVersion:
    """A model version ready to serve: warmed-up backend behind its own batcher."""

    def __init__(self, version: ModelVersion, backend: Backend, store: OnlineStore, metrics: InferenceMetrics) -> None:
        self.version = version
        self.backend = backend
        self.store = store
        self.metrics = metrics
        self.signature = Signature(tuple(version.metadata.features))
        self.policy = BatchPolicy.from_dict(version.metadata.batch_policy)
        labels = (version.model, str(version.version))
        self._batch_size = metrics.batch_size.labels(*labels)
        self._degraded_missing = metrics.degraded.labels(*labels, "missing")
        self._degraded_store = metrics.degraded.labels(*labels, "online_store")
        self.batcher: Batcher[Job, Result] = Batcher(
            self.run_batch, self.policy, name=f"{version.model}:v{version.version}",
            observer=lambda size, _: self._batch_size.observe(size),
        )  # fmt: skip
        metrics.queue_depth.labels(*labels).set_function(lambda: self.batcher.depth)
        self.variants = {
            variant: VariantMetrics.bind(metrics, version.model, version.version, variant)
            for variant in ("stable", "candidate", "shadow")
        }

    @property
    def model(self) -> str:
        return self.version.model

    @property
    def number(self) -> int:
        return self.version.version

    def start(self) -> None:
        self.batcher.start()

    async def close(self, timeout_s: float) -> None:
        await self.batcher.close(timeout_s)
        self.metrics.queue_depth.remove(self.model, str(self.number))

    async def run_batch(self, jobs: list[Job]) -> list[Result]:
        started = time.perf_counter()
        fresh = [i for i, job in enumerate(jobs) if job.row is None]
        matrix = np.empty((len(jobs), self.signature.width), dtype=np.float32)
        degraded = [job.degraded for job in jobs]
        if fresh:
            requests = [(jobs[i].entity, jobs[i].features) for i in fresh]
            wanted = self.signature.lookups(requests)
            online = await self.store.read(wanted, self.signature.fields_by_view)
            if online is None:
                if self.version.metadata.requires_features:
                    raise Unavailable(f"online features unavailable and model {self.model!r} requires them")
                self._degraded_store.inc(len(fresh))
            rows, flags = self.signature.assemble(requests, online)
            matrix[fresh] = rows
            for i, flag in zip(fresh, flags, strict=True):
                if flag and online is not None:
                    self._degraded_missing.inc()
                degraded[i] = degraded[i] or flag
        for i, job in enumerate(jobs):
            if job.row is not None:
                matrix[i] = job.row
        fetched = time.perf_counter()
        if self.backend.runs_in_thread:
            scores = await asyncio.to_thread(self.backend.run, matrix)
        else:
            scores = self.backend.run(matrix)
        done = time.perf_counter()
        features_us, model_us = int((fetched - started) * 1e6), int((done - fetched) * 1e6)
        return [
            Result(
                score=float(score), degraded=degraded[i], row=matrix[i], queue_us=int((started - job.enqueued) * 1e6),
                features_us=features_us, model_us=model_us,
            )
            for i, (job, score) in enumerate(zip(jobs, scores.tolist(), strict=True))
        ]  # fmt: skip
