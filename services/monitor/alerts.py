"""Alerts with hysteresis and deduplication: one open alert per (kind, model, version, feature).

A breach opens an alert (stored in Postgres and published to ``<ns>.alerts.<kind>``)
or refreshes the one already open; only ``clear_windows`` clean evaluations in a
row resolve it, and any breach in between restarts that count. A partial unique
index keeps one open alert per key even with several replicas, and open alerts
are reloaded on start, so a restart neither duplicates nor forgets them.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

import asyncpg
import structlog

log = structlog.get_logger(__name__)

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS monitor_alerts (
    id            bigserial PRIMARY KEY,
    kind          text NOT NULL,
    model         text NOT NULL,
    version       integer NOT NULL,
    feature       text NOT NULL,
    statistic     text NOT NULL,
    value         double precision,
    threshold     double precision,
    window_spec   text NOT NULL,
    severity      text NOT NULL,
    status        text NOT NULL DEFAULT 'open',
    observations  integer NOT NULL DEFAULT 1,
    detail        jsonb NOT NULL DEFAULT '{}',
    raised_at     timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    resolved_at   timestamptz
);
CREATE UNIQUE INDEX IF NOT EXISTS monitor_alerts_one_open
    ON monitor_alerts (kind, model, version, feature) WHERE status = 'open';
CREATE INDEX IF NOT EXISTS monitor_alerts_model ON monitor_alerts (model, raised_at DESC);
"""

AlertKey = tuple[str, str, int, str]  # kind, model, version, feature
Publisher = Callable[[str, dict[str, Any], str], Awaitable[None]]  # kind, body, message id


@dataclass(frozen=True, slots=True)
class Breach:
    """What crossed which threshold, over which window."""

    statistic: str
    value: float | None
    threshold: float | None
    window: str
    severity: str = "warning"
    detail: dict[str, Any] | None = None


def _row(record: asyncpg.Record) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in record.items():
        if key == "window_spec":
            out["window"] = value
        elif key == "detail":
            out[key] = json.loads(value)
        elif isinstance(value, dt.datetime):
            out[key] = value.isoformat()
        else:
            out[key] = value
    return out


class AlertManager:
    """Raise, refresh and resolve alerts; the Postgres row is the source of truth."""

    def __init__(self, pool: asyncpg.Pool, publish: Publisher, *, clear_windows: Callable[[str], int]) -> None:
        self.pool = pool
        self.publish = publish
        self.clear_windows = clear_windows
        self._open: dict[AlertKey, int] = {}
        self._clean: dict[AlertKey, int] = {}
        self.raised = 0
        self.resolved = 0

    async def setup(self) -> None:
        async with self.pool.acquire() as connection:
            await connection.execute(SCHEMA_SQL)
        rows = await self.pool.fetch(
            "SELECT id, kind, model, version, feature FROM monitor_alerts WHERE status = 'open'"
        )
        self._open = {(r["kind"], r["model"], r["version"], r["feature"]): r["id"] for r in rows}

    @property
    def open_count(self) -> int:
        return len(self._open)

    def is_open(self, key: AlertKey) -> bool:
        return key in self._open

    async def breach(self, key: AlertKey, breach: Breach) -> None:
        """A threshold was crossed: open the key's alert, or refresh the open one."""
        self._clean[key] = 0
        kind, model, version, feature = key
        alert_id = self._open.get(key)
        if alert_id is not None:
            await self.pool.execute(
                """UPDATE monitor_alerts SET value = $2, threshold = $3, statistic = $4, window_spec = $5,
                       severity = $6, observations = observations + 1, updated_at = now() WHERE id = $1""",
                alert_id, breach.value, breach.threshold, breach.statistic, breach.window, breach.severity,
            )  # fmt: skip
            return
        alert_id = await self.pool.fetchval(
            """INSERT INTO monitor_alerts (kind, model, version, feature, statistic, value, threshold, window_spec,
                                           severity, detail)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb)
               ON CONFLICT (kind, model, version, feature) WHERE status = 'open' DO NOTHING RETURNING id""",
            kind, model, version, feature, breach.statistic, breach.value, breach.threshold, breach.window,
            breach.severity, json.dumps(breach.detail or {}),
        )  # fmt: skip
        if alert_id is None:  # another replica opened it first
            alert_id = await self.pool.fetchval(
                """SELECT id FROM monitor_alerts WHERE kind = $1 AND model = $2 AND version = $3 AND feature = $4
                   AND status = 'open'""",
                kind, model, version, feature,
            )  # fmt: skip
            if alert_id is not None:
                self._open[key] = alert_id
            return
        self._open[key] = alert_id
        self.raised += 1
        log.warning("alert_raised", kind=kind, model=model, version=version, feature=feature, **asdict(breach))
        await self._announce("raised", alert_id, key, breach)

    async def clean(self, key: AlertKey, window: str) -> None:
        """An evaluation found the key within bounds; resolve its open alert after enough of these in a row."""
        alert_id = self._open.get(key)
        if alert_id is None:
            return
        streak = self._clean.get(key, 0) + 1
        self._clean[key] = streak
        if streak < self.clear_windows(key[1]):
            return
        row = await self.pool.fetchrow(
            """UPDATE monitor_alerts SET status = 'resolved', resolved_at = now(), updated_at = now()
               WHERE id = $1 AND status = 'open' RETURNING statistic, value, threshold, severity""",
            alert_id,
        )
        del self._open[key]
        self._clean.pop(key, None)
        if row is None:
            return  # resolved elsewhere
        self.resolved += 1
        log.info("alert_resolved", kind=key[0], model=key[1], version=key[2], feature=key[3], window=window)
        await self._announce(
            "resolved", alert_id, key, Breach(row["statistic"], row["value"], row["threshold"], window, row["severity"])
        )

    async def _announce(self, event: str, alert_id: int, key: AlertKey, breach: Breach) -> None:
        kind, model, version, feature = key
        body = {
            "event": event, "id": alert_id, "kind": kind, "model": model, "version": version, "feature": feature,
            "statistic": breach.statistic, "value": breach.value, "threshold": breach.threshold,
            "window": breach.window, "severity": breach.severity, "ts": int(time.time() * 1000),
        }  # fmt: skip
        try:
            await self.publish(kind, body, f"alert-{alert_id}-{event}")
        except Exception as error:  # the row is the record; a lost announcement must not lose the state change
            log.error("alert_publish_failed", alert_id=alert_id, alert_event=event, error=str(error))


async def list_alerts(
    pool: asyncpg.Pool, *, open_only: bool, model: str | None = None, limit: int = 500
) -> list[dict[str, Any]]:
    """Alerts, newest first."""
    rows = await pool.fetch(
        """SELECT * FROM monitor_alerts WHERE ($1::boolean IS FALSE OR status = 'open')
           AND ($2::text IS NULL OR model = $2) ORDER BY raised_at DESC, id DESC LIMIT $3""",
        open_only, model, limit,
    )  # fmt: skip
    return [_row(r) for r in rows]
