"""Page-Hinkley, river's implementation with a public ``reset``."""

from __future__ import annotations

from river import drift


class PageHinkley(drift.PageHinkley):
    """Page-Hinkley test from ``river.drift``: cumulative deviation from the running mean.

    Parameters
    ----------
    min_instances
        Observations before the test may signal.
    delta
        Magnitude of change tolerated (the allowance subtracted from each deviation).
    threshold
        The cumulative deviation that signals a change (``lambda``).
    alpha
        Forgetting factor of the cumulative sums.
    mode
        ``"up"``, ``"down"`` or ``"both"``.

    Notes
    -----
    ``m_T = sum_t (x_t - mean_t - delta)`` and ``M_T = min_t m_t``; a rise is
    signalled when ``m_T - M_T > lambda`` (and symmetrically for a fall). The mean
    is a running mean, so it partly follows the change it is detecting; the frozen
    reference of :class:`~services.monitor.detectors.cusum.Cusum` does not.

    Examples
    --------
    >>> import random
    >>> rng = random.Random(7)
    >>> detector = PageHinkley(delta=0.25, threshold=20.0)
    >>> alarms = []
    >>> for i in range(3000):
    ...     detector.update(rng.gauss(0.0 if i < 1500 else 1.0, 1.0))
    ...     if detector.drift_detected:
    ...         alarms.append(i)
    >>> alarms
    [1542]
    >>> detector.reset(); detector.drift_detected
    False

    References
    ----------
    Page, E. S. (1954). Continuous inspection schemes. Biometrika 41(1/2).
    """

    def reset(self) -> None:
        self._reset()  # type: ignore[no-untyped-call]
