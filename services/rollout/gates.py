"""Gates: pure checks of a candidate's figures against stable's over the same window.

Each gate answers ``pass``, ``fail``, ``hold`` (too little data: never a pass, and
never a missing figure read as zero) or ``skip`` (the gate does not apply yet, e.g.
performance before labels exist). The verdict of a check is ``fail`` if any gate
fails, else ``hold`` if any holds, else ``pass``.

Notes
-----
With stable's figure ``s`` and the candidate's ``c``:

- latency: fail when ``c_p99 > s_p99 * max_p99_ratio + p99_slack_ms``;
- errors: fail when ``c_error_rate > s_error_rate + max_error_rate_increase``;
- degraded: fail when ``c_degraded_rate > s_degraded_rate + max_degraded_rate_increase``;
- psi: fail when the score PSI of candidate against stable exceeds ``max_psi``;
- agreement: fail when the share of matched requests on which both decide alike is below ``min_agreement``;
- performance: fail when ``c_auc < s_auc - max_auc_drop`` (skipped until both have ``min_labelled`` labels).

When stable has too little traffic of its own (blue-green sends it none), the
``baseline`` figures recorded for stable when the rollout began stand in.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from enum import StrEnum
from typing import Any

from shared.errors import BadRequest

from .summary import Summary, VersionFigures


class Outcome(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    HOLD = "hold"
    SKIP = "skip"


GATE_NAMES: tuple[str, ...] = ("latency", "errors", "degraded", "psi", "agreement", "performance")


@dataclass(frozen=True, slots=True)
class GateConfig:
    """Thresholds and minimum samples; every field may be overridden per rollout."""

    min_predictions: int = 100
    max_p99_ratio: float = 1.5
    p99_slack_ms: float = 5.0
    max_error_rate_increase: float = 0.01
    max_degraded_rate_increase: float = 0.05
    max_psi: float = 0.2
    min_agreement: float = 0.9
    min_matched: int = 100
    max_auc_drop: float = 0.05
    min_labelled: int = 200
    fail_checks: int = 2
    enabled: tuple[str, ...] = ("latency", "errors", "degraded", "psi", "performance")

    def __post_init__(self) -> None:
        for name in ("min_predictions", "min_matched", "min_labelled"):
            if getattr(self, name) < 1:
                raise BadRequest(f"gates.{name} must be >= 1")
        if not 1 <= self.fail_checks <= 100:
            raise BadRequest("gates.fail_checks must be between 1 and 100")
        for name in ("max_p99_ratio", "p99_slack_ms", "max_psi"):
            if not 0.0 <= getattr(self, name) <= 1e6:
                raise BadRequest(f"gates.{name} must be a non-negative number")
        for name in ("max_error_rate_increase", "max_degraded_rate_increase", "min_agreement", "max_auc_drop"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise BadRequest(f"gates.{name} must be within [0, 1]")
        unknown = [g for g in self.enabled if g not in GATE_NAMES]
        if unknown:
            raise BadRequest(f"gates.enabled has unknown gates {unknown}; known: {list(GATE_NAMES)}")

    @classmethod
    def from_dict(cls, body: Mapping[str, Any], *, default_enabled: Sequence[str] | None = None) -> GateConfig:
        """Overrides on the defaults; unknown keys and wrong types are a 400 naming the field.

        >>> GateConfig.from_dict({"max_psi": 0.1}).max_psi
        0.1
        >>> GateConfig.from_dict({"max_psi": "x"})
        Traceback (most recent call last):
        ...
        shared.errors.BadRequest: gates.max_psi must be a number
        """
        if not isinstance(body, Mapping):
            raise BadRequest("gates must be an object")
        known = {f.name: f for f in fields(cls)}
        changes: dict[str, Any] = {}
        if default_enabled is not None:
            changes["enabled"] = tuple(default_enabled)
        for key, value in body.items():
            if key not in known:
                raise BadRequest(f"gates.{key} is not a gate setting; known: {sorted(known)}")
            if key == "enabled":
                if not isinstance(value, list) or not all(isinstance(g, str) for g in value):
                    raise BadRequest("gates.enabled must be a list of gate names")
                changes[key] = tuple(value)
            elif key in ("min_predictions", "min_matched", "min_labelled", "fail_checks"):
                if isinstance(value, bool) or not isinstance(value, int):
                    raise BadRequest(f"gates.{key} must be an integer")
                changes[key] = value
            else:
                if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
                    raise BadRequest(f"gates.{key} must be a number")
                changes[key] = float(value)
        return replace(cls(), **changes)

    def to_dict(self) -> dict[str, Any]:
        body = asdict(self)
        body["enabled"] = list(self.enabled)
        return body


@dataclass(frozen=True, slots=True)
class GateResult:
    gate: str
    outcome: Outcome
    value: float | None = None
    threshold: float | None = None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "gate": self.gate,
            "outcome": self.outcome.value,
            "value": self.value,
            "threshold": self.threshold,
            "reason": self.reason,
        }


def _reference(stable: VersionFigures, baseline: VersionFigures | None, config: GateConfig) -> VersionFigures | None:
    """Stable's own figures when it had enough traffic, else the baseline recorded at the start."""
    if stable.predictions >= config.min_predictions:
        return stable
    if baseline is not None and baseline.predictions >= config.min_predictions:
        return baseline
    return None


