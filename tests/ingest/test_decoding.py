"""Decoding bounds: the nesting walk against a recursive reference, and the size limit."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.ingest.decoding import decode_event, nesting_depth
from services.ingest.reasons import Reason, Rejection
from tests.ingest.cases import deep, pack

NESTED = st.recursive(
    st.integers() | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=30,
)


def reference_depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((reference_depth(v) for v in value.values()), default=0)
    if isinstance(value, list | tuple):
        return 1 + max((reference_depth(v) for v in value), default=0)
    return 0


@given(NESTED, st.integers(min_value=2, max_value=12))
def test_depth_matches_reference_up_to_the_limit(value: Any, limit: int) -> None:
    expected = reference_depth(value)
    got = nesting_depth(value, limit)
    if expected <= limit:
        assert got == expected
    else:
        assert got > limit


def test_limits() -> None:
    assert decode_event(pack(deep(6)), content_type=None, max_bytes=1000, max_depth=8) == deep(6)
    for data, reason in ((pack(deep(8)), Reason.TOO_DEEP), (pack({"a": "x" * 2000}), Reason.OVERSIZE)):
        with pytest.raises(Rejection) as caught:
            decode_event(data, content_type=None, max_bytes=1000, max_depth=8)
        assert caught.value.reason == reason
    with pytest.raises(Rejection) as caught:
        decode_event(b"[" * 5000 + b"]" * 5000, content_type="application/json", max_bytes=20_000, max_depth=8)
    assert caught.value.reason == Reason.TOO_DEEP
