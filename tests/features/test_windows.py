"""The pure window maths against a brute-force recomputation."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from services.features.windows import compute_vector, observe
from tests.features.reference import Ev, brute_vector, close
from tests.features.strategies import all_aggs_view, events

VIEW = all_aggs_view()


def _dedup(evs: list[Ev]) -> list[Ev]:
    seen: set[str] = set()
    out = []
    for e in evs:
        if e.id not in seen:
            seen.add(e.id)
            out.append(e)
    return out


@settings(max_examples=200, deadline=None)
@given(evs=events(), shift=st.integers(-5, 40))
def test_compute_vector_matches_brute_force(evs: list[Ev], shift: int) -> None:
    unique = _dedup(evs)
    as_of = max(e.ts for e in unique) + shift
    observations = [observe(VIEW, e.id, e.ts, e.data, order=i) for i, e in enumerate(unique)]
    got = compute_vector(VIEW, observations, as_of)
    want = brute_vector(VIEW, unique, as_of)
    assert got.keys() == want.keys()
    for name in want:
        assert close(got[name], want[name], 1e6), (name, got[name], want[name])


def test_empty_window_takes_defaults() -> None:
    observations = [observe(VIEW, "a", 0, {"amount": 5.0, "merchant": "m"})]
    got = compute_vector(VIEW, observations, 10_000)
    assert got["n_20"] == 0.0 and got["mean_60"] == -1 and got["std_60"] == -4 and got["merchants_20"] == 0.0
    assert got["gap"] == -6 and got["last_amount"] == 5.0


def test_bucket_edges() -> None:
    # n_20 has 4 buckets of 5 ms: as of 24 it holds buckets 1..4, i.e. times 5..24.
    observations = [observe(VIEW, f"e{t}", t, {}) for t in (4, 5, 24)]
    assert compute_vector(VIEW, observations, 24)["n_20"] == 2.0
    assert compute_vector(VIEW, observations, 19)["n_20"] == 2.0  # 24 is in the future then
    assert compute_vector(VIEW, observations, 25)["n_20"] == 1.0
