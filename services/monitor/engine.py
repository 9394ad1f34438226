"""The monitor's state for each model and version, fed one record at a time; no I/O here.

``observe`` (a prediction) and ``observe_label`` (a label joined to its prediction)
return :class:`Signal` values: a breach to raise or refresh an alert, or a clean
evaluation towards resolving one. The service applies them through the
:class:`~services.monitor.alerts.AlertManager`. Everything kept is bounded: ring
buffers, fixed-length deques and the detectors' scalars.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from services.monitor import performance as perf
from services.monitor.alerts import Breach
from services.monitor.detectors.bank import ERROR_RATE, Alarm, DetectorBank
from services.monitor.profiles import SCORE, CategoricalProfile, FeatureProfile, ReferenceProfile, category_key
from services.monitor.settings import ModelConfig
from services.monitor.windowed import FeatureDrift, confidence, evaluate
from services.monitor.windows import PredictionLog, RowWindow
from shared.messages import PredictionRecord

DRIFT = "drift"
PERFORMANCE = "performance"
AUC_VS_STABLE = "auc_vs_stable"


@dataclass(frozen=True, slots=True)
class Signal:
    """A breach of ``kind`` on ``feature`` (``breach`` set), or a clean evaluation of it (``breach`` None)."""

    kind: str
    version: int
    feature: str
    window: str
    breach: Breach | None = None


@dataclass(slots=True)
class Evaluation:
    """The last windowed evaluation of a version."""

    at_ms: int = 0
    window: str = ""
    features: list[FeatureDrift] = field(default_factory=list)
    confidence: dict[str, Any] = field(default_factory=dict)


class VersionMonitor:
    """Windows, detectors and the labelled window of one model version."""

    def __init__(self, model: str, version: int, profile: ReferenceProfile | None, config: ModelConfig) -> None:
        self.model = model
        self.version = version
        self.profile = profile
        self.config = config
        self.threshold = profile.threshold if profile is not None else 0.5
        self.profiles: dict[str, FeatureProfile] = {}
        if profile is not None:
            self.profiles.update(profile.features)
            if profile.score is not None:
                self.profiles[SCORE] = profile.score
        self.columns = list(self.profiles)
        self._categorical = [isinstance(self.profiles[name], CategoricalProfile) for name in self.columns]
        self.window = RowWindow(capacity=config.window_size, width=max(len(self.columns), 1))
        self.scores = RowWindow(capacity=config.window_size, width=1)
        self.bank: DetectorBank | None = None
        if profile is not None:
            numeric = {name: (p.mean, p.std) for name, p in profile.numeric.items()}
            if profile.score is not None:
                numeric[SCORE] = (profile.score.mean, profile.score.std)
            self.bank = DetectorBank(
                config.bank,
                numeric=numeric,
                categorical={name: p.shares for name, p in profile.categorical.items()},
                error_rate=profile.metrics.get("error_rate"),
            )
        self.count = 0
        self.errors = 0
        self._pending = 0
        self._alarmed: set[str] = set()
        self.alarms = 0
        self.last = Evaluation()
        self.labelled: dict[str, deque[tuple[float, float]]] = {}
        self._labels_pending = 0
        self.last_performance: dict[str, perf.Performance] = {}

    # predictions -----------------------------------------------------------
    def observe(self, record: PredictionRecord, *, signals: bool = True) -> list[Signal]:
        """Take one prediction; see :meth:`observe_batch`."""
        return self.observe_batch([record], signals=signals)

    def observe_batch(self, records: Sequence[PredictionRecord], *, signals: bool = True) -> list[Signal]:
        """Take a batch of this version's predictions, in stream order.

        Detector alarms come back for the batch (at most one signal per feature), windowed
        results whenever ``eval_every`` predictions have accumulated. ``signals=False``
        (replay on start) updates every window and detector but reports nothing.
        """
        self.count += len(records)
        answered = [r for r in records if r.score is not None]
        self.errors += len(records) - len(answered)
        if not answered:
            return []
        ts = np.fromiter((r.ts for r in answered), dtype=np.int64, count=len(answered))
        scores = np.fromiter((r.score for r in answered), dtype=np.float64, count=len(answered))
        self.scores.extend(ts, scores.reshape(-1, 1))
        if not self.columns:
            return []
        nan = math.nan
        columns = self.columns
        matrix = np.array(
            [[r.features.get(name, nan) if name != SCORE else r.score for name in columns] for r in answered],
            dtype=np.float64,
        )
        self.window.extend(ts, matrix)
        out: list[Signal] = []
        if self.bank is not None:
            alarms: list[tuple[int, Alarm]] = []
            for j, (name, categorical) in enumerate(zip(columns, self._categorical, strict=True)):
                column = matrix[:, j]
                if categorical:
                    keys = [None if math.isnan(v) else category_key(v) for v in column.tolist()]
                    alarms.extend(self.bank.update_category_many(name, keys))
                else:
                    alarms.extend(self.bank.update_numeric_many(name, column))
            self.alarms += len(alarms)
            reported: set[str] = set()
            for _, alarm in sorted(alarms, key=lambda item: item[0]):
                self._alarmed.add(alarm.feature)
                if signals and alarm.feature not in reported:
                    reported.add(alarm.feature)
                    window = f"stream:{alarm.signal}"
                    detail = {"signal": alarm.signal, "direction": alarm.direction}
                    breach = Breach("cusum", alarm.statistic, alarm.threshold, window, "warning", detail)
                    out.append(Signal(DRIFT, self.version, alarm.feature, window, breach))
        self._pending += len(answered)
        if self._pending >= self.config.eval_every:
            self._pending = 0
            evaluated = self.evaluate(int(ts[-1]))
            if signals:
                out.extend(evaluated)
        return out

    def _window_rows(self, now_ms: int, window: RowWindow) -> tuple[np.ndarray, str]:
        if self.config.window_s > 0:
            rows = window.since(now_ms - round(self.config.window_s * 1000))
            return rows[-self.config.window_size :], f"last {self.config.window_s:g}s"
        return window.last(self.config.window_size), f"last {self.config.window_size} predictions"

    def evaluate(self, now_ms: int) -> list[Signal]:
        """Run the windowed tests now; a drifting feature is a breach, a passing one not alarmed since is clean."""
        rows, window = self._window_rows(now_ms, self.window)
        scores, _ = self._window_rows(now_ms, self.scores)
        columns = {name: rows[:, i] for i, name in enumerate(self.columns)} if self.columns else {}
        results = evaluate(
            self.profiles, columns, min_samples=self.config.min_samples, alpha=self.config.alpha,
            psi_threshold=self.config.psi_threshold,
        )  # fmt: skip
        self.last = Evaluation(
            at_ms=now_ms,
            window=window,
            features=results,
            confidence=confidence(scores[:, 0], threshold=self.threshold, margin=self.config.near_margin,
                                  min_samples=self.config.min_samples),
        )  # fmt: skip
        out: list[Signal] = []
        for result in results:
            if result.status == "drift":
                psi = result.statistics.get("psi")
                severity = "critical" if psi is not None and psi >= 2.5 * self.config.psi_threshold else "warning"
                breach = Breach("psi", psi, self.config.psi_threshold, window, severity, result.statistics)
                out.append(Signal(DRIFT, self.version, result.feature, window, breach))
            elif result.status == "ok" and result.feature not in self._alarmed:
                out.append(Signal(DRIFT, self.version, result.feature, window))
        self._alarmed.clear()
        return out

    # labels ----------------------------------------------------------------
    def observe_label(self, variant: str, score: float, label: float) -> list[Signal]:
        """Take one prediction joined to its label; performance is re-evaluated every few dozen labels."""
        window = self.labelled.setdefault(variant, deque(maxlen=self.config.perf_window))
        window.append((score, label))
        out: list[Signal] = []
        if self.bank is not None:
            wrong = (score >= self.threshold) != (label != 0)
            alarm = self.bank.update_error(wrong)
            if alarm is not None:
                out.append(Signal(PERFORMANCE, self.version, ERROR_RATE, "stream:error_rate",
                                  Breach("cusum", alarm.statistic, alarm.threshold, "stream:error_rate", "warning",
                                         {"signal": alarm.signal, "direction": alarm.direction})))  # fmt: skip
        self._labels_pending += 1
        if self._labels_pending >= max(25, self.config.perf_min_samples // 4):
            self._labels_pending = 0
            out.extend(self.evaluate_performance())
        return out

    def performance(self, variant: str | None = None) -> perf.Performance:
        pairs = (
            list(self.labelled.get(variant, ()))
            if variant is not None
            else [pair for window in self.labelled.values() for pair in window][-self.config.perf_window :]
        )
        scores = np.array([s for s, _ in pairs], dtype=np.float64)
        labels = np.array([y for _, y in pairs], dtype=np.float64)
        return perf.performance(
            scores=scores, labels=labels, threshold=self.threshold, min_samples=self.config.perf_min_samples
        )

    def evaluate_performance(self) -> list[Signal]:
        """Against the version's own training metrics: AUC below it by the margin, error rate above it by the shift."""
        figures = self.performance()
        self.last_performance = {variant: self.performance(variant) for variant in self.labelled}
        self.last_performance["all"] = figures
        if self.profile is None or (figures.auc is None and figures.error_rate is None):
            return []
        window = f"last {figures.labelled} labelled predictions"
        out: list[Signal] = []
        trained_auc = self.profile.metrics.get("auc")
        if trained_auc is not None and figures.auc is not None:
            floor = trained_auc - self.config.perf_margin
            if figures.auc < floor:
                breach = Breach("auc", figures.auc, floor, window, "critical", {"training_auc": trained_auc})
                out.append(Signal(PERFORMANCE, self.version, "auc", window, breach))
            else:
                out.append(Signal(PERFORMANCE, self.version, "auc", window))
        trained_error = self.profile.metrics.get("error_rate")
        if trained_error is not None and figures.error_rate is not None:
            ceiling = trained_error + self.config.error_rate_shift
            if figures.error_rate > ceiling:
                out.append(Signal(PERFORMANCE, self.version, ERROR_RATE, window,
                                  Breach("error_rate", figures.error_rate, ceiling, window, "warning",
                                         {"training_error_rate": trained_error})))  # fmt: skip
            elif figures.error_rate <= trained_error + self.config.error_rate_shift / 2:
                out.append(Signal(PERFORMANCE, self.version, ERROR_RATE, window))
        return out


