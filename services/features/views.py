"""Feature views as data: what to aggregate, over which windows, for which entity.

A view reads one source event type, keys its state by an entity (the event's own
``entity`` or a field of its ``data``) and declares features, each an aggregation
of one field over a sliding window. Views are plain dicts (YAML in a file named by
``RTML_FEATURES_VIEWS``), parsed and checked here, so a user adds a view without
touching service code.

Windows are bucketed: a window of width ``W`` is split into ``buckets`` buckets of
``b = W / buckets`` milliseconds. As of time ``T`` the window holds the events whose
bucket ``floor(ts / b)`` lies in ``(floor(T / b) - buckets, floor(T / b)]``, so it
covers between ``W - b`` and ``W`` of history. The online store and the offline
export use the same rule, which is what makes them agree exactly.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from shared.subjects import check_token


class ViewError(ValueError):
    """A view definition is malformed; the message names the view and the field."""


class Agg(StrEnum):
    COUNT = "count"
    SUM = "sum"
    MEAN = "mean"
    MIN = "min"
    MAX = "max"
    STDDEV = "stddev"
    DISTINCT_COUNT = "distinct_count"
    LAST = "last"
    TIME_SINCE_LAST = "time_since_last"


# Aggregations over a numeric field's per-bucket statistics.
NUMERIC_AGGS = frozenset({Agg.SUM, Agg.MEAN, Agg.MIN, Agg.MAX, Agg.STDDEV})
# Aggregations that need no window (the window, when given, bounds the previous event).
RECENCY_AGGS = frozenset({Agg.LAST, Agg.TIME_SINCE_LAST})

_DURATION = re.compile(r"^(\d+)(ms|s|m|h|d)$")
_UNIT_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def parse_duration_ms(text: str | int) -> int:
    """``"5m"`` -> 300000; an int is taken as milliseconds.

    >>> parse_duration_ms("1h"), parse_duration_ms("250ms"), parse_duration_ms(7)
    (3600000, 250, 7)
    """
    if isinstance(text, int) and not isinstance(text, bool):
        if text <= 0:
            raise ViewError(f"duration {text} must be positive")
        return text
    match = _DURATION.match(str(text).strip())
    if not match or int(match.group(1)) == 0:
        raise ViewError(f"duration {text!r} must look like 500ms, 10s, 5m, 1h or 7d and be positive")
    return int(match.group(1)) * _UNIT_MS[match.group(2)]


@dataclass(frozen=True, slots=True)
class Window:
    """A sliding window of ``width_ms`` split into ``buckets`` buckets."""

    width_ms: int
    buckets: int

    @property
    def bucket_ms(self) -> int:
        return self.width_ms // self.buckets

    def bucket(self, ts: int) -> int:
        """The bucket number of an event time (floor division, so negative times work too)."""
        return ts // self.bucket_ms

    def contains(self, ts: int, as_of: int) -> bool:
        """Whether an event at ``ts`` is inside the window as of ``as_of`` (``ts <= as_of`` assumed).

        >>> w = Window(60_000, 6)
        >>> w.contains(0, 59_999), w.contains(0, 60_000), w.contains(9_999, 60_000)
        (True, False, False)
        """
        return self.bucket(ts) > self.bucket(as_of) - self.buckets


@dataclass(frozen=True, slots=True)
class Feature:
    """One feature: ``agg`` of ``field`` over ``window`` (``None``: recency features only)."""

    name: str
    agg: Agg
    field: str | None
    window: Window | None
    default: float = 0.0


@dataclass(frozen=True, slots=True)
class FeatureView:
    """A versioned group of features over one entity of one source event type."""

    name: str
    version: int
    source: str
    entity: str
    entity_field: str
    features: tuple[Feature, ...]
    ttl_ms: int
    lateness_ms: int
    definition: Mapping[str, Any] = field(compare=False, repr=False, default_factory=dict)

    @property
    def windows(self) -> tuple[Window, ...]:
        """The distinct windows of bucketed (count and numeric) features, in a stable order."""
        seen: dict[Window, None] = {}
        for feature in self.features:
            if feature.window is not None and feature.agg not in RECENCY_AGGS and feature.agg != Agg.DISTINCT_COUNT:
                seen.setdefault(feature.window, None)
        return tuple(seen)

    @property
    def numeric_fields(self) -> tuple[str, ...]:
        """Fields whose numeric statistics the buckets keep (``count`` of a field counts it too)."""
        seen: dict[str, None] = {}
        for feature in self.features:
            if feature.field is not None and feature.agg != Agg.DISTINCT_COUNT:
                seen.setdefault(feature.field, None)
        return tuple(seen)

    @property
    def distinct_fields(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for feature in self.features:
            if feature.agg == Agg.DISTINCT_COUNT:
                assert feature.field is not None
                seen.setdefault(feature.field, None)
        return tuple(seen)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(feature.name for feature in self.features)

    @property
    def defaults(self) -> dict[str, float]:
        return {feature.name: feature.default for feature in self.features}

    @property
    def fingerprint(self) -> str:
        """sha256 of the canonical definition: a changed definition under the same version is refused."""
        canonical = json.dumps(self.definition, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def entity_of(self, entity: str, data: Mapping[str, Any]) -> str | None:
        """The entity an event belongs to in this view, ``None`` when the event lacks it."""
        if self.entity_field == "entity":
            return entity
        value = data.get(self.entity_field)
        if value is None or isinstance(value, bool | dict | list) or value == "":
            return None
        return str(value)


def numeric(value: Any) -> float | None:
    """A field value as a float, ``None`` when it is missing or not a finite number.

    >>> numeric(3), numeric("3"), numeric(True), numeric(float("nan"))
    (3.0, None, None, None)
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    result = float(value)
    return result if math.isfinite(result) else None


