"""The dynamic batcher's policy as data, in the spirit of Triton's ``dynamic_batching`` block."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from shared.errors import BadRequest


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    """How one model version's requests are grouped into batches.

    ``max_batch_size``: the most rows in one batch (1 turns batching off).
    ``max_queue_delay_us``: how long the oldest queued request may wait for company.
    ``preferred_batch_sizes``: a batch is released at once when the queue can fill the
    largest of these; each is also warmed up.
    ``max_queue_size``: requests queued beyond this are shed with a 429 at once.
    ``default_timeout_ms``: the deadline of a request that names none.
    ``max_concurrent_batches``: batches in flight at once (one fetching features while
    another runs the model).
    ``adaptive``: cap the wait at the measured cost of a batch (waiting longer than a
    batch takes to run buys nothing), and do not wait at all while no batch is running
    (the requests that arrive during one form the next).

    >>> BatchPolicy.from_dict({"max_batch_size": 8}).warm_up_sizes()
    [1, 2, 4, 8]
    >>> BatchPolicy.from_dict({"max_batch_size": 0})
    Traceback (most recent call last):
    ...
    shared.errors.BadRequest: batch_policy 'max_batch_size' must be an integer within [1, 4096], got 0
    """

    max_batch_size: int = 32
    max_queue_delay_us: int = 500
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_size: int = 2048
    default_timeout_ms: int = 1000
    max_concurrent_batches: int = 2
    adaptive: bool = False

    def __post_init__(self) -> None:
        _check_int("max_batch_size", self.max_batch_size, 1, 4096)
        _check_int("max_queue_delay_us", self.max_queue_delay_us, 0, 10_000_000)
        _check_int("max_queue_size", self.max_queue_size, 1, 1_000_000)
        _check_int("default_timeout_ms", self.default_timeout_ms, 1, 600_000)
        _check_int("max_concurrent_batches", self.max_concurrent_batches, 1, 64)
        for size in self.preferred_batch_sizes:
            _check_int("preferred_batch_sizes", size, 1, self.max_batch_size)
        if not isinstance(self.adaptive, bool):
            raise BadRequest(f"batch_policy 'adaptive' must be a boolean, got {self.adaptive!r}")

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> BatchPolicy:
        """Build from a registry ``batch_policy`` map; unknown keys are refused."""
        known = {f.name for f in fields(cls)}
        unknown = set(body) - known
        if unknown:
            raise BadRequest(f"batch_policy has unknown keys {sorted(unknown)}; known: {sorted(known)}")
        values = dict(body)
        if "preferred_batch_sizes" in values:
            raw = values["preferred_batch_sizes"]
            if not isinstance(raw, list | tuple):
                raise BadRequest("batch_policy 'preferred_batch_sizes' must be a list of integers")
            values["preferred_batch_sizes"] = tuple(sorted(set(raw)))
        return cls(**values)

    @property
    def max_queue_delay_s(self) -> float:
        return self.max_queue_delay_us / 1e6

    def release_size(self, queued: int) -> int:
        """Rows to release at once for ``queued`` waiting requests (before the delay ran out), 0 to wait.

        >>> p = BatchPolicy(max_batch_size=16, preferred_batch_sizes=(4, 8))
        >>> [p.release_size(n) for n in (1, 4, 7, 8, 20)]
        [0, 0, 0, 8, 16]
        """
        if queued >= self.max_batch_size:
            return self.max_batch_size
        if self.preferred_batch_sizes and queued >= self.preferred_batch_sizes[-1]:
            return self.preferred_batch_sizes[-1]
        return 0

    def warm_up_sizes(self) -> list[int]:
        """Batch sizes to warm up: powers of two up to the maximum, the maximum and the preferred sizes."""
        sizes = {self.max_batch_size, *self.preferred_batch_sizes}
        size = 1
        while size < self.max_batch_size:
            sizes.add(size)
            size *= 2
        return sorted(sizes)


def _check_int(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadRequest(f"batch_policy {name!r} must be an integer within [{low}, {high}], got {value!r}")
