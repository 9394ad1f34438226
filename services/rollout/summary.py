"""The monitor's per-version summary, as rollout's gates read it, and the readers that fetch it.

The gates read nothing but this summary (``<ns>.monitor.summary``, request/reply).
``None`` in any figure means the monitor had too little data to compute it; it is
kept as ``None`` here, never turned into zero, so a gate can hold instead of passing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol

from nats.aio.client import Client

from shared.bus import request
from shared.errors import BadRequest
from shared.subjects import Names


def monitor_summary_subject(names: Names) -> str:
    """The subject the monitor serves its summary on.

    >>> monitor_summary_subject(Names("rtml"))
    'rtml.monitor.summary'
    """
    return f"{names.namespace}.monitor.summary"


def _figure(body: dict[str, Any], key: str) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f"summary field {key!r} must be a number or null, got {value!r}")
    number = float(value)
    return None if math.isnan(number) else number


def _count(body: dict[str, Any], key: str) -> int:
    value = body.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise BadRequest(f"summary field {key!r} must be a non-negative count, got {value!r}")
    return int(value)


@dataclass(frozen=True, slots=True)
class VersionFigures:
    """One version's figures over the window; ``None`` = too little data."""

    predictions: int = 0
    errors: int = 0
    error_rate: float | None = None
    degraded_rate: float | None = None
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    score_mean: float | None = None
    labelled: int = 0
    auc: float | None = None

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> VersionFigures:
        if not isinstance(body, dict):
            raise BadRequest(f"summary version entry must be a map, got {type(body).__name__}")
        return cls(
            predictions=_count(body, "predictions"),
            errors=_count(body, "errors"),
            error_rate=_figure(body, "error_rate"),
            degraded_rate=_figure(body, "degraded_rate"),
            latency_p50_ms=_figure(body, "latency_p50_ms"),
            latency_p99_ms=_figure(body, "latency_p99_ms"),
            score_mean=_figure(body, "score_mean"),
            labelled=_count(body, "labelled"),
            auc=_figure(body, "auc"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "predictions": self.predictions,
            "errors": self.errors,
            "error_rate": self.error_rate,
            "degraded_rate": self.degraded_rate,
            "latency_p50_ms": self.latency_p50_ms,
            "latency_p99_ms": self.latency_p99_ms,
            "score_mean": self.score_mean,
            "labelled": self.labelled,
            "auc": self.auc,
        }


@dataclass(frozen=True, slots=True)
class Comparison:
    """Candidate against stable on the same requests (shadow) or the same window."""

    matched: int = 0
    agreement: float | None = None
    score_psi: float | None = None
    min_samples: int = 0

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> Comparison:
        if not isinstance(body, dict):
            raise BadRequest(f"summary 'comparison' must be a map, got {type(body).__name__}")
        return cls(
            matched=_count(body, "matched"),
            agreement=_figure(body, "agreement"),
            score_psi=_figure(body, "score_psi"),
            min_samples=_count(body, "min_samples"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "matched": self.matched,
            "agreement": self.agreement,
            "score_psi": self.score_psi,
            "min_samples": self.min_samples,
        }


@dataclass(frozen=True, slots=True)
class Summary:
    model: str
    window_s: float
    versions: dict[int, VersionFigures] = field(default_factory=dict)
    comparison: Comparison = field(default_factory=Comparison)

    def figures(self, version: int) -> VersionFigures:
        """The version's figures; an empty entry (all ``None``) when the monitor saw none of it."""
        return self.versions.get(version, VersionFigures())

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> Summary:
        """Parse the monitor's reply.

        >>> s = Summary.from_dict({"model": "m", "window_s": 30, "versions": {"1": {"predictions": 5}}})
        >>> s.figures(1).predictions, s.figures(2).latency_p99_ms
        (5, None)
        """
        raw_versions = body.get("versions", {})
        if not isinstance(raw_versions, dict):
            raise BadRequest("summary 'versions' must be a map")
        versions: dict[int, VersionFigures] = {}
        for key, entry in raw_versions.items():
            try:
                version = int(key)
            except (TypeError, ValueError) as error:
                raise BadRequest(f"summary version key {key!r} is not an integer") from error
            versions[version] = VersionFigures.from_dict(entry)
        window = _figure(body, "window_s")
        return cls(
            model=str(body.get("model", "")),
            window_s=window if window is not None else 0.0,
            versions=versions,
            comparison=Comparison.from_dict(body.get("comparison") or {}),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "window_s": self.window_s,
            "versions": {str(v): f.to_dict() for v, f in sorted(self.versions.items())},
            "comparison": self.comparison.to_dict(),
        }


class SummaryReader(Protocol):
    """Where gates get their figures: the monitor over NATS, or recorded summaries in unit tests."""

    async def read(self, model: str, stable: int, candidate: int, window_s: float) -> Summary: ...


class MonitorSummaryReader:
    """Asks the monitor service over NATS request/reply."""

    def __init__(self, nc: Client, names: Names, *, timeout_s: float = 2.0) -> None:
        self._nc = nc
        self._subject = monitor_summary_subject(names)
        self._timeout_s = timeout_s

    async def read(self, model: str, stable: int, candidate: int, window_s: float) -> Summary:
        body = await request(
            self._nc,
            self._subject,
            {"model": model, "stable": stable, "candidate": candidate, "window_s": window_s},
            timeout_s=self._timeout_s,
        )
        return Summary.from_dict(body)
