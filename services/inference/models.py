"""Which model versions this replica serves, kept in step with the routing policies.

For each model with a policy the table holds an immutable :class:`ModelState`
(policy and loaded versions). Applying a new policy loads and warms up whatever
versions it names that are not loaded yet, then swaps the whole state in one
assignment, so a request sees either the old state or the new one, never a mix.
Versions the new policy no longer names finish their queued requests and close.
A version that cannot be loaded (corrupt artifact, bad metadata) is refused with a
logged reason and the previous state keeps serving.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import structlog

from services.inference.metrics import InferenceMetrics
from services.inference.runner import LoadedVersion
from shared.routing import RoutingPolicy

log = structlog.get_logger(__name__)

Loader = Callable[[str, int], Awaitable[LoadedVersion]]


@dataclass(frozen=True, slots=True)
class ModelState:
    policy: RoutingPolicy
    versions: Mapping[int, LoadedVersion]


class ModelTable:
    def __init__(self, loader: Loader, metrics: InferenceMetrics, *, close_timeout_s: float = 10.0) -> None:
        self._loader = loader
        self._metrics = metrics
        self._close_timeout_s = close_timeout_s
        self._states: dict[str, ModelState] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._locks: dict[str, asyncio.Lock] = {}

    def get(self, model: str) -> ModelState | None:
        return self._states.get(model)

    @property
    def models(self) -> list[str]:
        return sorted(self._states)

    async def apply(self, policy: RoutingPolicy) -> bool:
        """Serve ``policy``; ``False`` when a version it names could not be loaded (the previous state stays)."""
        async with self._locks.setdefault(policy.model, asyncio.Lock()):
            current = self._states.get(policy.model)
            loaded: dict[int, LoadedVersion] = {}
            refused: list[int] = []
            for number in sorted(policy.versions()):
                if current is not None and number in current.versions:
                    loaded[number] = current.versions[number]
                    continue
                try:
                    version = await self._loader(policy.model, number)
                except Exception as error:
                    refused.append(number)
                    self._metrics.loads.labels(policy.model, "refused").inc()
                    log.error("model_version_refused", model=policy.model, version=number, reason=str(error))
                    continue
                version.start()
                loaded[number] = version
                self._metrics.loads.labels(policy.model, "ok").inc()
                log.info("model_version_loaded", model=policy.model, version=number)
            if refused and current is not None:
                for number, version in loaded.items():
                    if number not in current.versions:
                        self._close_later(version)
                log.error(
                    "routing_policy_not_applied", model=policy.model, revision=policy.revision, refused=refused,
                    serving=sorted(current.versions),
                )  # fmt: skip
                return False
            self._states[policy.model] = ModelState(policy, loaded)  # the atomic swap
            self._metrics.loaded.labels(policy.model).set(len(loaded))
            log.info("routing_policy_applied", model=policy.model, mode=policy.mode.value, versions=sorted(loaded))
            if current is not None:
                for number, version in current.versions.items():
                    if number not in loaded:
                        self._close_later(version)
            return not refused

    async def remove(self, model: str) -> None:
        async with self._locks.setdefault(model, asyncio.Lock()):
            state = self._states.pop(model, None)
            if state is not None:
                for version in state.versions.values():
                    self._close_later(version)
                self._metrics.loaded.labels(model).set(0)
                log.info("model_removed", model=model)

    def _close_later(self, version: LoadedVersion) -> None:
        task = asyncio.create_task(version.close(self._close_timeout_s))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def drain(self) -> None:
        """Shutdown has begun: release every queued request now instead of waiting out batch delays."""
        for state in self._states.values():
            for version in state.versions.values():
                version.batcher.drain()

    async def close(self, timeout_s: float) -> None:
        """Answer everything queued (up to ``timeout_s``), then fail what is left with 503."""
        states, self._states = self._states, {}
        closing = [version.close(timeout_s) for state in states.values() for version in state.versions.values()]
        await asyncio.gather(*closing, *self._closing, return_exceptions=True)
