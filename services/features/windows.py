"""The window maths, pure: a view's feature vector as of a time, from the events it has seen.

This is the definition the streaming path (a Lua script over time buckets) must
agree with, and what the point-in-time export evaluates for each labelled event.

Notes
-----
For a window ``w`` with ``n`` buckets of ``b`` ms, as of ``T`` an event at ``ts``
(``ts <= T``) counts when ``floor(ts/b) > floor(T/b) - n``. Over the events ``E``
inside the window, with ``x_i`` the numeric values of the feature's field:

- ``count`` = ``|E|`` (events carrying the field, when a field is named);
- ``sum`` = ``Σx``; ``mean`` = ``Σx / k``; ``min``/``max`` of ``x``;
- ``stddev`` = population standard deviation ``sqrt(max(0, Σx²/k - mean²))``;
- ``distinct_count`` = number of distinct values of the field;
- ``last`` = the field of the latest event, ``time_since_last`` = the time between
  the latest event and the one before it (``T`` need not be an event time). "Latest"
  orders by event time, then by arrival (``order``): among equal times the one that
  arrived later is the later one. With a window, the earlier of the two must be in it.

A feature with no contributing events takes its declared default.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from services.features.views import Agg, Feature, FeatureView, categorical, numeric


@dataclass(frozen=True, slots=True)
class Observation:
    """What one event contributes to one view: its time, arrival order and field values."""

    id: str
    ts: int
    order: int
    values: Mapping[str, float] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)


def observe(view: FeatureView, event_id: str, ts: int, data: Mapping[str, Any], order: int = 0) -> Observation:
    """The view's inputs taken out of an event's data (missing or non-numeric fields are left out)."""
    values = {name: v for name in view.numeric_fields if (v := numeric(data.get(name))) is not None}
    labels = {name: c for name in view.distinct_fields if (c := categorical(data.get(name))) is not None}
    return Observation(event_id, ts, order, values, labels)


def _feature_value(feature: Feature, inside: list[Observation]) -> float:
    if feature.agg == Agg.DISTINCT_COUNT:
        assert feature.field is not None
        distinct = {o.labels[feature.field] for o in inside if feature.field in o.labels}
        return float(len(distinct)) if distinct else feature.default
    if feature.agg == Agg.COUNT and feature.field is None:
        return float(len(inside)) if inside else feature.default
    assert feature.field is not None
    xs = [o.values[feature.field] for o in inside if feature.field in o.values]
    if not xs:
        return feature.default
    if feature.agg == Agg.COUNT:
        return float(len(xs))
    if feature.agg == Agg.SUM:
        return math.fsum(xs)
    if feature.agg == Agg.MIN:
        return min(xs)
    if feature.agg == Agg.MAX:
        return max(xs)
    mean = math.fsum(xs) / len(xs)
    if feature.agg == Agg.MEAN:
        return mean
    if feature.agg == Agg.STDDEV:
        return math.sqrt(max(0.0, math.fsum(x * x for x in xs) / len(xs) - mean * mean))
    raise AssertionError(f"unhandled aggregation {feature.agg}")


def _recency_value(feature: Feature, known: list[Observation], as_of: int) -> float:
    ranked = sorted(known, key=lambda o: (o.ts, o.order))
    if feature.agg == Agg.LAST:
        assert feature.field is not None
        latest = ranked[-1] if ranked else None
        if latest is None or feature.field not in latest.values:
            return feature.default
        if feature.window is not None and not feature.window.contains(latest.ts, as_of):
            return feature.default
        return latest.values[feature.field]
    if len(ranked) < 2:
        return feature.default
    previous, latest = ranked[-2], ranked[-1]
    if feature.window is not None and not feature.window.contains(previous.ts, as_of):
        return feature.default
    return float(latest.ts - previous.ts)


def compute_vector(view: FeatureView, observations: Iterable[Observation], as_of: int) -> dict[str, float]:
    """The view's features as of ``as_of`` from the observations with ``ts <= as_of``."""
    known = [o for o in observations if o.ts <= as_of]
    vector: dict[str, float] = {}
    for feature in view.features:
        if feature.agg in (Agg.LAST, Agg.TIME_SINCE_LAST):
            vector[feature.name] = _recency_value(feature, known, as_of)
            continue
        assert feature.window is not None
        window = feature.window
        inside = [o for o in known if window.contains(o.ts, as_of)]
        vector[feature.name] = _feature_value(feature, inside)
    return vector
