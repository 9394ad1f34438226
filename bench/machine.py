"""What a unit of CPU work costs on this machine run back to back and run in bursts.

The features and ingest benches compare a drained backlog (every process busy without a
break) with paced load (each process works a few milliseconds, then waits). On some virtual
machines the same work costs more CPU time when the process has just been idle (the host's
frequency and scheduling follow the load), which makes every paced figure dearer than the
backlog figure it is set against. This measures that: a fixed unit of work (a chain of 2,000
SHA-256 hashes, about 0.7 ms) run back to back, then with a 5 ms and a 20 ms sleep after each
unit, in CPU microseconds per unit (``time.process_time``), and the ratio of paced to back to
back. Run it beside a bench to read that bench's figures.

Usage: ``python bench/machine.py [--quick]``; the last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time

HASHES_PER_UNIT = 2_000


def unit() -> None:
    digest = b"rtml"
    for _ in range(HASHES_PER_UNIT):
        digest = hashlib.sha256(digest).digest()


def cpu_us_per_unit(units: int, sleep_s: float) -> float:
    started = time.process_time()
    for _ in range(units):
        unit()
        if sleep_s:
            time.sleep(sleep_s)
    return (time.process_time() - started) / units * 1e6


def main(quick: bool) -> dict[str, float]:
    units = 300 if quick else 1_500
    # back to back twice, first and last, so a drift of the machine during the run shows
    first = cpu_us_per_unit(units, 0)
    gap5 = cpu_us_per_unit(units, 0.005)
    gap20 = cpu_us_per_unit(units // 3, 0.020)
    last = cpu_us_per_unit(units, 0)
    continuous = (first + last) / 2
    return {
        "continuous_first_us_per_unit": round(first, 1),
        "continuous_last_us_per_unit": round(last, 1),
        "gap5ms_us_per_unit": round(gap5, 1),
        "gap20ms_us_per_unit": round(gap20, 1),
        "gap5ms_over_continuous_ratio": round(gap5 / continuous, 2),
        "gap20ms_over_continuous_ratio": round(gap20 / continuous, 2),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a shorter run (about 5 s)")
    print(json.dumps(main(parser.parse_args().quick)))
