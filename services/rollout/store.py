"""Rollouts and their timeline in Postgres, every transition a compare-and-set.

A rollout row carries a ``revision``; :meth:`RolloutStore.save` updates it only
where the revision is still the one the caller read, and writes the timeline
event in the same transaction. Two controllers (or a controller and an admin
request) racing on one rollout therefore cannot both move it: the loser gets
:class:`StaleRollout` and re-reads. A step is never lost (the transaction commits
before the policy is published) nor repeated (the compare-and-set refuses the
second writer). ``policy_revision`` marks the last transition that changed the
routing policy and ``published_revision`` the last one published, so a
controller that died between the two publishes on resume.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from shared.errors import NotFound

from .strategy import ACTIVE_STATES, Conflict, Event, Progress, RolloutSpec, State
from .summary import VersionFigures

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS rollouts (
    id                  text PRIMARY KEY,
    model               text NOT NULL,
    stable              integer NOT NULL,
    candidate           integer NOT NULL,
    spec                jsonb NOT NULL,
    baseline            jsonb,
    state               text NOT NULL,
    step                integer NOT NULL DEFAULT 0,
    step_started_ms     bigint NOT NULL,
    pass_since_ms       bigint,
    failures            integer NOT NULL DEFAULT 0,
    first_fail_ms       bigint,
    revision            integer NOT NULL DEFAULT 1,
    policy_revision     integer NOT NULL DEFAULT 1,
    published_revision  integer NOT NULL DEFAULT 0,
    report              jsonb NOT NULL DEFAULT '{}',
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX IF NOT EXISTS rollouts_one_active ON rollouts (model) WHERE state IN ('running', 'paused');
CREATE TABLE IF NOT EXISTS rollout_events (
    seq         bigserial PRIMARY KEY,
    rollout_id  text NOT NULL REFERENCES rollouts(id),
    revision    integer NOT NULL,
    at_ms       bigint NOT NULL,
    kind        text NOT NULL,
    state       text NOT NULL,
    step        integer NOT NULL,
    reason      text NOT NULL,
    actor       text NOT NULL,
    detail      jsonb NOT NULL DEFAULT '{}',
    UNIQUE (rollout_id, kind, revision)
);
"""


class StaleRollout(Exception):
    """The rollout moved since it was read; re-read and decide again."""


