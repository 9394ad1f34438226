"""ADWIN (adaptive windowing), river's implementation with a public ``reset``."""

from __future__ import annotations

from river import drift


class ADWIN(drift.ADWIN):
    """ADWIN from ``river.drift``: keeps the longest window whose two halves do not differ in mean.

    Parameters
    ----------
    delta
        Confidence of each cut test; smaller means fewer false alarms and later detection.
        A bank of ``m`` ADWINs should use ``delta / m`` (Bonferroni).
    clock
        How many updates between two cut checks.

    Notes
    -----
    Bifet and Gavaldà's bound: a cut between sub-windows of sizes ``n0, n1`` is
    made when ``|mean0 - mean1| > eps`` with ``eps = sqrt(2 sigma^2 ln(2/delta') / m)
    + 2 ln(2/delta') / (3 m)``, ``m`` the harmonic mean of ``n0, n1``. The window is
    stored in exponential histograms, so memory is ``O(log W)``.

    Examples
    --------
    >>> import random
    >>> rng = random.Random(7)
    >>> detector = ADWIN()
    >>> alarms = []
    >>> for i in range(3000):
    ...     detector.update(rng.gauss(0.0 if i < 1500 else 1.0, 1.0))
    ...     if detector.drift_detected:
    ...         alarms.append(i)
    >>> len(alarms) >= 1 and 1500 <= alarms[0] < 1700
    True
    >>> detector.reset(); detector.drift_detected
    False

    References
    ----------
    Bifet, A. and Gavaldà, R. (2007). Learning from time-changing data with adaptive windowing. SDM.
    """

    def reset(self) -> None:
        self._reset()  # type: ignore[no-untyped-call]
