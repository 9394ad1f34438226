"""The wire messages of the architecture contract, each a small explicit dataclass.

``from_dict`` checks every field and fails with a :class:`~shared.errors.BadRequest`
naming the field, so a schema change is visible in review and a bad message is
refused with a reason rather than crashing a handler further in.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from shared.errors import BadRequest

Scalar = float | int | str | bool


def _str(body: dict[str, Any], key: str, *, required: bool = True, max_len: int = 256) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise BadRequest(f"field '{key}' is required")
        return None
    if not isinstance(value, str) or not value:
        raise BadRequest(f"field '{key}' must be a non-empty string")
    if len(value) > max_len:
        raise BadRequest(f"field '{key}' is longer than {max_len} characters")
    return value


def _int(body: dict[str, Any], key: str, *, required: bool = True) -> int | None:
    value = body.get(key)
    if value is None:
        if required:
            raise BadRequest(f"field '{key}' is required")
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"field '{key}' must be an integer")
    return value


def _number(body: dict[str, Any], key: str) -> float:
    value = body.get(key)
    if value is None:
        raise BadRequest(f"field '{key}' is required")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadRequest(f"field '{key}' must be a finite number")
    return float(value)


def _map(body: dict[str, Any], key: str, *, required: bool) -> dict[str, Any]:
    value = body.get(key)
    if value is None:
        if required:
            raise BadRequest(f"field '{key}' is required")
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"field '{key}' must be a map")
    return value


@dataclass(frozen=True, slots=True)
class Event:
    """``{"id", "type", "entity", "ts" (ms UTC), "data"}``; ``Nats-Msg-Id`` is the id."""

    id: str
    type: str
    entity: str
    ts: int
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> Event:
        return cls(
            id=_str(body, "id"),  # type: ignore[arg-type]
            type=_str(body, "type", max_len=64),  # type: ignore[arg-type]
            entity=_str(body, "entity"),  # type: ignore[arg-type]
            ts=_int(body, "ts"),  # type: ignore[arg-type]
            data=_map(body, "data", required=False),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class PredictRequest:
    """``{"entity", "features"?, "id"?, "deadline_ms"?}``: deadline is epoch ms UTC."""

    entity: str
    features: dict[str, Scalar] = field(default_factory=dict)
    id: str | None = None
    deadline_ms: int | None = None

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> PredictRequest:
        features = _map(body, "features", required=False)
        for name, value in features.items():
            if not isinstance(value, int | float | str | bool):
                raise BadRequest(f"feature '{name}' must be a number, string or boolean")
            if isinstance(value, float) and not math.isfinite(value):
                raise BadRequest(f"feature '{name}' must be finite")
        return cls(
            entity=_str(body, "entity"),  # type: ignore[arg-type]
            features=features,
            id=_str(body, "id", required=False),
            deadline_ms=_int(body, "deadline_ms", required=False),
        )

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"entity": self.entity}
        if self.features:
            body["features"] = self.features
        if self.id is not None:
            body["id"] = self.id
        if self.deadline_ms is not None:
            body["deadline_ms"] = self.deadline_ms
        return body


@dataclass(frozen=True, slots=True)
class PredictReply:
    """``{"id", "model", "version", "score", "variant", "degraded", "timings_us"}``."""

    id: str
    model: str
    version: int
    score: float
    variant: str
    degraded: bool
    timings_us: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> PredictReply:
        degraded = body.get("degraded")
        if not isinstance(degraded, bool):
            raise BadRequest("field 'degraded' must be a boolean")
        return cls(
            id=_str(body, "id"),  # type: ignore[arg-type]
            model=_str(body, "model", max_len=64),  # type: ignore[arg-type]
            version=_int(body, "version"),  # type: ignore[arg-type]
            score=_number(body, "score"),
            variant=_str(body, "variant", max_len=64),  # type: ignore[arg-type]
            degraded=degraded,
            timings_us={str(k): int(v) for k, v in _map(body, "timings_us", required=False).items()},
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Label:
    """``{"id": prediction or event id, "label": number, "ts": ms, "event_id": str?}`` on ``<ns>.labels.<type>``.

    ``event_id`` is the id of the label event itself (its ``Nats-Msg-Id``), so a
    consumer can drop a redelivered label.
    """

    id: str
    label: float
    ts: int
    event_id: str | None = None

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> Label:
        return cls(
            id=_str(body, "id"),  # type: ignore[arg-type]
            label=_number(body, "label"),
            ts=_int(body, "ts"),  # type: ignore[arg-type]
            event_id=_str(body, "event_id", required=False),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class PredictionRecord:
    """What inference logs on ``<ns>.predictions.<model>`` for every answer, error or shadow run.

    ``variant`` is ``stable``, ``candidate`` or ``shadow``; a shadow run carries the
    same ``id`` as the stable answer it mirrors, so the two can be paired. On an
    error ``score`` is ``None`` and ``error_code`` the code answered.
    """

    id: str
    model: str
    version: int
    variant: str
    entity: str
    ts: int
    score: float | None
    degraded: bool
    latency_us: int
    features: dict[str, float] = field(default_factory=dict)
    error_code: int | None = None
    timings_us: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> PredictionRecord:
        score = body.get("score")
        degraded = body.get("degraded")
        if not isinstance(degraded, bool):
            raise BadRequest("field 'degraded' must be a boolean")
        return cls(
            id=_str(body, "id"),  # type: ignore[arg-type]
            model=_str(body, "model", max_len=64),  # type: ignore[arg-type]
            version=_int(body, "version"),  # type: ignore[arg-type]
            variant=_str(body, "variant", max_len=64),  # type: ignore[arg-type]
            entity=_str(body, "entity"),  # type: ignore[arg-type]
            ts=_int(body, "ts"),  # type: ignore[arg-type]
            score=None if score is None else _number(body, "score"),
            degraded=degraded,
            latency_us=_int(body, "latency_us"),  # type: ignore[arg-type]
            features={str(k): float(v) for k, v in _map(body, "features", required=False).items()},
            error_code=_int(body, "error_code", required=False),
            timings_us={str(k): int(v) for k, v in _map(body, "timings_us", required=False).items()},
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
