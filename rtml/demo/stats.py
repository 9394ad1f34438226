"""What the live view shows, computed from what the demo's own client saw (pure, no I/O).

:class:`LiveStats` keeps every predict reply of the last ``window_s`` seconds and
the run's totals; :meth:`LiveStats.snapshot` turns them into the figures on
screen and in the summary.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import dataclass, field


def percentile(values: list[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) by linear interpolation between order statistics; None when empty.

    >>> percentile([1.0, 2.0, 3.0, 4.0], 50), percentile([5.0], 99), percentile([], 50)
    (2.5, 5.0, None)
    """
    if not values:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"q must be within [0, 100], got {q}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True, slots=True)
class Reply:
    """One predict request as the client saw it: when it ended, how long it took, what answered."""

    at_s: float
    latency_ms: float
    version: int | None  # None: an error reply
    variant: str
    error_code: int | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    requests_per_s: float
    events_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    split: dict[str, float]  # "v1 stable" -> share of the window's answered requests
    errors: int
    total_requests: int
    total_events: int


@dataclass
class LiveStats:
    """Sliding window of replies and published events, plus totals since the start."""

    window_s: float = 10.0
    replies: deque[Reply] = field(default_factory=deque)
    events: deque[float] = field(default_factory=deque)
    total_requests: int = 0
    total_events: int = 0
    errors: Counter[int] = field(default_factory=Counter)
    versions: Counter[int] = field(default_factory=Counter)
    all_latencies_ms: list[float] = field(default_factory=list)

    def record(self, reply: Reply) -> None:
        self.replies.append(reply)
        self.total_requests += 1
        if reply.error_code is not None:
            self.errors[reply.error_code] += 1
        else:
            self.all_latencies_ms.append(reply.latency_ms)
            if reply.version is not None:
                self.versions[reply.version] += 1

    def published(self, at_s: float, count: int = 1) -> None:
        self.events.extend([at_s] * count)
        self.total_events += count

    def _trim(self, now_s: float) -> None:
        horizon = now_s - self.window_s
        while self.replies and self.replies[0].at_s < horizon:
            self.replies.popleft()
        while self.events and self.events[0] < horizon:
            self.events.popleft()

    def snapshot(self, now_s: float, started_s: float) -> Snapshot:
        """Figures over the last ``window_s`` (or since ``started_s`` when that is shorter).

        >>> stats = LiveStats(window_s=10)
        >>> for i in range(10):
        ...     stats.record(Reply(at_s=float(i), latency_ms=float(i + 1), version=1 + i % 2, variant="stable"))
        >>> snap = stats.snapshot(now_s=10.0, started_s=0.0)
        >>> snap.requests_per_s, snap.p50_ms, snap.split
        (1.0, 5.5, {'v1 stable': 0.5, 'v2 stable': 0.5})
        """
        self._trim(now_s)
        span = max(min(self.window_s, now_s - started_s), 1e-9)
        answered = [r for r in self.replies if r.error_code is None]
        latencies = [r.latency_ms for r in answered]
        split = Counter(f"v{r.version} {r.variant}" for r in answered)
        return Snapshot(
            requests_per_s=round(len(self.replies) / span, 1),
            events_per_s=round(len(self.events) / span, 1),
            p50_ms=percentile(latencies, 50),
            p99_ms=percentile(latencies, 99),
            split={key: round(count / len(answered), 3) for key, count in sorted(split.items())},
            errors=sum(self.errors.values()),
            total_requests=self.total_requests,
            total_events=self.total_events,
        )
