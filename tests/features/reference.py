"""Brute-force references the features service is checked against: plain loops, no buckets state."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from services.features.views import FeatureView


@dataclass(frozen=True)
class Ev:
    id: str
    ts: int
    data: dict[str, Any] = field(default_factory=dict)


def _in_window(ts: int, as_of: int, bucket_ms: int, buckets: int) -> bool:
    return ts // bucket_ms > as_of // bucket_ms - buckets


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def brute_vector(view: FeatureView, events: Sequence[Ev], as_of: int) -> dict[str, float]:
    """Each feature recomputed from scratch; ``events`` in arrival order (ties in time: later arrival is later)."""
    known = [(i, e) for i, e in enumerate(events) if e.ts <= as_of]
    out: dict[str, float] = {}
    for f in view.features:
        if f.agg in ("last", "time_since_last"):
            ranked = sorted(known, key=lambda pair: (pair[1].ts, pair[0]))
            if f.agg == "last":
                value = _num(ranked[-1][1].data.get(f.field)) if ranked else None
                out[f.name] = f.default if value is None else value
            elif len(ranked) >= 2 and (
                f.window is None or _in_window(ranked[-2][1].ts, as_of, f.window.bucket_ms, f.window.buckets)
            ):
                out[f.name] = float(ranked[-1][1].ts - ranked[-2][1].ts)
            else:
                out[f.name] = f.default
            continue
        assert f.window is not None
        inside = [e for _, e in known if _in_window(e.ts, as_of, f.window.bucket_ms, f.window.buckets)]
        if f.agg == "distinct_count":
            seen = set()
            for e in inside:
                v = e.data.get(f.field)
                if v is not None and v != "":
                    seen.add(str(v))
            out[f.name] = float(len(seen)) if seen else f.default
            continue
        if f.agg == "count" and f.field is None:
            out[f.name] = float(len(inside)) if inside else f.default
            continue
        xs = [x for e in inside if (x := _num(e.data.get(f.field))) is not None]
        if not xs:
            out[f.name] = f.default
        elif f.agg == "count":
            out[f.name] = float(len(xs))
        elif f.agg == "sum":
            out[f.name] = sum(xs)
        elif f.agg == "mean":
            out[f.name] = statistics.fmean(xs)
        elif f.agg == "min":
            out[f.name] = min(xs)
        elif f.agg == "max":
            out[f.name] = max(xs)
        elif f.agg == "stddev":
            out[f.name] = statistics.pstdev(xs)
        else:
            raise AssertionError(f.agg)
    return out


def accepted(events: Sequence[Ev], lateness_ms: int) -> list[Ev]:
    """Which arrivals the streaming path applies: new ids not older than the watermark minus the lateness."""
    applied: list[Ev] = []
    seen: set[str] = set()
    watermark: int | None = None
    for e in events:
        if watermark is not None and e.ts < watermark - lateness_ms:
            continue
        if e.id in seen:
            continue
        seen.add(e.id)
        applied.append(e)
        watermark = e.ts if watermark is None else max(watermark, e.ts)
    return applied


def close(a: float, b: float, scale: float) -> bool:
    """Equal up to float rounding; ``scale`` bounds the magnitude of the inputs (for stddev's cancellation)."""
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9 * max(1.0, scale * scale) ** 0.5 * 1e3)
