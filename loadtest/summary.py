"""Print one JSON line per scenario from Locust's CSV stats: rate, p50/p99 and failures per request name."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path


def summarize(scenario: str, stats_csv: Path) -> dict[str, object]:
    rows = {f"{r['Type']} {r['Name']}".strip(): r for r in csv.DictReader(stats_csv.open())}
    failures: dict[str, int] = {}
    failures_csv = stats_csv.with_name(stats_csv.name.replace("_stats.csv", "_failures.csv"))
    if failures_csv.exists():
        for row in csv.DictReader(failures_csv.open()):
            key = f"{row['Name']}: {row['Error'][:60]}"
            failures[key] = failures.get(key, 0) + int(row["Occurrences"])
    out: dict[str, object] = {"scenario": scenario}
    for key, row in rows.items():
        name = "all" if key.endswith("Aggregated") else key
        out[name] = {
            "requests": int(row["Request Count"]),
            "failures": int(row["Failure Count"]),
            "rate_per_s": round(float(row["Requests/s"]), 1),
            "p50_ms": float(row["50%"] or 0),
            "p99_ms": float(row["99%"] or 0),
        }
    out["failures_by_error"] = failures
    history = stats_csv.with_name(stats_csv.name.replace("_stats.csv", "_stats_history.csv"))
    if history.exists():
        out["timeline"] = timeline(history)
    return out


def timeline(history_csv: Path) -> dict[str, float]:
    """Locust's 10 s moving figures: before the user count first rises, at their peak, and at the end."""
    rows = [r for r in csv.DictReader(history_csv.open()) if r["Name"] == "Aggregated" and r["50%"] != "N/A"]
    if not rows:
        return {}
    users = [int(r["User Count"]) for r in rows]
    rise = next((i for i, u in enumerate(users) if u > users[0]), len(rows))
    before = rows[max(0, rise - 1)]
    peak = max(rows, key=lambda r: float(r["Requests/s"]))
    last = rows[-1]
    return {
        "rate_before_per_s": float(before["Requests/s"]),
        "p99_before_ms": float(before["99%"]),
        "rate_peak_per_s": float(peak["Requests/s"]),
        "p99_at_peak_ms": float(peak["99%"]),
        "rate_end_per_s": float(last["Requests/s"]),
        "p99_end_ms": float(last["99%"]),
        "failures_end_per_s": float(last["Failures/s"]),
    }


if __name__ == "__main__":
    print(json.dumps(summarize(sys.argv[1], Path(sys.argv[2]))))
