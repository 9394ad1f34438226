"""CUSUM thresholds from a false-alarm budget: the in-control run length of a one-sided CUSUM.

A one-sided CUSUM ``S = max(0, S + y)`` on i.i.d. increments ``y`` with negative
mean ``mu`` alarms when ``S > h``. Siegmund's approximation of its average run
length is

    ARL0 ~= (exp(theta b) - theta b - 1) / (theta |mu|),  b = h + overshoot,

where ``theta > 0`` is the non-zero root of ``E[exp(theta y)] = 1`` (the
exponential tilt that makes the walk a martingale). For Gaussian increments
``y = z - k`` it is ``theta = 2k`` and the formula is the familiar
``(exp(2k b) - 2k b - 1) / (2 k^2)`` with Siegmund's overshoot ``1.166``. For a
standardized Bernoulli indicator the increments are skewed; solving for
``theta`` numerically keeps the approximation honest where the Gaussian one
would under-state false alarms several-fold (a rare category's indicator jumps
by many standard deviations at once).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

GAUSSIAN_OVERSHOOT = 1.166


@dataclass(frozen=True, slots=True)
class Increments:
    """A discrete (or Gaussian) increment law ``y = direction * z - k`` of one CUSUM side."""

    theta: float
    mean: float
    overshoot: float


def tilting_root(outcomes: Sequence[tuple[float, float]]) -> float:
    """The ``theta > 0`` with ``sum_i w_i exp(theta y_i) = 1`` for ``(w_i, y_i)`` of negative mean.

    >>> round(tilting_root([(0.5, 1.0), (0.5, -2.0)]), 6)  # solves (e^t + e^-2t) / 2 = 1
    0.481212
    """
    mean = sum(w * y for w, y in outcomes)
    if mean >= 0:
        raise ValueError("increments must drift downward (negative mean) for a finite run length")
    if max(y for _, y in outcomes) <= 0:
        return math.inf

    def excess(theta: float) -> float:
        return sum(w * math.exp(theta * y) for w, y in outcomes) - 1.0

    high = 1.0
    while excess(high) < 0:
        high *= 2.0
    low = 0.0
    for _ in range(200):
        middle = (low + high) / 2.0
        if excess(middle) < 0:
            low = middle
        else:
            high = middle
    return high


def gaussian_increments(k: float) -> Increments:
    """Increments ``z - k`` for standard normal ``z``."""
    if k <= 0:
        raise ValueError(f"allowance k must be positive, got {k}")
    return Increments(theta=2.0 * k, mean=-k, overshoot=GAUSSIAN_OVERSHOOT)


def bernoulli_increments(p: float, k: float, *, upward: bool) -> Increments:
    """Increments of the standardized indicator ``z = (x - p) / sqrt(p (1 - p))``, ``x ~ Bernoulli(p)``.

    ``upward`` watches for a rise (``z - k``), otherwise for a fall (``-z - k``).
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"reference rate must be within (0, 1), got {p}")
    sd = math.sqrt(p * (1.0 - p))
    high, low = (1.0 - p) / sd, -p / sd
    sign = 1.0 if upward else -1.0
    outcomes = [(p, sign * high - k), (1.0 - p, sign * low - k)]
    return Increments(theta=tilting_root(outcomes), mean=-k, overshoot=0.0)


def run_length(increments: Increments, h: float) -> float:
    """Siegmund's in-control average run length of a one-sided CUSUM with threshold ``h``.

    >>> round(run_length(gaussian_increments(0.5), 4.0))  # the textbook k=0.5, h=4 design (exact: 336)
    338
    """
    if math.isinf(increments.theta):
        return math.inf
    b = h + increments.overshoot
    x = increments.theta * b
    return (math.expm1(x) - x) / (increments.theta * abs(increments.mean))


def threshold_for_run_length(increments: Increments, target: float) -> float:
    """The smallest ``h`` whose in-control average run length reaches ``target``.

    >>> round(threshold_for_run_length(gaussian_increments(0.5), 338.0), 1)
    4.0
    """
    if target <= 1:
        return 0.0
    low, high = 0.0, 1.0
    while run_length(increments, high) < target:
        high *= 2.0
    for _ in range(100):
        middle = (low + high) / 2.0
        if run_length(increments, middle) < target:
            low = middle
        else:
            high = middle
    return high
