"""Two-sided CUSUM against a frozen reference mean and standard deviation."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike


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

    __slots__ = ("_drift_detected", "_scale", "h", "h_down", "k", "last_signals", "lower", "mean", "n", "std", "upper")

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
        self.last_signals: list[tuple[int, int, float]] = []
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

    def update_many(self, xs: ArrayLike) -> list[int]:
        """Feed a batch; the positions that signalled. Same result as ``update`` one value at a time.

        Notes
        -----
        Between two signals the recursion ``S_t = max(0, S_{t-1} + y_t)`` has the
        closed form ``S_t = W_t - min(-S_0, min_{s<=t} W_s)`` with ``W_t`` the
        cumulative sum of the increments, so a batch costs a few vectorized passes
        instead of a Python loop; only a signal (rare) restarts the pass after it.
        ``last_signals`` holds ``(position, direction, statistic)`` of each signal.

        >>> a, b = Cusum(mean=0.0, std=1.0, k=0.5, h=3.0), Cusum(mean=0.0, std=1.0, k=0.5, h=3.0)
        >>> xs = [0.2, 1.5, 2.0, 1.8, -0.3, 2.5, 2.5, 0.0]
        >>> one_by_one = []
        >>> for i, x in enumerate(xs):
        ...     a.update(x)
        ...     if a.drift_detected:
        ...         one_by_one.append(i)
        >>> b.update_many(xs) == one_by_one, (a.upper, a.lower, a.n) == (b.upper, b.lower, b.n)
        (True, True)
        """
        z = (np.asarray(xs, dtype=np.float64).ravel() - self.mean) * self._scale
        alarms: list[int] = []
        self.last_signals = []
        start = 0
        while start < z.size:
            if self._drift_detected:
                self.reset()
            part = z[start:]
            up = np.cumsum(part - self.k)
            down = np.cumsum(-part - self.k)
            upper = up - np.minimum(np.minimum.accumulate(up), -self.upper)
            lower = down - np.minimum(np.minimum.accumulate(down), -self.lower)
            hits = np.flatnonzero((upper > self.h) | (lower > self.h_down))
            end = int(hits[0]) if hits.size else part.size - 1
            self.upper = max(float(upper[end]), 0.0)
            self.lower = max(float(lower[end]), 0.0)
            self.n += end + 1
            self._drift_detected = bool(hits.size)
            if not hits.size:
                break
            alarms.append(start + end)
            rose = self.upper > self.h
            self.last_signals.append((start + end, 1 if rose else -1, self.upper if rose else self.lower))
            start += end + 1
        return alarms

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
