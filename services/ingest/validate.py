"""An event map checked against its schema and normalized: the envelope first, then each declared field."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.ingest.normalize import (
    to_amount,
    to_boolean,
    to_category,
    to_currency,
    to_epoch_ms,
    to_integer,
    to_number,
    to_string,
)
from services.ingest.reasons import Reason, Rejection
from services.ingest.schema import EventSchema, FieldSpec

ENVELOPE_KEYS = frozenset({"id", "type", "entity", "ts", "data"})
MAX_ID_LEN = 256
MAX_ENTITY_LEN = 256


@dataclass(frozen=True, slots=True)
class Limits:
    """Event-time bounds relative to now: at most ``max_skew_ms`` ahead, at most ``max_age_ms`` behind (0: none)."""

    max_skew_ms: int = 300_000
    max_age_ms: int = 7 * 86_400_000


@dataclass(frozen=True, slots=True)
class NormalizedEvent:
    id: str
    type: str
    entity: str
    ts: int
    data: dict[str, Any]
    unknown_fields: int
    schema: EventSchema

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, "entity": self.entity, "ts": self.ts, "data": self.data}


def event_id(body: dict[Any, Any]) -> str | None:
    """The event's id if it has a usable one (for dead-letter headers even when the rest is bad)."""
    value = body.get("id")
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str) and 0 < len(value) <= MAX_ID_LEN and _header_safe(value):
        return value
    return None


def normalize_event(body: dict[Any, Any], schema: EventSchema, *, now_ms: int, limits: Limits) -> NormalizedEvent:
    """Check ``body`` (an event map whose subject named ``schema``) and return it normalized.

    Raises :class:`Rejection` on the first problem found, naming the field.
    """
    raw_id = body.get("id")
    if raw_id is None:
        raise Rejection(Reason.MISSING_FIELD, "id", "required field is missing")
    ident = to_string(raw_id, "id")
    if not ident:
        raise Rejection(Reason.MISSING_FIELD, "id", "must not be empty")
    if len(ident) > MAX_ID_LEN or not _header_safe(ident):
        raise Rejection(Reason.BAD_FORMAT, "id", f"must be 1-{MAX_ID_LEN} printable ASCII characters without spaces")
    declared_type = body.get("type")
    if declared_type is not None and declared_type != schema.type:
        raise Rejection(
            Reason.TYPE_MISMATCH, "type", f"body says {str(declared_type)[:64]!r} but the subject says {schema.type!r}"
        )
    raw_entity = body.get("entity")
    if raw_entity is None:
        raise Rejection(Reason.MISSING_FIELD, "entity", "required field is missing")
    entity = to_string(raw_entity, "entity")
    if not entity:
        raise Rejection(Reason.MISSING_FIELD, "entity", "must not be empty")
    if len(entity) > MAX_ENTITY_LEN:
        raise Rejection(Reason.BAD_FORMAT, "entity", f"longer than {MAX_ENTITY_LEN} characters")
    raw_data = body.get("data", {})
    if not isinstance(raw_data, dict):
        raise Rejection(Reason.WRONG_TYPE, "data", f"must be a map, got {type(raw_data).__name__}")
    data, unknown = normalize_data(raw_data, schema)
    unknown += len(body.keys() - ENVELOPE_KEYS)

    raw_ts = body.get("ts")
    if raw_ts is not None:
        ts = to_epoch_ms(raw_ts, "ts")
    elif schema.time_field is not None and schema.time_field in data:
        ts = data[schema.time_field]
    else:
        where = f"ts (or data.{schema.time_field})" if schema.time_field else "ts"
        raise Rejection(Reason.MISSING_FIELD, "ts", f"required field {where} is missing")
    check_event_time(ts, "ts", now_ms=now_ms, limits=limits)
    if schema.hook is not None:
        data = schema.hook(data)
    return NormalizedEvent(
        id=ident, type=schema.type, entity=entity, ts=ts, data=data, unknown_fields=unknown, schema=schema
    )


