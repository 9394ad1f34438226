"""Feature assembly: one model input row per request, in the order the model's signature records.

Online features come from the online store (one pipelined read per batch, done by the
caller with the pairs :meth:`Signature.lookups` lists); request-time features from
the request's payload. A value that is missing takes the feature's declared default
and marks the row ``degraded``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from services.inference.backends import FloatArray
from shared.errors import BadRequest
from shared.messages import Scalar
from shared.online import OnlineVector
from shared.registry import FeatureSpec

Lookup = tuple[str, str]  # (view, entity)


@dataclass(frozen=True, slots=True)
class Signature:
    """A model version's input columns."""

    specs: tuple[FeatureSpec, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.specs)

    @property
    def width(self) -> int:
        return len(self.specs)

    @property
    def defaults(self) -> FloatArray:
        return np.array([spec.default for spec in self.specs], dtype=np.float32)

    def check(self, features: Mapping[str, Scalar]) -> None:
        """400 when a request-time input is not a number (booleans count as 0/1), or an entity key is not a string."""
        for spec in self.specs:
            if spec.source == "request" and spec.name in features:
                value = features[spec.name]
                if isinstance(value, str):
                    raise BadRequest(f"feature '{spec.name}' must be a number, got a string")
            if spec.entity_from is not None and spec.entity_from in features:
                key = features[spec.entity_from]
                if isinstance(key, bool) or not isinstance(key, str | int):
                    raise BadRequest(f"feature '{spec.entity_from}' names an entity and must be a string")

    def entity_for(self, spec: FeatureSpec, entity: str, features: Mapping[str, Scalar]) -> str | None:
        if spec.entity_from is None:
            return entity
        key = features.get(spec.entity_from)
        return None if key is None else str(key)

    def lookups(self, requests: Sequence[tuple[str, Mapping[str, Scalar]]]) -> list[Lookup]:
        """The distinct ``(view, entity)`` pairs a batch of ``(entity, features)`` requests needs, in first-seen order.

        >>> sig = Signature((FeatureSpec("a", "online", view="card"), FeatureSpec("b", "online", view="card"),
        ...                  FeatureSpec("m", "online", view="merchant", entity_from="merchant")))
        >>> sig.lookups([("c1", {"merchant": "m9"}), ("c1", {}), ("c2", {"merchant": "m9"})])
        [('card', 'c1'), ('merchant', 'm9'), ('card', 'c2')]
        """
        seen: dict[Lookup, None] = {}
        for entity, features in requests:
            for spec in self.specs:
                if spec.source != "online" or spec.view is None:
                    continue
                key = self.entity_for(spec, entity, features)
                if key is not None:
                    seen.setdefault((spec.view, key), None)
        return list(seen)

    def assemble(
        self,
        requests: Sequence[tuple[str, Mapping[str, Scalar]]],
        online: Mapping[Lookup, OnlineVector] | None,
    ) -> tuple[FloatArray, list[bool]]:
        """The float32 ``[len(requests), width]`` input and, per row, whether any value was missing.

        ``online`` is ``None`` when the online store could not be read: every online
        value then takes its default.
        """
        matrix = np.empty((len(requests), self.width), dtype=np.float32)
        degraded = [False] * len(requests)
        for row, (entity, features) in enumerate(requests):
            for column, spec in enumerate(self.specs):
                value: float | None = None
                if spec.source == "request":
                    raw = features.get(spec.name)
                    value = None if raw is None else float(raw)
                elif online is not None and spec.view is not None:
                    key = self.entity_for(spec, entity, features)
                    vector = None if key is None else online.get((spec.view, key))
                    value = None if vector is None else vector.values.get(spec.online_field)
                if value is None:
                    value = spec.default
                    degraded[row] = True
                matrix[row, column] = value
        return matrix, degraded