def categorical(value: Any) -> str | None:
    """A field value as the string a distinct count keys on, ``None`` when missing."""
    if value is None or isinstance(value, dict | list) or value == "":
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _require(body: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in body:
        raise ViewError(f"{where}: '{key}' is required")
    return body[key]


def _parse_feature(body: Mapping[str, Any], where: str, buckets: int) -> Feature:
    if not isinstance(body, Mapping):
        raise ViewError(f"{where}: each feature must be a map")
    name = str(_require(body, "name", where))
    where = f"{where} feature {name!r}"
    if not _FIELD.match(name):
        raise ViewError(f"{where}: name must be letters, digits and _ (at most 64)")
    try:
        agg = Agg(str(_require(body, "agg", where)))
    except ValueError as error:
        raise ViewError(f"{where}: agg must be one of {', '.join(a.value for a in Agg)}") from error
    field_name = body.get("field")
    if field_name is not None and (not isinstance(field_name, str) or not _FIELD.match(field_name)):
        raise ViewError(f"{where}: field must be a data key (letters, digits and _)")
    if (agg in NUMERIC_AGGS or agg in {Agg.DISTINCT_COUNT, Agg.LAST}) and field_name is None:
        raise ViewError(f"{where}: {agg.value} needs a field")
    if agg == Agg.TIME_SINCE_LAST and field_name is not None:
        raise ViewError(f"{where}: time_since_last takes no field")
    window: Window | None = None
    if "window" in body:
        width = parse_duration_ms(body["window"])
        n = int(body.get("buckets", buckets))
        if n < 1 or width % n:
            raise ViewError(f"{where}: window {body['window']} must split into {n} whole-millisecond buckets")
        window = Window(width, n)
    elif agg not in RECENCY_AGGS:
        raise ViewError(f"{where}: {agg.value} needs a window")
    default = body.get("default", 0.0)
    if isinstance(default, bool) or not isinstance(default, int | float) or numeric(default) is None:
        raise ViewError(f"{where}: default must be a finite number")
    return Feature(name=name, agg=agg, field=field_name, window=window, default=float(default))


def parse_view(body: Mapping[str, Any]) -> FeatureView:
    """Check and build one view from its definition.

    >>> v = parse_view({"name": "v", "version": 1, "source": "transaction", "entity": "card",
    ...                 "features": [{"name": "n_1m", "agg": "count", "window": "1m"}]})
    >>> v.windows, v.ttl_ms
    ((Window(width_ms=60000, buckets=12),), 3720000)
    """
    if not isinstance(body, Mapping):
        raise ViewError("a view must be a map")
    name = str(_require(body, "name", "view"))
    where = f"view {name!r}"
    try:
        check_token("view", name)
    except ValueError as error:
        raise ViewError(str(error)) from error
    version = body.get("version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ViewError(f"{where}: version must be a positive integer")
    source = str(_require(body, "source", where))
    try:
        check_token("source", source)
    except ValueError as error:
        raise ViewError(f"{where}: {error}") from error
    entity = str(_require(body, "entity", where))
    entity_field = str(body.get("entity_field", "entity"))
    if entity_field != "entity" and not _FIELD.match(entity_field):
        raise ViewError(f"{where}: entity_field must be 'entity' or a data key")
    buckets = body.get("buckets", 12)
    if isinstance(buckets, bool) or not isinstance(buckets, int) or not 1 <= buckets <= 120:
        raise ViewError(f"{where}: buckets must be an integer between 1 and 120")
    raw_features = _require(body, "features", where)
    if not isinstance(raw_features, Sequence) or isinstance(raw_features, str) or not raw_features:
        raise ViewError(f"{where}: features must be a non-empty list")
    features = tuple(_parse_feature(item, where, buckets) for item in raw_features)
    names = [feature.name for feature in features]
    if len(set(names)) != len(names):
        raise ViewError(f"{where}: feature names must be unique")
    lateness_ms = parse_duration_ms(body.get("lateness", "1m"))
    longest = max((f.window.width_ms for f in features if f.window is not None), default=0)
    ttl_ms = parse_duration_ms(body["ttl"]) if "ttl" in body else longest + lateness_ms + 3_600_000
    if ttl_ms < longest + lateness_ms:
        raise ViewError(f"{where}: ttl must cover the longest window plus the lateness ({longest + lateness_ms} ms)")
    definition = json.loads(json.dumps(dict(body), default=str))
    return FeatureView(
        name=name,
        version=version,
        source=source,
        entity=entity,
        entity_field=entity_field,
        features=features,
        ttl_ms=ttl_ms,
        lateness_ms=lateness_ms,
        definition=definition,
    )


def parse_views(bodies: Iterable[Mapping[str, Any]]) -> dict[str, FeatureView]:
    """Several views by name; a later definition of the same name replaces an earlier one."""
    views: dict[str, FeatureView] = {}
    for body in bodies:
        view = parse_view(body)
        views[view.name] = view
    return views
