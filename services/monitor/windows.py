"""Bounded in-memory windows: fixed-size ring buffers, so memory stays flat however long the stream.

:class:`RowWindow` keeps the last ``capacity`` feature rows (and scores) of one
model version for the windowed drift tests, queried by count or by time.
:class:`PredictionLog` keeps the last ``capacity`` prediction records of every
model for the summaries the rollout controller reads. :class:`LruMap` bounds the
id -> prediction and id -> label maps used to join labels.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
from numpy.typing import NDArray

K = TypeVar("K")
V = TypeVar("V")


class RowWindow:
    """The last ``capacity`` rows of ``width`` floats with their timestamps (ms); ``nan`` marks a missing value.

    >>> w = RowWindow(capacity=3, width=1)
    >>> for t in range(5):
    ...     w.append(t * 1000, [float(t)])
    >>> w.last(10)[:, 0].tolist(), w.since(3000)[:, 0].tolist(), len(w)
    ([2.0, 3.0, 4.0], [3.0, 4.0], 3)
    """

    def __init__(self, *, capacity: int, width: int) -> None:
        if capacity < 1 or width < 1:
            raise ValueError("a window needs a positive capacity and width")
        self.capacity = capacity
        self.width = width
        self._rows = np.full((capacity, width), math.nan)
        self._ts = np.zeros(capacity, dtype=np.int64)
        self._next = 0
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def append(self, ts_ms: int, values: Sequence[float]) -> None:
        self._rows[self._next] = values
        self._ts[self._next] = ts_ms
        self._next = (self._next + 1) % self.capacity
        self._size = min(self._size + 1, self.capacity)

    def extend(self, ts_ms: NDArray[np.int64], rows: NDArray[np.float64]) -> None:
        """Append many rows at once (same result as appending them one by one).

        >>> w = RowWindow(capacity=3, width=1)
        >>> w.extend(np.arange(4), np.arange(4.0).reshape(4, 1)); w.extend(np.arange(1), np.array([[9.0]]))
        >>> w.last(3)[:, 0].tolist()
        [2.0, 3.0, 9.0]
        """
        n = len(rows)
        if n >= self.capacity:
            ts_ms, rows, n = ts_ms[-self.capacity :], rows[-self.capacity :], self.capacity
        first = min(n, self.capacity - self._next)
        self._rows[self._next : self._next + first] = rows[:first]
        self._ts[self._next : self._next + first] = ts_ms[:first]
        rest = n - first
        if rest:
            self._rows[:rest] = rows[first:]
            self._ts[:rest] = ts_ms[first:]
        self._next = (self._next + n) % self.capacity
        self._size = min(self._size + n, self.capacity)

    def _ordered(self) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
        if self._size < self.capacity:
            return self._rows[: self._size], self._ts[: self._size]
        order = np.r_[self._next : self.capacity, 0 : self._next]
        return self._rows[order], self._ts[order]

    def last(self, n: int) -> NDArray[np.float64]:
        rows, _ = self._ordered()
        return rows[max(0, len(rows) - n) :]

    def since(self, ts_ms: int) -> NDArray[np.float64]:
        rows, ts = self._ordered()
        return rows[ts >= ts_ms]

    def clear(self) -> None:
        self._size = 0
        self._next = 0


@dataclass(frozen=True, slots=True)
class LogSlice:
    """The prediction records of a time range, as parallel arrays."""

    ids: list[str]
    versions: NDArray[np.int64]
    scores: NDArray[np.float64]  # nan on an error
    latency_us: NDArray[np.int64]
    errors: NDArray[np.bool_]
    degraded: NDArray[np.bool_]
    variants: NDArray[np.int64]  # codes into ``variant_names``
    variant_names: tuple[str, ...] = ()

    def variant_code(self, variant: str) -> int:
        """The code of ``variant`` in this slice, -1 when absent."""
        return self.variant_names.index(variant) if variant in self.variant_names else -1


class PredictionLog:
    """The last ``capacity`` prediction records of one model as parallel ring arrays.

    >>> log = PredictionLog(capacity=2)
    >>> log.append("a", 1000, 1, 0.2, latency_us=500, error=False, degraded=False)
    >>> log.append("b", 2000, 2, None, latency_us=900, error=True, degraded=False)
    >>> log.append("c", 3000, 2, 0.9, latency_us=700, error=False, degraded=True)
    >>> part = log.since(0)
    >>> part.ids, part.versions.tolist(), part.errors.tolist()
    (['b', 'c'], [2, 2], [True, False])
    """

    def __init__(self, *, capacity: int, initial: int = 1024) -> None:
        self.capacity = capacity
        # the arrays start small and double up to ``capacity``: a model that is seen a few times costs little
        self._allocated = 0
        self._ids: list[str] = []
        self._ts = np.zeros(0, dtype=np.int64)
        self._versions = np.zeros(0, dtype=np.int64)
        self._scores = np.zeros(0)
        self._latency = np.zeros(0, dtype=np.int64)
        self._errors = np.zeros(0, dtype=np.bool_)
        self._degraded = np.zeros(0, dtype=np.bool_)
        self._variants = np.zeros(0, dtype=np.int64)
        self._grow(min(initial, capacity))
        self._variant_codes: dict[str, int] = {}
        self._next = 0
        self._size = 0

    def _grow(self, size: int) -> None:
        extra = size - self._allocated
        self._ids.extend([""] * extra)
        self._ts = np.concatenate([self._ts, np.zeros(extra, dtype=np.int64)])
        self._versions = np.concatenate([self._versions, np.zeros(extra, dtype=np.int64)])
        self._scores = np.concatenate([self._scores, np.full(extra, math.nan)])
        self._latency = np.concatenate([self._latency, np.zeros(extra, dtype=np.int64)])
        self._errors = np.concatenate([self._errors, np.zeros(extra, dtype=np.bool_)])
        self._degraded = np.concatenate([self._degraded, np.zeros(extra, dtype=np.bool_)])
        self._variants = np.concatenate([self._variants, np.zeros(extra, dtype=np.int64)])
        self._allocated = size

    def __len__(self) -> int:
        return self._size

    def append(
        self,
        id_: str,
        ts_ms: int,
        version: int,
        score: float | None,
        *,
        latency_us: int,
        error: bool,
        degraded: bool,
        variant: str = "stable",
    ) -> None:
        if self._size == self._allocated < self.capacity:  # still linear: grow before wrapping
            self._grow(min(2 * self._allocated, self.capacity))
        i = self._next
        self._ids[i] = id_
        self._ts[i] = ts_ms
        self._versions[i] = version
        self._scores[i] = math.nan if score is None else score
        self._latency[i] = latency_us
        self._errors[i] = error
        self._degraded[i] = degraded
        code = self._variant_codes.get(variant)
        if code is None:
            # variants are a handful (stable, candidate, shadow); past 16 the rest share one bucket
            code = self._variant_codes.setdefault(variant if len(self._variant_codes) < 16 else "other",
                                                  len(self._variant_codes))  # fmt: skip
        self._variants[i] = code
        self._next = (i + 1) % self.capacity
        self._size = min(self._size + 1, self.capacity)

    def since(self, ts_ms: int) -> LogSlice:
        full = self._size == self.capacity
        order = np.r_[self._next : self.capacity, 0 : self._next] if full else np.arange(self._size)
        order = order[self._ts[order] >= ts_ms]
        return LogSlice(
            ids=[self._ids[i] for i in order.tolist()],
            versions=self._versions[order],
            scores=self._scores[order],
            latency_us=self._latency[order],
            errors=self._errors[order],
            degraded=self._degraded[order],
            variants=self._variants[order],
            variant_names=tuple(self._variant_codes),
        )


class LruMap(Generic[K, V]):
    """A dict bounded to ``capacity`` entries, the least recently set dropped first.

    >>> m: LruMap[str, int] = LruMap(2)
    >>> m["a"] = 1; m["b"] = 2; m["c"] = 3
    >>> m.get("a"), m.get("c"), len(m)
    (None, 3, 2)
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._data: OrderedDict[K, V] = OrderedDict()

    def __setitem__(self, key: K, value: V) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        if len(self._data) > self.capacity:
            self._data.popitem(last=False)

    def get(self, key: K) -> V | None:
        return self._data.get(key)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)
