"""A real NATS responder on ``<ns>.monitor.summary`` answering recorded figures (tests and bench).

It stands in for the monitor service where that is not running: the figures are
what the monitor would report for a healthy, a score-shifted and a slow candidate.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from services.rollout.summary import monitor_summary_subject
from shared.runtime import Endpoint, Request, Service
from shared.settings import CommonSettings

HEALTHY: dict[str, Any] = {
    "predictions": 1000, "errors": 2, "error_rate": 0.002, "degraded_rate": 0.0, "latency_p50_ms": 2.0,
    "latency_p99_ms": 9.0, "score_mean": 0.31, "labelled": 0, "auc": None,
}  # fmt: skip
SCENARIOS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    # name: (candidate figures, comparison)
    "good": (HEALTHY, {"matched": 900, "agreement": 0.98, "score_psi": 0.01, "min_samples": 100}),
    "shifted": (HEALTHY | {"score_mean": 0.74}, {"matched": 900, "agreement": 0.41, "score_psi": 0.92,
                                                 "min_samples": 100}),
    "slow": (HEALTHY | {"latency_p50_ms": 60.0, "latency_p99_ms": 240.0},
             {"matched": 900, "agreement": 0.98, "score_psi": 0.01, "min_samples": 100}),
    "quiet": (HEALTHY | {"predictions": 3, "latency_p99_ms": None, "error_rate": None},
              {"matched": 0, "agreement": None, "score_psi": None, "min_samples": 100}),
}  # fmt: skip


class RecordedMonitor(Service):
    """Answers the summary request with the scenario assigned to the candidate version (``good`` if none)."""

    name: ClassVar[str] = "recordedmonitor"

    def __init__(self, common: CommonSettings) -> None:
        super().__init__(common)
        self.scenarios: dict[int, str] = {}
        self.requests: list[dict[str, Any]] = []

    def endpoints(self) -> Sequence[Endpoint]:
        return [Endpoint("summary", monitor_summary_subject(self.names), self.summary)]

    async def summary(self, request: Request) -> dict[str, Any]:
        body = request.payload()
        self.requests.append(body)
        stable, candidate = int(body["stable"]), int(body["candidate"])
        figures, comparison = SCENARIOS[self.scenarios.get(candidate, "good")]
        return {
            "model": body["model"],
            "window_s": body["window_s"],
            "versions": {str(stable): HEALTHY, str(candidate): figures},
            "comparison": comparison,
        }
