"""A bank of CUSUMs, one per signal, sharing one false-alarm budget across all of them.

Signals: every numeric feature (and the score) standardized by its training mean
and deviation; every category of a categorical feature as the indicator of that
category, standardized by its training share; the error rate (one-sided: only a
rise matters) once labels arrive.

False-alarm control is for the family, not per feature: a budget of
``family_alpha`` expected false alarms over ``horizon_events`` events is split
evenly over the ``F`` watched features (the score and the error rate count as
one each), and a feature's share evenly over its ``s`` one-sided detectors (2
for a numeric feature, 2 per category, 1 for the error rate). Each side thus
gets a threshold whose in-control average run length is
``s * F * horizon_events / family_alpha`` (Bonferroni on the alarm rate), and
the expected false alarms of the whole bank stay within the budget. Thresholds
come from Siegmund's approximation with the increments' true law
(:mod:`~services.monitor.detectors.calibration`), so a skewed rare-category
indicator gets a higher threshold than a Gaussian feature. Adding features
raises every threshold a little (logarithmically), the price of watching more.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from services.monitor.detectors.calibration import (
    bernoulli_increments,
    gaussian_increments,
    threshold_for_run_length,
)
from services.monitor.detectors.cusum import Cusum

OTHER = "__other__"
SCORE = "__score__"
ERROR_RATE = "__error_rate__"


@dataclass(frozen=True, slots=True)
class BankConfig:
    """The bank's parameters; defaults meet the targets measured by ``bench/drift.py``.

    ``mean_shift_std``: smallest mean shift of a numeric feature worth detecting, in
    reference standard deviations (the allowance is half of it).
    ``share_shift_std``: the same for a category's share, in standard deviations of
    its indicator. ``error_rate_shift``: smallest absolute rise of the error rate.
    ``min_share``: categories rarer than this in the reference are pooled into one.
    """

    family_alpha: float = 0.05
    horizon_events: int = 100_000
    mean_shift_std: float = 0.25
    share_shift_std: float = 0.25
    error_rate_shift: float = 0.03
    min_share: float = 0.005

    def __post_init__(self) -> None:
        if not 0.0 < self.family_alpha <= 1.0:
            raise ValueError(f"family_alpha must be within (0, 1], got {self.family_alpha}")
        if self.horizon_events < 1:
            raise ValueError(f"horizon_events must be positive, got {self.horizon_events}")
        for name in ("mean_shift_std", "share_shift_std", "error_rate_shift", "min_share"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")


@dataclass(frozen=True, slots=True)
class Alarm:
    """One detector signalled: which feature (or ``__score__``/``__error_rate__``), which signal, which way."""

    feature: str
    signal: str
    direction: int
    statistic: float
    threshold: float


@lru_cache(maxsize=4096)
def _gaussian_h(k: float, target: float) -> float:
    return threshold_for_run_length(gaussian_increments(k), target)


@lru_cache(maxsize=4096)
def _bernoulli_h(p: float, k: float, target: float, upward: bool) -> float:
    return threshold_for_run_length(bernoulli_increments(p, k, upward=upward), target)


def pool_rare(shares: Mapping[str, float], min_share: float) -> dict[str, float]:
    """Shares normalized to sum 1, categories under ``min_share`` pooled into ``__other__`` (floored at it).

    >>> pool_rare({"a": 0.6, "b": 0.399, "c": 0.001}, 0.005)
    {'a': 0.6, 'b': 0.399, '__other__': 0.005}
    """
    total = sum(shares.values())
    if total <= 0:
        raise ValueError("category shares must sum to a positive number")
    pooled: dict[str, float] = {}
    other = 0.0
    for category, share in shares.items():
        fraction = share / total
        if fraction >= min_share and category != OTHER:
            pooled[category] = fraction
        else:
            other += fraction
    pooled[OTHER] = max(other, min_share)
    return pooled


class DetectorBank:
    """CUSUMs over every signal of a model version with one family-wise false-alarm budget.

    Examples
    --------
    >>> import random
    >>> rng = random.Random(3)
    >>> bank = DetectorBank(numeric={f"x{i}": (0.0, 1.0) for i in range(20)})
    >>> first = None
    >>> for t in range(4000):
    ...     row = {f"x{i}": rng.gauss(0.5 if (i == 7 and t >= 2000) else 0.0, 1.0) for i in range(20)}
    ...     alarms = bank.update_row(row)
    ...     if alarms and first is None:
    ...         first = (t, alarms[0].feature, alarms[0].direction)
    >>> first[1:], 2000 <= first[0] < 2400
    (('x7', 1), True)
    """

    def __init__(
        self,
        config: BankConfig | None = None,
        *,
        numeric: Mapping[str, tuple[float, float]] | None = None,
        categorical: Mapping[str, Mapping[str, float]] | None = None,
        error_rate: float | None = None,
    ) -> None:
        self.config = config or BankConfig()
        numeric = dict(numeric or {})
        shares = {name: pool_rare(s, self.config.min_share) for name, s in (categorical or {}).items()}
        self.sides = 2 * len(numeric) + 2 * sum(len(s) for s in shares.values()) + (1 if error_rate is not None else 0)
        self.features = len(numeric) + len(shares) + (1 if error_rate is not None else 0)
        per_feature = max(self.features, 1) * self.config.horizon_events / self.config.family_alpha
        self.target_run_length = per_feature  # of a feature's detectors together
        k_mean = self.config.mean_shift_std / 2.0
        k_share = self.config.share_shift_std / 2.0
        self.numeric: dict[str, Cusum] = {}
        for name, (mean, std) in numeric.items():
            h = _gaussian_h(k_mean, 2 * per_feature)
            self.numeric[name] = Cusum(mean=mean, std=std if std > 0 else 1e-9, k=k_mean, h=h)
        self.categorical: dict[str, dict[str, Cusum]] = {}
        for name, pooled in shares.items():
            detectors: dict[str, Cusum] = {}
            target = 2 * len(pooled) * per_feature
            for category, share in pooled.items():
                p = min(share, 1.0 - self.config.min_share)
                detectors[category] = Cusum(
                    mean=p,
                    std=math.sqrt(p * (1.0 - p)),
                    k=k_share,
                    h=_bernoulli_h(p, k_share, target, True),
                    h_down=_bernoulli_h(p, k_share, target, False),
                )
            self.categorical[name] = detectors
        self.error: Cusum | None = None
        if error_rate is not None:
            p = min(max(error_rate, 1e-3), 0.5)
            sd = math.sqrt(p * (1.0 - p))
            k_error = self.config.error_rate_shift / 2.0 / sd
            self.error = Cusum(
                mean=p, std=sd, k=k_error, h=_bernoulli_h(p, k_error, per_feature, True), h_down=math.inf
            )

    def _alarm(self, feature: str, signal: str, detector: Cusum) -> Alarm:
        direction = detector.direction
        statistic = detector.upper if direction > 0 else detector.lower
        threshold = detector.h if direction > 0 else detector.h_down
        return Alarm(feature, signal, direction, statistic, threshold)

    def update_numeric(self, feature: str, x: float) -> Alarm | None:
        detector = self.numeric.get(feature)
        if detector is None or not math.isfinite(x):
            return None
        detector.update(x)
        return self._alarm(feature, feature, detector) if detector.drift_detected else None

    def update_category(self, feature: str, category: str) -> Alarm | None:
        """Feed one observed category; every category's indicator of the feature advances. The first alarm."""
        detectors = self.categorical.get(feature)
        if detectors is None:
            return None
        if category not in detectors:
            category = OTHER
        fired: Alarm | None = None
        for name, detector in detectors.items():
            detector.update(1.0 if name == category else 0.0)
            if detector.drift_detected and fired is None:
                fired = self._alarm(feature, f"{feature}={name}", detector)
        return fired

    def update_numeric_many(self, feature: str, values: np.ndarray) -> list[tuple[int, Alarm]]:
        """Feed a batch of one numeric feature (``nan`` = missing); ``(position, alarm)`` of each signal."""
        detector = self.numeric.get(feature)
        if detector is None:
            return []
        present = np.flatnonzero(np.isfinite(values))
        detector.update_many(values[present])
        return [
            (int(present[i]), Alarm(feature, feature, d, statistic, detector.h if d > 0 else detector.h_down))
            for i, d, statistic in detector.last_signals
        ]

    def update_category_many(self, feature: str, categories: Sequence[str | None]) -> list[tuple[int, Alarm]]:
        """Feed a batch of one categorical feature (``None`` = missing); ``(position, alarm)`` of each signal."""
        detectors = self.categorical.get(feature)
        if detectors is None:
            return []
        index = {name: i for i, name in enumerate(detectors)}
        other = index[OTHER]
        present = [i for i, c in enumerate(categories) if c is not None]
        codes = np.fromiter((index.get(categories[i], other) for i in present), dtype=np.int64, count=len(present))  # type: ignore[arg-type]
        out: list[tuple[int, Alarm]] = []
        for j, (name, detector) in enumerate(detectors.items()):
            detector.update_many((codes == j).astype(np.float64))
            signal = f"{feature}={name}"
            for i, d, statistic in detector.last_signals:
                threshold = detector.h if d > 0 else detector.h_down
                out.append((present[i], Alarm(feature, signal, d, statistic, threshold)))
        out.sort(key=lambda item: item[0])
        return out

    def update_row(self, row: Mapping[str, float | str]) -> list[Alarm]:
        """Feed one observation of every feature present in ``row``; the alarms it raised."""
        alarms: list[Alarm] = []
        for feature, value in row.items():
            if feature in self.numeric:
                alarm = self.update_numeric(feature, float(value))
            elif feature in self.categorical:
                alarm = self.update_category(feature, str(value))
            else:
                continue
            if alarm is not None:
                alarms.append(alarm)
        return alarms

    def update_error(self, error: bool) -> Alarm | None:
        """Feed one labelled prediction: was it wrong at the model's threshold."""
        if self.error is None:
            return None
        self.error.update(1.0 if error else 0.0)
        return self._alarm(ERROR_RATE, ERROR_RATE, self.error) if self.error.drift_detected else None

    def detectors(self) -> Iterable[tuple[str, Cusum]]:
        """Every ``(signal, detector)`` pair, for metrics."""
        yield from self.numeric.items()
        for feature, detectors in self.categorical.items():
            for category, detector in detectors.items():
                yield f"{feature}={category}", detector
        if self.error is not None:
            yield ERROR_RATE, self.error

    def reset(self) -> None:
        for _, detector in self.detectors():
            detector.reset()
