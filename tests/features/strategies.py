"""Hypothesis strategies and a small view covering every aggregation, with windows short enough to slide."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from services.features.views import FeatureView, parse_view
from tests.features.reference import Ev

ALL_AGGS_VIEW: dict[str, Any] = {
    "name": "all_aggs",
    "version": 1,
    "source": "transaction",
    "entity": "card",
    "lateness": 25,
    "buckets": 4,
    "features": [
        {"name": "n_20", "agg": "count", "window": 20},
        {"name": "n_amount_60", "agg": "count", "field": "amount", "window": 60, "buckets": 3},
        {"name": "sum_20", "agg": "sum", "field": "amount", "window": 20},
        {"name": "mean_60", "agg": "mean", "field": "amount", "window": 60, "buckets": 3, "default": -1},
        {"name": "min_20", "agg": "min", "field": "amount", "window": 20, "default": -2},
        {"name": "max_7", "agg": "max", "field": "amount", "window": 7, "buckets": 1, "default": -3},
        {"name": "std_60", "agg": "stddev", "field": "amount", "window": 60, "buckets": 3, "default": -4},
        {"name": "qty_sum_20", "agg": "sum", "field": "qty", "window": 20},
        {"name": "merchants_20", "agg": "distinct_count", "field": "merchant", "window": 20},
        {"name": "merchants_60", "agg": "distinct_count", "field": "merchant", "window": 60, "buckets": 6},
        {"name": "countries_9", "agg": "distinct_count", "field": "country", "window": 9, "buckets": 3},
        {"name": "last_amount", "agg": "last", "field": "amount", "default": -5},
        {"name": "gap", "agg": "time_since_last", "default": -6},
        {"name": "gap_20", "agg": "time_since_last", "window": 20, "default": -7},
    ],
}


def all_aggs_view() -> FeatureView:
    return parse_view(ALL_AGGS_VIEW)


amounts = st.one_of(
    st.none(),
    st.integers(-50, 5000).map(lambda cents: cents / 100),
    st.sampled_from([0.0, 1e6, "oops", True]),
)


@st.composite
def events(draw: st.DrawFn, *, max_size: int = 40, base_ts: int = 1_000) -> list[Ev]:
    """Events with mostly increasing times, some reordering, some late and some duplicated ids."""
    n = draw(st.integers(1, max_size))
    out: list[Ev] = []
    ts = base_ts
    for i in range(n):
        ts += draw(st.integers(0, 12))
        jitter = draw(st.sampled_from([0, 0, 0, -3, -10, -30, -80]))
        data: dict[str, Any] = {}
        amount = draw(amounts)
        if amount is not None:
            data["amount"] = amount
        if draw(st.booleans()):
            data["qty"] = draw(st.integers(0, 5))
        merchant = draw(st.sampled_from([None, "m1", "m2", "m3", "m4"]))
        if merchant is not None:
            data["merchant"] = merchant
        data["country"] = draw(st.sampled_from(["FR", "DE", "US"]))
        out.append(Ev(id=f"e{i}", ts=max(0, ts + jitter), data=data))
        if out and draw(st.integers(0, 5)) == 0:
            out.append(out[draw(st.integers(0, len(out) - 1))])  # a duplicate delivery
    return out