class ModelMonitor:
    """Every version of one model, and the log of its recent predictions."""

    def __init__(self, model: str, config: ModelConfig, *, log_size: int) -> None:
        self.model = model
        self.config = config
        self.versions: dict[int, VersionMonitor] = {}
        self.variants: dict[int, str] = {}
        self.log = PredictionLog(capacity=log_size)

    def record(self, record: PredictionRecord) -> None:
        """Log a prediction for summaries (every variant, errors included)."""
        self.log.append(
            record.id, record.ts, record.version, record.score,
            latency_us=record.latency_us, error=record.error_code is not None, degraded=record.degraded,
            variant=record.variant,
        )  # fmt: skip
        if record.variant in ("stable", "candidate"):
            self.variants[record.version] = record.variant

    def compare_to_stable(self) -> list[Signal]:
        """During a rollout: the candidate's AUC against the stable version's over their labelled windows."""
        stable = [v for v, variant in self.variants.items() if variant == "stable"]
        candidates = [v for v, variant in self.variants.items() if variant == "candidate"]
        if len(stable) != 1 or not candidates:
            return []
        reference = self.versions.get(stable[0])
        if reference is None:
            return []
        stable_auc = reference.performance().auc
        out: list[Signal] = []
        for version in candidates:
            monitor = self.versions.get(version)
            if monitor is None or monitor is reference or stable_auc is None:
                continue
            figures = monitor.performance()
            if figures.auc is None:
                continue
            window = f"last {figures.labelled} labelled predictions"
            floor = stable_auc - self.config.perf_margin
            if figures.auc < floor:
                out.append(Signal(PERFORMANCE, version, AUC_VS_STABLE, window,
                                  Breach("auc", figures.auc, floor, window, "critical",
                                         {"stable_version": stable[0], "stable_auc": stable_auc})))  # fmt: skip
            else:
                out.append(Signal(PERFORMANCE, version, AUC_VS_STABLE, window))
        return out