def _upper_gate(
    gate: str, candidate_value: float | None, reference_value: float | None, limit: float | None, what: str
) -> GateResult:
    if candidate_value is None or reference_value is None or limit is None:
        return GateResult(gate, Outcome.HOLD, candidate_value, None, f"no {what} figure yet")
    if candidate_value > limit:
        return GateResult(gate, Outcome.FAIL, candidate_value, limit, f"{what} {candidate_value:.4g} > {limit:.4g}")
    return GateResult(gate, Outcome.PASS, candidate_value, limit, f"{what} {candidate_value:.4g} <= {limit:.4g}")


def evaluate(
    summary: Summary,
    *,
    stable: int,
    candidate: int,
    config: GateConfig,
    baseline: VersionFigures | None = None,
) -> list[GateResult]:
    """Every enabled gate's result for one check, in :data:`GATE_NAMES` order."""
    cand = summary.figures(candidate)
    ref = _reference(summary.figures(stable), baseline, config)
    results: list[GateResult] = []
    low_traffic = cand.predictions < config.min_predictions or ref is None
    for gate in GATE_NAMES:
        if gate not in config.enabled:
            continue
        if gate in ("latency", "errors", "degraded", "psi") and low_traffic:
            results.append(
                GateResult(
                    gate,
                    Outcome.HOLD,
                    reason=f"too little traffic: candidate {cand.predictions}, stable "
                    f"{summary.figures(stable).predictions} predictions (need {config.min_predictions} each)",
                )
            )
            continue
        assert ref is not None or gate in ("agreement", "performance")
        if gate == "latency":
            assert ref is not None
            limit = (
                None if ref.latency_p99_ms is None else ref.latency_p99_ms * config.max_p99_ratio + config.p99_slack_ms
            )
            results.append(_upper_gate(gate, cand.latency_p99_ms, ref.latency_p99_ms, limit, "p99 latency ms"))
        elif gate == "errors":
            assert ref is not None
            limit = None if ref.error_rate is None else ref.error_rate + config.max_error_rate_increase
            results.append(_upper_gate(gate, cand.error_rate, ref.error_rate, limit, "error rate"))
        elif gate == "degraded":
            assert ref is not None
            limit = None if ref.degraded_rate is None else ref.degraded_rate + config.max_degraded_rate_increase
            results.append(_upper_gate(gate, cand.degraded_rate, ref.degraded_rate, limit, "degraded rate"))
        elif gate == "psi":
            if summary.figures(stable).predictions < config.min_predictions:
                # The candidate serves (nearly) everything, e.g. a canary's 100 % step: there are no stable
                # scores in the window to compare with, and holding would stop the rollout for good.
                results.append(GateResult(gate, Outcome.SKIP, reason="stable has too little traffic of its own"))
                continue
            psi = summary.comparison.score_psi
            results.append(_upper_gate(gate, psi, psi, config.max_psi, "score PSI"))
        elif gate == "agreement":
            results.append(_agreement(summary, config))
        else:
            results.append(_performance(summary.figures(stable), cand, baseline, config))
    return results


def _agreement(summary: Summary, config: GateConfig) -> GateResult:
    comparison = summary.comparison
    if comparison.matched < config.min_matched or comparison.agreement is None:
        return GateResult(
            "agreement",
            Outcome.HOLD,
            comparison.agreement,
            config.min_agreement,
            f"{comparison.matched} matched requests (need {config.min_matched})",
        )
    if comparison.agreement < config.min_agreement:
        return GateResult(
            "agreement",
            Outcome.FAIL,
            comparison.agreement,
            config.min_agreement,
            f"agreement {comparison.agreement:.4g} < {config.min_agreement:.4g}",
        )
    return GateResult(
        "agreement",
        Outcome.PASS,
        comparison.agreement,
        config.min_agreement,
        f"agreement {comparison.agreement:.4g} >= {config.min_agreement:.4g}",
    )


def _performance(
    stable: VersionFigures, cand: VersionFigures, baseline: VersionFigures | None, config: GateConfig
) -> GateResult:
    reference = stable if stable.labelled >= config.min_labelled and stable.auc is not None else baseline
    if (
        cand.labelled < config.min_labelled
        or cand.auc is None
        or reference is None
        or reference.labelled < config.min_labelled
        or reference.auc is None
    ):
        # Labels may never arrive for some models; performance gates only once they exist.
        return GateResult("performance", Outcome.SKIP, cand.auc, None, f"{cand.labelled} labelled predictions")
    limit = reference.auc - config.max_auc_drop
    if cand.auc < limit:
        return GateResult("performance", Outcome.FAIL, cand.auc, limit, f"AUC {cand.auc:.4g} < {limit:.4g}")
    return GateResult("performance", Outcome.PASS, cand.auc, limit, f"AUC {cand.auc:.4g} >= {limit:.4g}")


def verdict(results: Iterable[GateResult]) -> Outcome:
    """``fail`` if any gate fails, else ``hold`` if any holds, else ``pass`` (skips do not count).

    >>> verdict([GateResult("a", Outcome.PASS), GateResult("b", Outcome.HOLD)])
    <Outcome.HOLD: 'hold'>
    >>> verdict([GateResult("a", Outcome.SKIP)])
    <Outcome.PASS: 'pass'>
    """
    outcomes = {r.outcome for r in results}
    if Outcome.FAIL in outcomes:
        return Outcome.FAIL
    if Outcome.HOLD in outcomes:
        return Outcome.HOLD
    return Outcome.PASS
