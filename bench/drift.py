"""Detection delay and false alarms of the monitor's streaming detectors on seeded simulated streams.

Stream: 20 numeric N(0, 1) features, one categorical feature with 10 categories
of 10% each, and an error indicator at 5% (one labelled prediction per event).
Scenarios (change at event 50,000 of 100,000):

- ``mean``: feature x0 shifts by +0.25 standard deviations;
- ``category``: category "0" rises from 10% to 20% (the others shrink evenly);
- ``error``: the error rate rises from 5% to 8%;
- ``null``: nothing changes (false alarms over the whole stream and every signal).

Each detector alone watches the changed signal (and, for the null stream, one
instance watches each of the 31 signals); the default ``DetectorBank`` watches
every signal of every event at once. Delay = first alarm on the changed
feature at or after the change, minus the change point; a replicate without one
counts as not detected (its delay is the events left in the stream).

    .venv/bin/python bench/drift.py            # 20 replicates
    .venv/bin/python bench/drift.py --quick    # 5 replicates, 10,000 events before the change
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Callable

import numpy as np

from services.monitor.detectors import ADWIN, Cusum, Detector, PageHinkley
from services.monitor.detectors.bank import ERROR_RATE, DetectorBank

N_NUMERIC = 20
N_CATEGORIES = 10
ERROR_P = 0.05
SCENARIO_SEED = {"mean": 1, "category": 2, "error": 3}
SHARE = {str(c): 1.0 / N_CATEGORIES for c in range(N_CATEGORIES)}


def make_bank() -> DetectorBank:
    return DetectorBank(
        numeric={f"x{i}": (0.0, 1.0) for i in range(N_NUMERIC)}, categorical={"cat": SHARE}, error_rate=ERROR_P
    )


def single_cusum(signal: str) -> Cusum:
    """A CUSUM calibrated as if it were the only signal watched (same budget, one signal)."""
    if signal == "numeric":
        return DetectorBank(numeric={"x": (0.0, 1.0)}).numeric["x"]
    if signal == "category":
        return DetectorBank(categorical={"c": {"a": 0.1, "b": 0.9}}).categorical["c"]["a"]
    bank = DetectorBank(error_rate=ERROR_P)
    assert bank.error is not None
    return bank.error


SINGLE: dict[str, Callable[[str], Detector]] = {
    "adwin": lambda signal: ADWIN(),
    "page_hinkley": lambda signal: PageHinkley(),
    "cusum": single_cusum,
}


def stream(seed: int, n: int, change: int, scenario: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, N_NUMERIC))
    if scenario == "mean":
        x[change:, 0] += 0.25
    before = np.full(N_CATEGORIES, 1.0 / N_CATEGORIES)
    after = before.copy()
    if scenario == "category":
        after = np.full(N_CATEGORIES, 0.8 / (N_CATEGORIES - 1))
        after[0] = 0.2
    cat = np.concatenate([rng.choice(N_CATEGORIES, change, p=before), rng.choice(N_CATEGORIES, n - change, p=after)])
    p_error = np.where(np.arange(n) >= change, 0.08 if scenario == "error" else ERROR_P, ERROR_P)
    errors = rng.random(n) < p_error
    return x, cat, errors


def signal_values(scenario: str, x: np.ndarray, cat: np.ndarray, errors: np.ndarray) -> tuple[str, np.ndarray]:
    if scenario == "mean":
        return "numeric", x[:, 0]
    if scenario == "category":
        return "category", (cat == 0).astype(np.float64)
    return "error", errors.astype(np.float64)


def first_alarm(detector: Detector, values: np.ndarray, start: int) -> int | None:
    for t, value in enumerate(values.tolist()):
        detector.update(value)
        if detector.drift_detected and t >= start:
            return t
    return None


def run_bank(
    x: np.ndarray, cat: np.ndarray, errors: np.ndarray, watch: str | None, start: int
) -> tuple[int | None, int]:
    """First alarm on feature ``watch`` at or after ``start``, and every alarm on other features (false)."""
    bank = make_bank()
    names = [f"x{i}" for i in range(N_NUMERIC)]
    false_alarms = 0
    update_numeric, update_category, update_error = bank.update_numeric, bank.update_category, bank.update_error
    for t, (row, c, e) in enumerate(zip(x.tolist(), cat.tolist(), errors.tolist(), strict=True)):
        alarms = [update_numeric(name, value) for name, value in zip(names, row, strict=True)]
        alarms.append(update_category("cat", str(c)))
        alarms.append(update_error(bool(e)))
        for alarm in alarms:
            if alarm is None:
                continue
            if alarm.feature == watch and t >= start:
                return t, false_alarms
            if alarm.feature != watch or t < start:
                false_alarms += 1
    return None, false_alarms


def delays(replicates: int, n: int, change: int) -> dict[str, dict[str, float]]:
    watched = {"mean": "x0", "category": "cat", "error": ERROR_RATE}
    out: dict[str, dict[str, float]] = {}
    for scenario in ("mean", "category", "error"):
        found: dict[str, list[int]] = {name: [] for name in [*SINGLE, "bank"]}
        bank_false = 0
        for seed in range(replicates):
            x, cat, errors = stream(1000 * seed + SCENARIO_SEED[scenario], n, change, scenario)
            signal, values = signal_values(scenario, x, cat, errors)
            for name, make in SINGLE.items():
                t = first_alarm(make(signal), values, change)
                found[name].append((t if t is not None else n) - change)
            t, false = run_bank(x, cat, errors, watched[scenario], change)
            found["bank"].append((t if t is not None else n) - change)
            bank_false += false
        for name, values_found in found.items():
            out.setdefault(name, {})[f"{scenario}_median_delay_events"] = float(statistics.median(values_found))
            out[name][f"{scenario}_undetected"] = float(sum(v >= n - change for v in values_found))
        out["bank"][f"{scenario}_other_alarms"] = float(bank_false)
    return out


def false_alarms(replicates: int, n: int) -> dict[str, float]:
    counts = {name: 0 for name in [*SINGLE, "bank"]}
    for seed in range(replicates):
        x, cat, errors = stream(777_000 + seed, n, n, "null")
        signals: list[tuple[str, np.ndarray]] = [("numeric", x[:, i]) for i in range(N_NUMERIC)]
        signals += [("category", (cat == c).astype(np.float64)) for c in range(N_CATEGORIES)]
        signals.append(("error", errors.astype(np.float64)))
        for name, make in SINGLE.items():
            for signal, values in signals:
                detector = make(signal)
                for value in values.tolist():
                    detector.update(value)
                    counts[name] += detector.drift_detected
        _, false = run_bank(x, cat, errors, None, n)
        counts["bank"] += false
    return {name: float(c) for name, c in counts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5 replicates, 10,000 events before the change")
    parser.add_argument("--replicates", type=int, default=20)
    args = parser.parse_args()
    replicates = 5 if args.quick else args.replicates
    change = 10_000 if args.quick else 50_000
    n = change + 50_000
    started = time.perf_counter()
    result = delays(replicates, n, change)
    null = false_alarms(1, 100_000)
    elapsed = time.perf_counter() - started
    bank = make_bank()
    print(f"streams: {N_NUMERIC} numeric + 1 categorical ({N_CATEGORIES} categories) + error rate; "
          f"change at {change} of {n}; {replicates} replicates; bank of {bank.sides} one-sided CUSUMs, "
          f"in-control run length per feature {bank.target_run_length:.3g} events")  # fmt: skip
    print(f"{'detector':14} {'mean':>8} {'category':>9} {'error':>8} {'undetected':>11} {'false alarms (null)':>20}")
    for name, figures in result.items():
        undetected = sum(v for k, v in figures.items() if k.endswith("_undetected"))
        print(
            f"{name:14} {figures['mean_median_delay_events']:8.0f} {figures['category_median_delay_events']:9.0f} "
            f"{figures['error_median_delay_events']:8.0f} {undetected:11.0f} {null[name]:20.0f}"
        )
    summary: dict[str, float] = {"replicates": float(replicates), "elapsed_s": round(elapsed, 1)}
    for name, figures in result.items():
        for key, value in figures.items():
            summary[f"{name}_{key}"] = value
        summary[f"{name}_null_false_alarms_per_100k_events"] = null[name]
    assert all(math.isfinite(v) for v in summary.values())
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
