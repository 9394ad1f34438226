"""Streaming change detectors, one per file, all of the same shape.

``update(x)`` takes one observation, ``drift_detected`` is true right after the
update that signalled a change (the next update starts afresh), ``reset()``
forgets everything. ADWIN and Page-Hinkley are river's implementations; the
two-sided CUSUM river lacks is written here in the same shape, and
:class:`~services.monitor.detectors.bank.DetectorBank` runs many of them with one
false-alarm budget shared across all features.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from services.monitor.detectors.adwin import ADWIN
from services.monitor.detectors.cusum import Cusum
from services.monitor.detectors.page_hinkley import PageHinkley


@runtime_checkable
class Detector(Protocol):
    """What every streaming detector offers."""

    def update(self, x: float) -> None: ...

    @property
    def drift_detected(self) -> bool: ...

    def reset(self) -> None: ...


__all__ = ["ADWIN", "Cusum", "Detector", "PageHinkley"]
