"""Dead letters: the original bytes untouched, the reason in headers, and the way back (replay).

Headers of a dead letter:

=====================  =====================================================
``Rtml-Reason``        reason code (:class:`~services.ingest.reasons.Reason`)
``Rtml-Field``         the offending field ('' for the whole message)
``Rtml-Message``       a human message
``Rtml-Subject``       the subject the event came in on
``Rtml-Event-Id``      the event's id, when it had a usable one
``Rtml-Source``        ``nats`` (the events stream) or ``http``
``Rtml-Source-Seq``    its sequence in the events stream (nats)
``Rtml-Deliveries``    how many times it was delivered before this verdict
``Rtml-Rejected-At``   epoch ms of the verdict
``Content-Type``       copied from the input, so a JSON event replays as JSON
``Nats-Msg-Id``        ``<source>:<seq or event id>``: a redelivered input dead-letters once
=====================  =====================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from services.ingest.reasons import Rejection

REASON = "Rtml-Reason"
FIELD = "Rtml-Field"
MESSAGE = "Rtml-Message"
SUBJECT = "Rtml-Subject"
EVENT_ID = "Rtml-Event-Id"
SOURCE = "Rtml-Source"
SOURCE_SEQ = "Rtml-Source-Seq"
DELIVERIES = "Rtml-Deliveries"
REJECTED_AT = "Rtml-Rejected-At"
CONTENT_TYPE = "Content-Type"
MSG_ID = "Nats-Msg-Id"
REPLAY_OF = "Rtml-Replay-Of"
MAX_HEADER_CHARS = 512


def header_value(text: str) -> str:
    """Text made safe for a NATS header value: one line of printable characters, bounded.

    >>> header_value("bad\\r\\nvalue\\x00")
    'bad  value?'
    """
    cleaned = "".join(ch if ch.isprintable() else (" " if ch in "\r\n\t" else "?") for ch in text)
    return cleaned[:MAX_HEADER_CHARS]


def dead_letter_headers(
    rejection: Rejection,
    *,
    subject: str,
    event_id: str | None,
    source: str,
    source_key: str,
    deliveries: int,
    rejected_at_ms: int,
    content_type: str | None,
) -> dict[str, str]:
    headers = {
        REASON: rejection.reason.value,
        FIELD: header_value(rejection.field),
        MESSAGE: header_value(rejection.message),
        SUBJECT: header_value(subject),
        SOURCE: source,
        DELIVERIES: str(deliveries),
        REJECTED_AT: str(rejected_at_ms),
        MSG_ID: f"{source}:{header_value(source_key)}",
    }
    if event_id is not None:
        headers[EVENT_ID] = event_id
    if source == "nats":
        headers[SOURCE_SEQ] = source_key
    if content_type:
        headers[CONTENT_TYPE] = header_value(content_type)
    return headers


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A dead letter as read back from the DLQ stream."""

    seq: int
    subject: str
    data: bytes
    headers: Mapping[str, str]
    time_ms: int | None = None

    @property
    def reason(self) -> str:
        return self.headers.get(REASON, "")

    @property
    def field(self) -> str:
        return self.headers.get(FIELD, "")

    @property
    def message(self) -> str:
        return self.headers.get(MESSAGE, "")

    @property
    def event_type(self) -> str:
        return self.subject.rsplit(".", 1)[-1]

    def replay_subject(self) -> str:
        """Where it came in: the recorded subject."""
        return self.headers.get(SUBJECT, "")

    def replay_headers(self) -> dict[str, str]:
        """Headers for re-publishing to the events stream.

        The msg id is new (``replay:<dlq seq>``) so the events stream's dedup window does not swallow the
        replay of a message published moments ago, yet replaying the same dead letter twice stays one event.
        """
        headers = {MSG_ID: f"replay:{self.seq}", REPLAY_OF: str(self.seq)}
        if CONTENT_TYPE in self.headers:
            headers[CONTENT_TYPE] = self.headers[CONTENT_TYPE]
        return headers
