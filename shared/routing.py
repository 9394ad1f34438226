"""Traffic policy per model: which version answers, which one is tried, and for whom.

Rollout writes a :class:`RoutingPolicy` into the KV bucket ``<ns>_routing`` under the
model's name; every inference replica watches the bucket and switches atomically.
Canary assignment is sticky per entity: the same entity always lands on the same
side for a given weight, and raising the weight only moves entities to the
candidate, never back.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from typing import Any

from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from shared.codec import decode, encode

BUCKETS = 10_000


class Mode(StrEnum):
    STABLE = "stable"  # only the stable version serves
    SHADOW = "shadow"  # stable answers; a share of requests is mirrored to the candidate
    CANARY = "canary"  # a sticky share of entities is answered by the candidate
    BLUEGREEN = "bluegreen"  # the candidate answers everything; stable stays loaded for instant rollback


class Variant(StrEnum):
    STABLE = "stable"
    CANDIDATE = "candidate"
    SHADOW = "shadow"


def entity_bucket(model: str, entity: str) -> int:
    """A stable bucket in ``[0, 10000)`` for (model, entity), the same on every replica and run.

    >>> entity_bucket("fraud", "card_1") == entity_bucket("fraud", "card_1")
    True
    >>> 0 <= entity_bucket("fraud", "card_2") < 10_000
    True
    """
    digest = hashlib.blake2b(f"{model}\x00{entity}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


@dataclass(frozen=True, slots=True)
class Route:
    """Where one request goes: the version that answers, and a version to mirror it to."""

    version: int
    variant: Variant
    shadow_version: int | None = None


@dataclass(frozen=True, slots=True)
class RoutingPolicy:
    model: str
    stable: int
    mode: Mode = Mode.STABLE
    candidate: int | None = None
    canary_weight_pct: float = 0.0
    shadow_share: float = 0.0
    revision: int = 0
    rollout_id: str | None = None
    updated_ms: int = 0

    def __post_init__(self) -> None:
        if self.stable < 1:
            raise ValueError(f"stable version must be >= 1, got {self.stable}")
        if self.mode is not Mode.STABLE and self.candidate is None:
            raise ValueError(f"mode {self.mode} needs a candidate version")
        if not 0.0 <= self.canary_weight_pct <= 100.0:
            raise ValueError(f"canary_weight_pct must be within [0, 100], got {self.canary_weight_pct}")
        if not 0.0 <= self.shadow_share <= 1.0:
            raise ValueError(f"shadow_share must be within [0, 1], got {self.shadow_share}")

    def route(self, entity: str) -> Route:
        """The route for ``entity`` under this policy.

        >>> p = RoutingPolicy("fraud", stable=1, mode=Mode.CANARY, candidate=2, canary_weight_pct=100)
        >>> p.route("card_9")
        Route(version=2, variant=<Variant.CANDIDATE: 'candidate'>, shadow_version=None)
        """
        if self.mode is Mode.STABLE or self.candidate is None:
            return Route(self.stable, Variant.STABLE)
        if self.mode is Mode.BLUEGREEN:
            return Route(self.candidate, Variant.CANDIDATE)
        bucket = entity_bucket(self.model, entity)
        if self.mode is Mode.CANARY:
            if bucket < self.canary_weight_pct * (BUCKETS / 100.0):
                return Route(self.candidate, Variant.CANDIDATE)
            return Route(self.stable, Variant.STABLE)
        mirrored = bucket < self.shadow_share * BUCKETS
        return Route(self.stable, Variant.STABLE, self.candidate if mirrored else None)

    def versions(self) -> set[int]:
        """The versions a replica must have loaded to serve this policy."""
        return {self.stable} | ({self.candidate} if self.candidate is not None else set())

    def next_revision(self, **changes: Any) -> RoutingPolicy:
        return replace(self, revision=self.revision + 1, **changes)

    def to_dict(self) -> dict[str, Any]:
        body = asdict(self)
        body["mode"] = self.mode.value
        return body

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> RoutingPolicy:
        return cls(
            model=str(body["model"]),
            stable=int(body["stable"]),
            mode=Mode(body.get("mode", "stable")),
            candidate=None if body.get("candidate") is None else int(body["candidate"]),
            canary_weight_pct=float(body.get("canary_weight_pct", 0.0)),
            shadow_share=float(body.get("shadow_share", 0.0)),
            revision=int(body.get("revision", 0)),
            rollout_id=body.get("rollout_id"),
            updated_ms=int(body.get("updated_ms", 0)),
        )


async def read_policy(kv: KeyValue, model: str) -> RoutingPolicy | None:
    try:
        entry = await kv.get(model)
    except KeyNotFoundError:
        return None
    if entry.value is None:
        return None
    return RoutingPolicy.from_dict(decode(entry.value))


async def write_policy(kv: KeyValue, policy: RoutingPolicy) -> int:
    """Store the policy; returns the KV revision (sequence) it was written at."""
    return await kv.put(policy.model, encode(policy.to_dict()))
