"""Feature assembly: one model input row per request, in the order the model's signature records.

Online features come from the online store (one read per batch, done by the
caller with the pairs :meth:`Signature.lookups` lists); request-time features from
the request's payload. A value that is missing takes the feature's declared default
and marks the row ``degraded``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from services.inference.backends import FloatArray
from shared.errors import BadRequest
from shared.messages import Scalar
from shared.online import OnlineVector
from shared.registry import FeatureSpec

Lookup = tuple[str, str]  # (view, entity)


@dataclass(frozen=True)
class Signature:
    """A model version's input columns."""

    specs: tuple[FeatureSpec, ...]

    @cached_property
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
        groups = self._plan.online
        for entity, features in requests:
            for view, entity_from, _ in groups:
                key = entity if entity_from is None else features.get(entity_from)
                if key is not None:
                    seen[(view, str(key))] = None
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
        plan = self._plan
        matrix = np.empty((len(requests), self.width), dtype=np.float32)
        degraded = [False] * len(requests)
        for row, (entity, features) in enumerate(requests):
            values = matrix[row]
            missing = False
            for column, name, default in plan.request:
                raw = features.get(name)
                if raw is None:
                    values[column] = default
                    missing = True
                else:
                    values[column] = float(raw)
            for view, entity_from, columns in plan.online:
                vector = None
                if online is not None:
                    key = entity if entity_from is None else features.get(entity_from)
                    vector = None if key is None else online.get((view, str(key)))
                found = {} if vector is None else vector.values
                for column, field_name, default in columns:
                    value = found.get(field_name)
                    if value is None:
                        values[column] = default
                        missing = True
                    else:
                        values[column] = value
            degraded[row] = missing
        return matrix, degraded

    @cached_property
    def fields_by_view(self) -> dict[str, tuple[str, ...]]:
        """The online fields each view must supply, so a read fetches only those.

        >>> Signature((FeatureSpec("a", "online", view="card"), FeatureSpec("x", "request"),
        ...            FeatureSpec("b", "online", view="card", field="bb"))).fields_by_view
        {'card': ('a', 'bb')}
        """
        fields: dict[str, dict[str, None]] = {}
        for spec in self.specs:
            if spec.source == "online" and spec.view is not None:
                fields.setdefault(spec.view, {})[spec.online_field] = None
        return {view: tuple(names) for view, names in fields.items()}

    @cached_property
    def _plan(self) -> _Plan:
        request = [(i, s.name, s.default) for i, s in enumerate(self.specs) if s.source == "request"]
        groups: dict[tuple[str, str | None], list[tuple[int, str, float]]] = {}
        for i, spec in enumerate(self.specs):
            if spec.source == "online" and spec.view is not None:
                groups.setdefault((spec.view, spec.entity_from), []).append((i, spec.online_field, spec.default))
        return _Plan(request, [(view, entity_from, cols) for (view, entity_from), cols in groups.items()])


@dataclass(frozen=True, slots=True)
class _Plan:
    """Columns grouped for assembly: request inputs, and online inputs per (view, entity key source)."""

    request: list[tuple[int, str, float]]
    online: list[tuple[str, str | None, list[tuple[int, str, float]]]]
