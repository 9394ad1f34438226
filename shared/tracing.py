"""W3C trace context (``traceparent``) carried in NATS headers from hop to hop.

The current trace lives in a context variable, so structlog binds its id to every
log line and every outgoing message carries it on without handlers passing it.
"""

from __future__ import annotations

import contextvars
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

TRACEPARENT = "traceparent"
_PATTERN = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


@dataclass(frozen=True, slots=True)
class TraceContext:
    trace_id: str
    span_id: str
    flags: str = "01"

    @classmethod
    def new(cls) -> TraceContext:
        return cls(secrets.token_hex(16), secrets.token_hex(8))

    @classmethod
    def parse(cls, header: str | None) -> TraceContext | None:
        """Parse a ``traceparent`` header; ``None`` when absent or malformed.

        >>> TraceContext.parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").span_id
        '00f067aa0ba902b7'
        >>> TraceContext.parse("garbage") is None
        True
        """
        if not header:
            return None
        match = _PATTERN.match(header.strip().lower())
        if match is None or match.group(1) == "0" * 32 or match.group(2) == "0" * 16:
            return None
        return cls(match.group(1), match.group(2), match.group(3))

    def child(self) -> TraceContext:
        """The context for a hop made on behalf of this one: same trace, new span."""
        return TraceContext(self.trace_id, secrets.token_hex(8), self.flags)

    def header(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"


current_trace: contextvars.ContextVar[TraceContext | None] = contextvars.ContextVar("rtml_trace", default=None)


def from_headers(headers: Mapping[str, str] | None) -> TraceContext:
    """The incoming context, or a fresh trace when the caller sent none."""
    parsed = TraceContext.parse((headers or {}).get(TRACEPARENT))
    return parsed if parsed is not None else TraceContext.new()


def outgoing_headers(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Headers for a message sent now: the current trace's child span plus ``extra``."""
    headers = dict(extra or {})
    trace = current_trace.get()
    headers[TRACEPARENT] = (trace.child() if trace is not None else TraceContext.new()).header()
    return headers
