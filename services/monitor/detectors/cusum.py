"""Two-sided CUSUM against a frozen reference mean and standard deviation."""

from __future__ import annotations

import math


class Cusum:
    """Two-sided tabular CUSUM on ``z = (x - mean) / std``.

    Parameters
    ----------
    mean, std
        The in-control reference, from the training set. It stays frozen: a running
        mean would chase the very shift being detected.
    k
        Allowance in standard deviations, half the smallest shift worth detecting.
    h
        Threshold in standard deviations for a rise; ``h_down`` for a fall (defaults
        to ``h``; ``math.inf`` watches rises only). Pick them from a false-alarm
        budget with :mod:`services.monitor.detectors.calibration`.

    Notes
    -----
    ``S+ = max(0, S+ + z - k)`` and ``S- = max(0, S- - z - k)``; a change is
    signalled when ``S+ > h`` or ``S- > h_down``. The expected delay for a shift
    of ``delta`` standard deviations is about ``(h + 1.166) / (delta - k)``; the
    in-control run length grows like ``exp(2 k h)`` (Siegmund). After a signal the
    next update starts from zero.

    Examples
    --------
    >>> import random
    >>> rng = random.Random(7)
    >>> detector = Cusum(mean=0.0, std=1.0, k=0.5, h=8.0)
    >>> alarms = []
    >>> for i in range(3000):
    ...     detector.update(rng.gauss(0.0 if i < 1500 else 1.0, 1.0))
    ...     if detector.drift_detected:
    ...         alarms.append(i)
    >>> alarms[0]
    1526
    >>> detector.reset(); (detector.drift_detected, detector.upper, detector.lower)
    (False, 0.0, 0.0)

    References
    ----------
    Page, E. S. (1954). Continuous inspection schemes. Biometrika 41(1/2).
    Siegmund, D. (1985). Sequential Analysis: Tests and Confidence Intervals. Springer.
    """

    __slots__ = ("_drift_detected", "_scale", "h", "h_down", "k", "lower", "mean", "n", "std", "upper")

    def __init__(self, *, mean: float, std: float, k: float, h: float, h_down: float | None = None) -> None:
        if not math.isfinite(mean):
            raise ValueError(f"mean must be finite, got {mean}")
        if not std > 0 or not math.isfinite(std):
            raise ValueError(f"std must be positive and finite, got {std}")
        if not k >= 0:
            raise ValueError(f"k must be non-negative, got {k}")
        h_down = h if h_down is None else h_down
        if not h > 0 or not h_down > 0:
            raise ValueError(f"thresholds must be positive, got h={h}, h_down={h_down}")
        self.mean = mean
        self.std = std
        self.k = k
        self.h = h
        self.h_down = h_down
        self._scale = 1.0 / std
        self.reset()

    def reset(self) -> None:
        self.upper = 0.0
        self.lower = 0.0
        self.n = 0
        self._drift_detected = False

    @property
    def drift_detected(self) -> bool:
        return self._drift_detected

    @property
    def direction(self) -> int:
        """+1 after a rise was signalled, -1 after a fall, 0 otherwise."""
        if not self._drift_detected:
            return 0
        return 1 if self.upper > self.h else -1

    def update(self, x: float) -> None:
        if self._drift_detected:
            self.reset()
        z = (x - self.mean) * self._scale
        self.n += 1
        upper = self.upper + z - self.k
        lower = self.lower - z - self.k
        self.upper = upper if upper > 0.0 else 0.0
        self.lower = lower if lower > 0.0 else 0.0
        self._drift_detected = self.upper > self.h or self.lower > self.h_down