def check_event_time(ts: int, field: str, *, now_ms: int, limits: Limits) -> None:
    if ts > now_ms + limits.max_skew_ms:
        raise Rejection(
            Reason.FROM_FUTURE,
            field,
            f"{ts} is {ts - now_ms} ms ahead of now, more than the {limits.max_skew_ms} ms allowed",
        )
    if limits.max_age_ms and ts < now_ms - limits.max_age_ms:
        raise Rejection(Reason.TOO_OLD, field, f"{ts} is older than the {limits.max_age_ms} ms allowed")


def normalize_data(raw: dict[Any, Any], schema: EventSchema) -> tuple[dict[str, Any], int]:
    """The declared fields normalized (money after its currency), and how many unknown fields were dropped."""
    unknown = len(raw.keys() - schema.known_keys)
    data: dict[str, Any] = {}
    for spec in schema.plain_fields:
        value = raw.get(spec.name)
        if value.__class__ is str and spec.kind != "string" and not value.strip():
            value = None  # an empty string is an absent value for anything but free text
        if value is None:
            if spec.required:
                raise Rejection(Reason.MISSING_FIELD, spec.path, "required field is missing")
            continue
        data[spec.name] = normalize_value(value, spec)
    for spec in schema.money_fields:
        major, minor = raw.get(spec.name), raw.get(f"{spec.name}_minor")
        if major is None and minor is None:
            if spec.required:
                raise Rejection(Reason.MISSING_FIELD, spec.path, f"required field is missing (or {spec.name}_minor)")
            continue
        currency = data.get(spec.currency_field or "")
        if currency is None:
            raise Rejection(Reason.MISSING_FIELD, f"data.{spec.currency_field}", "an amount needs its currency")
        amount, amount_minor = to_amount(major, minor, currency, spec.path)
        _check_bounds(amount, spec)
        data[spec.name] = amount
        data[f"{spec.name}_minor"] = amount_minor
    return data, unknown


def normalize_value(value: Any, spec: FieldSpec) -> Any:
    """One declared field's value, normalized for its kind and checked against its bounds."""
    kind = spec.kind
    if kind in {"string", "category"}:
        if value.__class__ is str:
            result = value.strip().lower() if kind == "category" else value.strip()
        else:
            result = to_category(value, spec.path) if kind == "category" else to_string(value, spec.path)
        if not result and spec.required:
            raise Rejection(Reason.MISSING_FIELD, spec.path, "must not be empty")
        if len(result) > spec.max_len:
            raise Rejection(Reason.BAD_FORMAT, spec.path, f"longer than {spec.max_len} characters")
        if spec.pattern is not None and not spec.pattern.search(result):
            raise Rejection(Reason.BAD_FORMAT, spec.path, f"{result[:40]!r} does not match {spec.pattern.pattern!r}")
        _check_enum(result, spec)
        return result
    if isinstance(value, dict | list | tuple | bytes | bytearray):
        raise Rejection(Reason.WRONG_TYPE, spec.path, f"must be a {kind}, got {type(value).__name__}")
    converted: Any
    if kind == "number":
        converted = to_number(value, spec.path)
        _check_bounds(converted, spec)
    elif kind == "integer":
        converted = to_integer(value, spec.path)
        _check_bounds(converted, spec)
    elif kind == "boolean":
        converted = to_boolean(value, spec.path)
    elif kind == "timestamp":
        converted = to_epoch_ms(value, spec.path)
        _check_bounds(converted, spec)
    else:
        converted = to_currency(value, spec.path)
        _check_enum(converted, spec)
    return converted


def _check_bounds(value: float, spec: FieldSpec) -> None:
    if spec.minimum is not None and value < spec.minimum:
        raise Rejection(Reason.OUT_OF_RANGE, spec.path, f"{value!r} is below the minimum {spec.minimum:g}")
    if spec.maximum is not None and value > spec.maximum:
        raise Rejection(Reason.OUT_OF_RANGE, spec.path, f"{value!r} is above the maximum {spec.maximum:g}")


def _check_enum(value: str, spec: FieldSpec) -> None:
    if spec.enum is not None and value not in spec.enum:
        raise Rejection(Reason.NOT_ALLOWED, spec.path, f"{value[:40]!r} is not one of {sorted(spec.enum)}")


def _header_safe(value: str) -> bool:
    return value.isascii() and value.isprintable() and " " not in value
