"""W3C traceparent parsing and propagation."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shared.tracing import TRACEPARENT, TraceContext, current_trace, from_headers, outgoing_headers


@given(st.text(max_size=80))
def test_parse_never_raises(header: str) -> None:
    parsed = TraceContext.parse(header)
    assert parsed is None or parsed.header() == header.strip().lower()


def test_new_context_round_trips() -> None:
    context = TraceContext.new()
    assert TraceContext.parse(context.header()) == context


def test_all_zero_ids_are_invalid() -> None:
    assert TraceContext.parse("00-" + "0" * 32 + "-00f067aa0ba902b7-01") is None


def test_outgoing_headers_continue_the_current_trace() -> None:
    incoming = from_headers({TRACEPARENT: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})
    token = current_trace.set(incoming)
    try:
        child = TraceContext.parse(outgoing_headers({"x": "1"})[TRACEPARENT])
    finally:
        current_trace.reset(token)
    assert child is not None and child.trace_id == incoming.trace_id and child.span_id != incoming.span_id