@dataclass(frozen=True, slots=True)
class Rollout:
    id: str
    model: str
    stable: int
    candidate: int
    spec: RolloutSpec
    baseline: VersionFigures | None
    progress: Progress
    revision: int
    policy_revision: int
    published_revision: int
    report: dict[str, Any]
    created_at: datetime
    updated_at: datetime

    def to_dict(self) -> dict[str, Any]:
        p = self.progress
        return {
            "id": self.id,
            "model": self.model,
            "stable": self.stable,
            "candidate": self.candidate,
            "state": p.state.value,
            "step": p.step,
            "weight_pct": self.spec.steps[p.step],
            "step_started_ms": p.step_started_ms,
            "pass_since_ms": p.pass_since_ms,
            "consecutive_failures": p.failures,
            "first_fail_ms": p.first_fail_ms,
            "revision": self.revision,
            "policy_published": self.published_revision >= self.policy_revision,
            "spec": self.spec.to_dict(),
            "baseline": None if self.baseline is None else self.baseline.to_dict(),
            "report": self.report,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


def _row(row: asyncpg.Record) -> Rollout:
    baseline = json.loads(row["baseline"]) if row["baseline"] is not None else None
    return Rollout(
        id=row["id"],
        model=row["model"],
        stable=row["stable"],
        candidate=row["candidate"],
        spec=RolloutSpec.from_stored(json.loads(row["spec"])),
        baseline=None if baseline is None else VersionFigures.from_dict(baseline),
        progress=Progress(
            state=State(row["state"]),
            step=row["step"],
            step_started_ms=row["step_started_ms"],
            pass_since_ms=row["pass_since_ms"],
            failures=row["failures"],
            first_fail_ms=row["first_fail_ms"],
        ),
        revision=row["revision"],
        policy_revision=row["policy_revision"],
        published_revision=row["published_revision"],
        report=json.loads(row["report"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


class RolloutStore:
    def __init__(self, pool: asyncpg.Pool, *, notify_channel: str) -> None:
        self.pool = pool
        self.notify_channel = notify_channel

    async def ensure_tables(self) -> None:
        async with self.pool.acquire() as connection:
            await connection.execute(SCHEMA_SQL)

    async def create(
        self,
        *,
        model: str,
        stable: int,
        candidate: int,
        spec: RolloutSpec,
        baseline: VersionFigures | None,
        now_ms: int,
        actor: str,
    ) -> Rollout:
        rollout_id = uuid.uuid4().hex[:16]
        async with self.pool.acquire() as connection, connection.transaction():
            try:
                row = await connection.fetchrow(
                    """INSERT INTO rollouts (id, model, stable, candidate, spec, baseline, state, step_started_ms)
                       VALUES ($1, $2, $3, $4, $5, $6, 'running', $7) RETURNING *""",
                    rollout_id, model, stable, candidate, json.dumps(spec.to_dict()),
                    None if baseline is None else json.dumps(baseline.to_dict()), now_ms,
                )  # fmt: skip
            except asyncpg.UniqueViolationError as error:
                raise Conflict(f"model {model!r} already has an active rollout") from error
            created = Event(
                "created",
                f"{spec.strategy.value} rollout of version {candidate} over {stable}",
                {"step": 0, "weight_pct": spec.steps[0]},
                policy=True,
            )
            await self._event(
                connection, rollout_id=rollout_id, revision=1, now_ms=now_ms, event=created,
                progress=Progress(State.RUNNING, 0, now_ms), actor=actor,
            )  # fmt: skip
            await connection.execute("SELECT pg_notify($1, $2)", self.notify_channel, rollout_id)
        return _row(row)

    async def get(self, model: str, rollout_id: str) -> Rollout:
        row = await self.pool.fetchrow("SELECT * FROM rollouts WHERE id = $1 AND model = $2", rollout_id, model)
        if row is None:
            raise NotFound(f"model {model!r} has no rollout {rollout_id!r}")
        return _row(row)

    async def list_for_model(self, model: str) -> list[Rollout]:
        rows = await self.pool.fetch("SELECT * FROM rollouts WHERE model = $1 ORDER BY created_at", model)
        return [_row(r) for r in rows]

    async def active(self, model: str) -> Rollout | None:
        row = await self.pool.fetchrow(
            "SELECT * FROM rollouts WHERE model = $1 AND state = ANY($2::text[])",
            model, [s.value for s in ACTIVE_STATES],
        )  # fmt: skip
        return None if row is None else _row(row)

    async def to_process(self) -> list[Rollout]:
        """Active rollouts, and finished ones whose last policy is still unpublished (oldest first)."""
        rows = await self.pool.fetch(
            """SELECT * FROM rollouts
               WHERE state = ANY($1::text[]) OR published_revision < policy_revision
               ORDER BY created_at""",
            [s.value for s in ACTIVE_STATES],
        )
        return [_row(r) for r in rows]

    async def is_latest(self, rollout: Rollout) -> bool:
        newer = await self.pool.fetchval(
            "SELECT 1 FROM rollouts WHERE model = $1 AND created_at > $2 LIMIT 1", rollout.model, rollout.created_at
        )
        return newer is None

    async def timeline(self, rollout_id: str) -> list[dict[str, Any]]:
        rows = await self.pool.fetch("SELECT * FROM rollout_events WHERE rollout_id = $1 ORDER BY seq", rollout_id)
        return [
            {
                "seq": r["seq"],
                "revision": r["revision"],
                "at_ms": r["at_ms"],
                "kind": r["kind"],
                "state": r["state"],
                "step": r["step"],
                "reason": r["reason"],
                "actor": r["actor"],
                "detail": json.loads(r["detail"]),
            }
            for r in rows
        ]

    async def save(
        self,
        rollout: Rollout,
        progress: Progress,
        event: Event | None,
        *,
        now_ms: int,
        actor: str,
        report: dict[str, Any] | None = None,
    ) -> Rollout:
        """Compare-and-set the progress (and its event) on the revision ``rollout`` was read at."""
        revision = rollout.revision + 1
        policy_revision = revision if event is not None and event.policy else rollout.policy_revision
        async with self.pool.acquire() as connection, connection.transaction():
            row = await connection.fetchrow(
                """UPDATE rollouts SET state = $3, step = $4, step_started_ms = $5, pass_since_ms = $6,
                       failures = $7, first_fail_ms = $8, revision = $9, policy_revision = $10,
                       report = coalesce($11::jsonb, report), updated_at = now()
                   WHERE id = $1 AND revision = $2 RETURNING *""",
                rollout.id, rollout.revision, progress.state.value, progress.step, progress.step_started_ms,
                progress.pass_since_ms, progress.failures, progress.first_fail_ms, revision, policy_revision,
                None if report is None else json.dumps(report),
            )  # fmt: skip
            if row is None:
                raise StaleRollout(f"rollout {rollout.id} moved past revision {rollout.revision}")
            if event is not None:
                await self._event(
                    connection, rollout_id=rollout.id, revision=revision, now_ms=now_ms, event=event,
                    progress=progress, actor=actor,
                )  # fmt: skip
                if actor != "controller":
                    # Wake the leader for an admin's transition; its own would cut the check interval short.
                    await connection.execute("SELECT pg_notify($1, $2)", self.notify_channel, rollout.id)
        return _row(row)

    async def mark_published(self, rollout: Rollout, *, now_ms: int, detail: dict[str, Any]) -> None:
        """Record that the policy of ``rollout.policy_revision`` reached the routing bucket (once)."""
        async with self.pool.acquire() as connection, connection.transaction():
            await connection.execute(
                "UPDATE rollouts SET published_revision = greatest(published_revision, $2) WHERE id = $1",
                rollout.id, rollout.policy_revision,
            )  # fmt: skip
            await connection.execute(
                """INSERT INTO rollout_events (rollout_id, revision, at_ms, kind, state, step, reason, actor, detail)
                   VALUES ($1, $2, $3, 'policy_published', $4, $5, 'routing policy written', 'controller', $6)
                   ON CONFLICT (rollout_id, kind, revision) DO NOTHING""",
                rollout.id, rollout.policy_revision, now_ms, rollout.progress.state.value, rollout.progress.step,
                json.dumps(detail),
            )  # fmt: skip

    async def _event(
        self,
        connection: asyncpg.Connection,
        *,
        rollout_id: str,
        revision: int,
        now_ms: int,
        event: Event,
        progress: Progress,
        actor: str,
    ) -> None:
        await connection.execute(
            """INSERT INTO rollout_events (rollout_id, revision, at_ms, kind, state, step, reason, actor, detail)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)""",
            rollout_id, revision, now_ms, event.kind, progress.state.value, progress.step, event.reason, actor,
            json.dumps(event.detail),
        )  # fmt: skip
