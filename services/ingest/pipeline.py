"""One input message to one outcome, with no I/O: accepted (the subject, bytes and msg id to publish) or
rejected (the reason, for the dead-letter queue). A schema hook that raises anything but a
:class:`Rejection` propagates: that is a crash, which the consumer retries and then dead-letters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from services.ingest.decoding import decode_event, nesting_depth
from services.ingest.reasons import Reason, Rejection
from services.ingest.schema import SchemaRegistry
from services.ingest.validate import Limits, NormalizedEvent, event_id, normalize_event
from shared.codec import encode
from shared.messages import Label
from shared.subjects import Names, check_token

INVALID_TYPE = "_invalid"  # dead-letter subject token for a subject that names no valid type
UNKNOWN_TYPE = "_unknown"  # metric label for types without a schema (keeps label cardinality bounded)


@dataclass(frozen=True, slots=True)
class Accepted:
    event_type: str
    subject: str
    payload: bytes
    msg_id: str
    ts: int
    unknown_fields: int
    schema_version: int


@dataclass(frozen=True, slots=True)
class Rejected:
    event_type: str  # the token of the dead-letter subject
    metric_type: str  # the type label for metrics
    rejection: Rejection
    event_id: str | None


Outcome = Accepted | Rejected


@dataclass(frozen=True, slots=True)
class Pipeline:
    registry: SchemaRegistry
    names: Names
    limits: Limits = field(default_factory=Limits)
    max_bytes: int = 64 * 1024
    max_depth: int = 8

    def type_of_subject(self, subject: str) -> str | None:
        """The event type an input subject names, ``None`` when it names none.

        >>> Pipeline(SchemaRegistry(), Names("rtml")).type_of_subject("rtml.events.transaction")
        'transaction'
        >>> Pipeline(SchemaRegistry(), Names("rtml")).type_of_subject("rtml.events.a.b") is None
        True
        """
        prefix = self.names.events("")
        if not subject.startswith(prefix):
            return None
        token = subject[len(prefix) :]
        try:
            return check_token("event type", token)
        except ValueError:
            return None

    def process(self, subject: str, data: bytes, *, content_type: str | None, now_ms: int) -> Outcome:
        """Decode, validate and normalize one input published on ``subject``."""
        event_type = self.type_of_subject(subject)
        if event_type is None:
            rejection = Rejection(Reason.BAD_SUBJECT, "", f"subject {subject[:120]!r} does not name an event type")
            return Rejected(INVALID_TYPE, INVALID_TYPE, rejection, None)
        try:
            body = decode_event(data, content_type=content_type, max_bytes=self.max_bytes, max_depth=self.max_depth)
        except Rejection as rejection:
            return Rejected(event_type, self._metric_type(event_type), rejection, None)
        return self.process_map(event_type, body, now_ms=now_ms, depth_checked=True)

    def process_map(
        self, event_type: str, body: dict[Any, Any], *, now_ms: int, depth_checked: bool = False
    ) -> Outcome:
        """Validate and normalize an already decoded event map of ``event_type``."""
        schema = self.registry.get(event_type)
        ident = event_id(body)
        try:
            if not depth_checked and nesting_depth(body, self.max_depth) > self.max_depth:
                raise Rejection(Reason.TOO_DEEP, "", f"payload nests deeper than {self.max_depth} levels")
            if schema is None:
                raise Rejection(Reason.UNKNOWN_TYPE, "type", f"no schema declares the event type {event_type!r}")
            event = normalize_event(body, schema, now_ms=now_ms, limits=self.limits)
        except Rejection as rejection:
            return Rejected(event_type, self._metric_type(event_type), rejection, ident)
        return self.accepted(event)

    def _metric_type(self, event_type: str) -> str:
        return event_type if self.registry.get(event_type) is not None else UNKNOWN_TYPE

    def accepted(self, event: NormalizedEvent) -> Accepted:
        schema = event.schema
        if schema.output == "label":
            label = Label(
                id=event.data["id"],
                label=float(event.data["label"]),
                ts=int(event.data.get("ts", event.ts)),
                event_id=event.id,
            )
            subject, payload = self.names.labels(schema.type), encode(label.to_dict())
        else:
            subject, payload = self.names.norm(schema.type), encode(event.to_dict())
        return Accepted(
            event_type=schema.type,
            subject=subject,
            payload=payload,
            msg_id=event.id,
            ts=event.ts,
            unknown_fields=event.unknown_fields,
            schema_version=schema.version,
        )
