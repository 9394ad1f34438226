"""Every name derived from the namespace: subjects, streams, buckets, key prefixes, schema.

Two meshes with different namespaces never see each other's data, because nothing
outside this module spells a subject, stream, bucket, Redis key prefix or schema.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def check_token(kind: str, value: str) -> str:
    """A single subject token (an event type, model name, alert kind): no dots or wildcards.

    >>> check_token("model", "fraud")
    'fraud'
    >>> check_token("model", "a.b")
    Traceback (most recent call last):
    ...
    ValueError: model 'a.b' must be 1-64 characters of A-Z, a-z, 0-9, _ and -
    """
    if not _TOKEN.match(value):
        raise ValueError(f"{kind} {value!r} must be 1-64 characters of A-Z, a-z, 0-9, _ and -")
    return value


@dataclass(frozen=True, slots=True)
class Names:
    """The namespace's names; ``Names("rtml").predict("fraud") == "rtml.predict.fraud"``."""

    namespace: str

    # Subjects
    def events(self, event_type: str = ">") -> str:
        return f"{self.namespace}.events.{event_type}"

    def norm(self, event_type: str = ">") -> str:
        return f"{self.namespace}.norm.{event_type}"

    def dlq(self, event_type: str = ">") -> str:
        return f"{self.namespace}.dlq.{event_type}"

    def predict(self, model: str) -> str:
        return f"{self.namespace}.predict.{check_token('model', model)}"

    def predictions(self, model: str = ">") -> str:
        return f"{self.namespace}.predictions.{model}"

    def labels(self, model: str = ">") -> str:
        return f"{self.namespace}.labels.{model}"

    def alerts(self, kind: str = ">") -> str:
        return f"{self.namespace}.alerts.{kind}"

    @property
    def features_get(self) -> str:
        return f"{self.namespace}.features.get"

    # JetStream streams, KV and object store buckets
    def stream(self, flow: str) -> str:
        return f"{self.namespace}_{flow}"

    def consumer(self, service: str, purpose: str = "main") -> str:
        return f"{self.namespace}_{service}_{purpose}"

    @property
    def routing_bucket(self) -> str:
        return f"{self.namespace}_routing"

    @property
    def models_bucket(self) -> str:
        return f"{self.namespace}_models"

    @property
    def queue_group(self) -> str:
        return f"{self.namespace}_q"

    # Redis and Postgres
    @property
    def redis_prefix(self) -> str:
        return f"{self.namespace}:"

    def redis_key(self, *parts: str) -> str:
        return self.redis_prefix + ":".join(parts)

    @property
    def schema(self) -> str:
        return self.namespace
