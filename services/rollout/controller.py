"""The controller: one leader checks every active rollout each interval and applies its decision.

Leadership is a Postgres advisory lock held on a dedicated connection: when the
leader dies its connection closes and the lock frees, and another replica takes
over at its next attempt. The leader also LISTENs for transitions made through
the REST API (any replica), so an abort reaches routing without waiting a tick.

Order of every transition: decide (pure), compare-and-set it with its audit event
in one transaction, then publish the routing policy, then mark it published. A
crash between commit and publish is repaired on resume (the policy is published
from the committed state); a crash before commit loses only an undecided check.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Callable
from typing import Any

import asyncpg
import structlog
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from shared.codec import encode
from shared.routing import RoutingPolicy, read_policy, write_policy
from shared.subjects import Names

from .gates import GateResult, Outcome, evaluate, verdict
from .metrics import RolloutMetrics
from .store import Rollout, RolloutStore, StaleRollout
from .strategy import Decision, Event, State, decide, policy_shape
from .summary import Summary, SummaryReader

log = structlog.get_logger(__name__)


def now_ms() -> int:
    return int(time.time() * 1000)


def lock_key(namespace: str) -> int:
    """A signed 64-bit advisory lock key for the namespace's controller.

    >>> lock_key("rtml") == lock_key("rtml") != lock_key("other")
    True
    """
    digest = hashlib.blake2b(f"rtml-rollout:{namespace}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class Controller:
    def __init__(
        self,
        *,
        store: RolloutStore,
        kv: KeyValue,
        js: JetStreamContext,
        reader: SummaryReader,
        names: Names,
        metrics: RolloutMetrics,
        database_url: str,
        interval_s: float,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.store = store
        self.kv = kv
        self.js = js
        self.reader = reader
        self.names = names
        self.metrics = metrics
        self.database_url = database_url
        self.interval_s = interval_s
        self.clock = clock
        self.is_leader = False
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    # Leadership -----------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Contend for leadership until ``stop``; lead (tick every interval) while holding the lock."""
        while not stop.is_set():
            connection = await asyncpg.connect(self.database_url, timeout=5)
            try:
                if await connection.fetchval("SELECT pg_try_advisory_lock($1)", lock_key(self.names.namespace)):
                    await self._lead(connection, stop)
            finally:
                self.is_leader = False
                self.metrics.leader.set(0)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(connection.close(), timeout=2)
            await self._sleep(stop, self.interval_s)

    async def _lead(self, connection: asyncpg.Connection, stop: asyncio.Event) -> None:
        self.is_leader = True
        self.metrics.leader.set(1)
        log.info("controller_leading")

        def on_notify(*_: Any) -> None:
            self._wake.set()

        await connection.add_listener(self.store.notify_channel, on_notify)
        while not stop.is_set():
            if connection.is_closed():
                log.warning("controller_lost_lock_connection")
                return
            await self.tick()
            await self._sleep(stop, self.interval_s)

    async def _sleep(self, stop: asyncio.Event, seconds: float) -> None:
        stopper = asyncio.ensure_future(stop.wait())
        waker = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({stopper, waker}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            waker.cancel()
            self._wake.clear()

    # One pass -------------------------------------------------------------
    async def tick(self) -> None:
        """Check every active rollout once and publish every unpublished policy."""
        for rollout in await self.store.to_process():
            try:
                await self.process(rollout)
            except StaleRollout:
                log.info("rollout_moved_concurrently", rollout=rollout.id)
            except Exception:
                log.exception("rollout_check_failed", rollout=rollout.id)

    async def process(self, rollout: Rollout) -> None:
        if rollout.published_revision < rollout.policy_revision:
            rollout = await self.publish(rollout)
        if not rollout.progress.active:
            return
        summary, results = await self.check(rollout)
        decision = decide(rollout.spec, rollout.progress, results, self.clock())
        await self.apply(rollout, decision, summary=summary, results=results, actor="controller")

    async def check(self, rollout: Rollout) -> tuple[Summary | None, list[GateResult]]:
        try:
            summary = await self.reader.read(rollout.model, rollout.stable, rollout.candidate, rollout.spec.window_s)
        except Exception as error:
            # No figures is no evidence either way: the step holds.
            self.metrics.monitor_errors.inc()
            log.warning("monitor_summary_unavailable", rollout=rollout.id, error=str(error))
            return None, [GateResult("monitor", Outcome.HOLD, reason=f"monitor summary unavailable: {error}")]
        results = evaluate(
            summary,
            stable=rollout.stable,
            candidate=rollout.candidate,
            config=rollout.spec.gates,
            baseline=rollout.baseline,
        )
        self.metrics.checks.labels(rollout.model, verdict(results).value).inc()
        return summary, results

    async def apply(
        self,
        rollout: Rollout,
        decision: Decision,
        *,
        summary: Summary | None,
        results: list[GateResult],
        actor: str,
        publish: bool = True,
    ) -> Rollout:
        """Persist the decision (compare-and-set), then publish the policy when it changed.

        Only the leader publishes (``publish``): a replica answering an admin request
        commits and notifies, and the leader publishes in order, so two writers never race
        on the routing key.
        """
        if decision.progress == rollout.progress and decision.event is None:
            return rollout
        report = _report(decision.event, summary, results) if not decision.progress.active else None
        saved = await self.store.save(
            rollout, decision.progress, decision.event, now_ms=self.clock(), actor=actor, report=report
        )
        if decision.event is not None:
            self.metrics.transitions.labels(rollout.model, decision.event.kind).inc()
            log.info(
                "rollout_transition",
                rollout=rollout.id,
                kind=decision.event.kind,
                reason=decision.event.reason,
                step=saved.progress.step,
            )
        if publish and saved.published_revision < saved.policy_revision:
            saved = await self.publish(saved)
        return saved

    async def publish(self, rollout: Rollout) -> Rollout:
        """Write the policy the rollout's committed state calls for, then record that it was written."""
        if not rollout.progress.active and not await self.store.is_latest(rollout):
            # A newer rollout of the model owns routing now; this one's last word is moot.
            await self.store.mark_published(rollout, now_ms=self.clock(), detail={"skipped": "superseded"})
            return await self.store.get(rollout.model, rollout.id)
        shape = policy_shape(rollout.spec, rollout.progress, stable=rollout.stable, candidate=rollout.candidate)
        current = await read_policy(self.kv, rollout.model)
        published_at = self.clock()
        policy = RoutingPolicy(
            model=rollout.model,
            revision=(current.revision + 1) if current is not None else 1,
            rollout_id=rollout.id,
            updated_ms=published_at,
            **shape,
        )
        sequence = await write_policy(self.kv, policy)
        detail: dict[str, Any] = {"kv_sequence": sequence, "policy": policy.to_dict()}
        first_fail = rollout.progress.first_fail_ms
        if rollout.progress.state is State.ROLLED_BACK and first_fail is not None:
            detail["first_fail_ms"] = first_fail
            detail["breach_to_routing_ms"] = published_at - first_fail
            self.metrics.breach_to_routing.observe(max(0.0, (published_at - first_fail) / 1000))
            await self._alert(rollout, detail["breach_to_routing_ms"])
        await self.store.mark_published(rollout, now_ms=published_at, detail=detail)
        self.metrics.observe_state(
            rollout.model, rollout.progress.state, rollout.progress.step, float(shape["canary_weight_pct"])
        )
        log.info("routing_published", rollout=rollout.id, mode=policy.mode.value, stable=policy.stable,
                 candidate=policy.candidate, weight_pct=policy.canary_weight_pct, kv_sequence=sequence)  # fmt: skip
        return await self.store.get(rollout.model, rollout.id)

    async def _alert(self, rollout: Rollout, breach_to_routing_ms: int) -> None:
        rollback = rollout.report.get("rollback", {})
        failing = rollback.get("failing", [])
        for gate in {f.get("gate", "unknown") for f in failing} or {"unknown"}:
            self.metrics.rollbacks.labels(rollout.model, gate).inc()
        alert = {
            "kind": "rollback",
            "model": rollout.model,
            "rollout_id": rollout.id,
            "stable": rollout.stable,
            "candidate": rollout.candidate,
            "gates": [f.get("gate") for f in failing],
            "failing": failing,
            "first_fail_ms": rollout.progress.first_fail_ms,
            "breach_to_routing_ms": breach_to_routing_ms,
            "ts": self.clock(),
        }
        try:
            await self.js.publish(
                self.names.alerts("rollback"),
                encode(alert),
                headers={"Nats-Msg-Id": f"rollback:{rollout.id}"},
            )
        except Exception as error:
            log.warning("rollback_alert_failed", rollout=rollout.id, error=str(error))


def _report(event: Event | None, summary: Summary | None, results: list[GateResult]) -> dict[str, Any]:
    """What a finished rollout keeps: its last figures and gates, and the rollback's evidence."""
    report: dict[str, Any] = {
        "final_gates": [r.to_dict() for r in results],
        "final_summary": None if summary is None else summary.to_dict(),
    }
    if event is not None and event.kind == "rolled_back":
        report["rollback"] = dict(event.detail)
    if event is not None and event.kind == "shadow_completed" and summary is not None:
        report["shadow"] = {
            "comparison": summary.comparison.to_dict(),
            "versions": {str(v): f.to_dict() for v, f in summary.versions.items()},
        }
    return report
