"""The bounded windows against a brute-force reference: a list that keeps the last N items."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from services.monitor.windows import LruMap, PredictionLog, RowWindow


@given(st.integers(1, 40), st.lists(st.integers(0, 5), min_size=0, max_size=120), st.integers(1, 8))
@settings(max_examples=150, deadline=None)
def test_prediction_log_keeps_the_last_capacity_records(capacity: int, versions: list[int], initial: int) -> None:
    log = PredictionLog(capacity=capacity, initial=initial)
    kept: list[tuple[str, int, int]] = []
    for i, version in enumerate(versions):
        variant = "shadow" if i % 3 == 0 else "stable"
        log.append(f"id{i}", i, version, None if i % 5 == 0 else i / 1000, latency_us=i, error=i % 5 == 0,
                   degraded=False, variant=variant)  # fmt: skip
        kept = [*kept, (f"id{i}", i, version)][-capacity:]
    cutoff = len(versions) // 2
    part = log.since(cutoff)
    expected = [k for k in kept if k[1] >= cutoff]
    assert part.ids == [k[0] for k in expected]
    assert part.versions.tolist() == [k[2] for k in expected]
    assert part.latency_us.tolist() == [k[1] for k in expected]
    assert [part.variant_names[c] for c in part.variants.tolist()] == [
        "shadow" if k[1] % 3 == 0 else "stable" for k in expected
    ]
    assert len(log) == len(kept)


@given(st.integers(1, 30), st.lists(st.integers(1, 12), min_size=0, max_size=20))
@settings(max_examples=150, deadline=None)
def test_row_window_extend_equals_appends(capacity: int, chunks: list[int]) -> None:
    by_row, by_batch = RowWindow(capacity=capacity, width=2), RowWindow(capacity=capacity, width=2)
    t = 0
    for size in chunks:
        rows = np.arange(t, t + size, dtype=np.float64).repeat(2).reshape(size, 2)
        for k in range(size):
            by_row.append(t + k, rows[k].tolist())
        by_batch.extend(np.arange(t, t + size), rows)
        t += size
    np.testing.assert_array_equal(by_row.last(capacity), by_batch.last(capacity))
    np.testing.assert_array_equal(by_row.since(t // 2), by_batch.since(t // 2))


def test_lru_map_is_bounded() -> None:
    m: LruMap[int, int] = LruMap(100)
    for i in range(1000):
        m[i] = i
    assert len(m) == 100 and m.get(899) is None and m.get(999) == 999
