"""The shared conformance checks over every streaming detector, the calibration maths and the bank."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.monitor.detectors import ADWIN, Cusum, Detector, PageHinkley
from services.monitor.detectors.bank import ERROR_RATE, OTHER, BankConfig, DetectorBank
from services.monitor.detectors.calibration import (
    bernoulli_increments,
    gaussian_increments,
    run_length,
    threshold_for_run_length,
)

FACTORIES: dict[str, Callable[[], Detector]] = {
    "adwin": ADWIN,
    "page_hinkley": lambda: PageHinkley(delta=0.25, threshold=20.0),
    "cusum": lambda: Cusum(mean=0.0, std=1.0, k=0.5, h=8.0),
}


def _alarms(detector: Detector, values: list[float]) -> list[int]:
    found = []
    for i, x in enumerate(values):
        detector.update(x)
        if detector.drift_detected:
            found.append(i)
    return found


def _step(seed: int, n: int = 4000, change: int = 2000, shift: float = 2.0) -> list[float]:
    rng = random.Random(seed)
    return [rng.gauss(shift if i >= change else 0.0, 1.0) for i in range(n)]


@pytest.fixture(params=sorted(FACTORIES))
def make(request: pytest.FixtureRequest) -> Callable[[], Detector]:
    return FACTORIES[request.param]


def test_follows_the_protocol(make: Callable[[], Detector]) -> None:
    detector = make()
    assert isinstance(detector, Detector)
    assert detector.drift_detected is False


def test_quiet_on_a_constant_stream(make: Callable[[], Detector]) -> None:
    assert _alarms(make(), [0.0] * 3000) == []


@pytest.mark.parametrize("seed", range(5))
def test_detects_a_two_sd_step_soon_after_it(make: Callable[[], Detector], seed: int) -> None:
    alarms = [a for a in _alarms(make(), _step(seed)) if a >= 2000]
    assert alarms and alarms[0] < 2300


@pytest.mark.parametrize("seed", range(3))
def test_detects_a_downward_step(make: Callable[[], Detector], seed: int) -> None:
    alarms = [a for a in _alarms(make(), _step(seed, shift=-2.0)) if a >= 2000]
    assert alarms and alarms[0] < 2300


def test_reset_gives_a_fresh_detector(make: Callable[[], Detector]) -> None:
    values = _step(11)
    used = make()
    _alarms(used, _step(12)[:2500])
    used.reset()
    assert used.drift_detected is False
    assert _alarms(used, values) == _alarms(make(), values)


def test_signal_lasts_one_update(make: Callable[[], Detector]) -> None:
    detector = make()
    values = _step(5)
    for x in values:
        detector.update(x)
        if detector.drift_detected:
            detector.update(0.0)  # back at the reference: the signal is not repeated
            assert detector.drift_detected is False
            break
    else:
        pytest.fail(f"no alarm in {len(values)} values")


def test_cusum_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError, match="std"):
        Cusum(mean=0.0, std=0.0, k=0.5, h=4.0)
    with pytest.raises(ValueError, match="thresholds"):
        Cusum(mean=0.0, std=1.0, k=0.5, h=-1.0)
    with pytest.raises(ValueError, match="mean"):
        Cusum(mean=math.nan, std=1.0, k=0.5, h=4.0)


def test_cusum_matches_the_recursion_by_hand() -> None:
    rng = np.random.default_rng(0)
    xs = rng.normal(3.0, 2.0, 500)
    detector = Cusum(mean=3.0, std=2.0, k=0.3, h=1e9)
    upper = lower = 0.0
    for x in xs:
        z = (x - 3.0) / 2.0
        upper, lower = max(0.0, upper + z - 0.3), max(0.0, lower - z - 0.3)
        detector.update(float(x))
        assert detector.upper == pytest.approx(upper) and detector.lower == pytest.approx(lower)


def _mc_run_length(draw: Callable[[np.random.Generator, int], np.ndarray], k: float, h: float, runs: int) -> float:
    """Monte-Carlo mean run length of an upper CUSUM (vectorized over runs)."""
    rng = np.random.default_rng(42)
    s = np.zeros(runs)
    stopped = np.zeros(runs, dtype=np.int64)
    t = 0
    while (stopped == 0).any() and t < 200_000:
        t += 1
        s = np.maximum(0.0, s + draw(rng, runs) - k)
        newly = (s > h) & (stopped == 0)
        stopped[newly] = t
    return float(stopped.mean())


def test_siegmund_run_length_is_close_to_simulation_gaussian() -> None:
    h = threshold_for_run_length(gaussian_increments(0.5), 400.0)
    simulated = _mc_run_length(lambda rng, n: rng.standard_normal(n), 0.5, h, 3000)
    assert simulated == pytest.approx(400.0, rel=0.1)


@pytest.mark.parametrize("p", [0.03, 0.1, 0.3])
def test_siegmund_run_length_is_close_to_simulation_bernoulli(p: float) -> None:
    sd = math.sqrt(p * (1 - p))
    increments = bernoulli_increments(p, 0.25, upward=True)
    # the tilt makes the increments a martingale: E[exp(theta y)] = 1
    theta = increments.theta
    assert p * math.exp(theta * ((1 - p) / sd - 0.25)) + (1 - p) * math.exp(theta * (-p / sd - 0.25)) == (
        pytest.approx(1.0)
    )
    h = threshold_for_run_length(increments, 600.0)
    simulated = _mc_run_length(lambda rng, n: ((rng.random(n) < p) - p) / sd, 0.25, h, 2000)
    # without overshoot correction the approximation errs on the side of fewer false alarms
    assert 600.0 * 0.9 < simulated < 600.0 * 2.0


def test_gaussian_tilt_is_twice_the_allowance() -> None:
    assert gaussian_increments(0.3).theta == pytest.approx(0.6)
    assert run_length(gaussian_increments(0.3), 10.0) < run_length(gaussian_increments(0.3), 11.0)


def test_bank_thresholds_grow_with_the_family() -> None:
    small = DetectorBank(numeric={"a": (0.0, 1.0)})
    large = DetectorBank(numeric={f"f{i}": (0.0, 1.0) for i in range(50)})
    assert large.numeric["f0"].h > small.numeric["a"].h
    assert large.sides == 100 and small.sides == 2


def test_bank_pools_rare_categories_and_routes_unknown_ones_there() -> None:
    bank = DetectorBank(categorical={"country": {"FR": 0.7, "DE": 0.298, "LU": 0.002}})
    assert set(bank.categorical["country"]) == {"FR", "DE", OTHER}
    before = bank.categorical["country"][OTHER].upper
    bank.update_category("country", "never-seen")
    assert bank.categorical["country"][OTHER].upper > before


def test_rare_category_gets_a_higher_rise_threshold_than_a_common_one() -> None:
    bank = DetectorBank(categorical={"c": {"common": 0.5, "rare": 0.02, "x": 0.48}})
    assert bank.categorical["c"]["rare"].h > bank.categorical["c"]["common"].h


def test_bank_detects_a_category_share_rise() -> None:
    rng = random.Random(1)
    shares = {str(i): 0.1 for i in range(10)}
    bank = DetectorBank(categorical={"cat": shares})
    first = None
    for t in range(6000):
        weights = [0.2 if (t >= 3000 and i == 0) else (0.8 / 9 if t >= 3000 else 0.1) for i in range(10)]
        alarm = bank.update_category("cat", str(rng.choices(range(10), weights)[0]))
        if alarm is not None and first is None:
            first = (t, alarm)
    assert first is not None and first[0] >= 3000
    assert first[1].signal == "cat=0" and first[1].direction == 1


def test_bank_error_rate_watches_rises_only() -> None:
    bank = DetectorBank(error_rate=0.05)
    assert bank.error is not None and math.isinf(bank.error.h_down)
    assert all(bank.update_error(False) is None for _ in range(20_000))
    alarms = [bank.update_error(True) for _ in range(200)]
    fired = [a for a in alarms if a is not None]
    assert fired and fired[0].feature == ERROR_RATE and fired[0].direction == 1


def test_bank_ignores_unknown_features_and_non_finite_values() -> None:
    bank = DetectorBank(numeric={"a": (0.0, 1.0)})
    assert bank.update_row({"zzz": 1.0, "a": math.nan}) == []
    assert bank.numeric["a"].n == 0


def test_bank_config_is_validated() -> None:
    with pytest.raises(ValueError, match="family_alpha"):
        BankConfig(family_alpha=0.0)
    with pytest.raises(ValueError, match="error_rate_shift"):
        BankConfig(error_rate_shift=-1.0)


@given(
    st.lists(st.floats(-4, 4, allow_nan=False), min_size=0, max_size=300),
    st.floats(0.0, 1.0),
    st.floats(0.5, 6.0),
    st.integers(1, 50),
)
@settings(max_examples=200, deadline=None)
def test_cusum_batch_update_equals_one_by_one(values: list[float], k: float, h: float, chunk: int) -> None:
    one, many = Cusum(mean=0.1, std=1.3, k=k, h=h), Cusum(mean=0.1, std=1.3, k=k, h=h, h_down=h)
    expected = []
    for i, x in enumerate(values):
        one.update(x)
        if one.drift_detected:
            expected.append(i)
    found: list[int] = []
    for start in range(0, len(values), chunk):
        found.extend(start + i for i in many.update_many(values[start : start + chunk]))
    assert found == expected
    assert many.upper == pytest.approx(one.upper, abs=1e-9) and many.lower == pytest.approx(one.lower, abs=1e-9)
    assert (many.n, many.drift_detected) == (one.n, one.drift_detected)


def test_bank_batch_updates_match_row_updates() -> None:
    rng = random.Random(4)
    shares = {"a": 0.5, "b": 0.3, "c": 0.2}
    rows = [
        {
            "x": rng.gauss(0.8 if t > 1500 else 0.0, 1.0),
            "c": rng.choices("abcz", [0.2, 0.3, 0.5, 0.0 if t < 2000 else 0.2])[0],
        }
        for t in range(4000)
    ]
    by_row = DetectorBank(numeric={"x": (0.0, 1.0)}, categorical={"c": shares})
    expected = [(t, a.signal, a.direction) for t, row in enumerate(rows) for a in by_row.update_row(row)]
    batched = DetectorBank(numeric={"x": (0.0, 1.0)}, categorical={"c": shares})
    found = []
    for start in range(0, len(rows), 256):
        part = rows[start : start + 256]
        alarms = batched.update_numeric_many("x", np.array([r["x"] for r in part]))
        alarms += batched.update_category_many("c", [str(r["c"]) for r in part])
        found += [(start + p, a.signal, a.direction) for p, a in alarms]
    # a row reports one alarm per feature and event (the first category's); the batch reports each
    first: dict[tuple[int, str], tuple[int, str, int]] = {}
    for t, signal, direction in found:
        first.setdefault((t, signal.split("=")[0]), (t, signal, direction))
    assert expected and sorted(first.values()) == sorted(expected)
