"""The msgpack codec: round trips, and hostile payloads refused with a clear 400."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.codec import MAX_DEPTH, MAX_MESSAGE_BYTES, _depth, decode, decode_any, encode
from shared.errors import BadRequest

scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.text()
values = st.recursive(
    scalars | st.binary(max_size=64),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)


@given(st.dictionaries(st.text(max_size=16), values, max_size=8))
def test_round_trip(body: dict[str, Any]) -> None:
    assert decode(encode(body)) == body


@given(st.binary(max_size=256))
def test_arbitrary_bytes_decode_or_fail_with_bad_request(data: bytes) -> None:
    try:
        decoded = decode(data)
    except BadRequest as error:
        assert error.code == 400
    else:
        assert isinstance(decoded, dict)


def test_refuses_non_map_deep_and_oversize() -> None:
    with pytest.raises(BadRequest, match="msgpack map, got list"):
        decode(encode([1, 2]))
    nested: Any = 1
    for _ in range(MAX_DEPTH + 1):
        nested = [nested]
    with pytest.raises(BadRequest, match="nests deeper"):
        decode_any(encode(nested))
    with pytest.raises(BadRequest, match="exceeds"):
        decode(b"\x80" * (MAX_MESSAGE_BYTES + 1))
    with pytest.raises(BadRequest, match="not valid msgpack"):
        decode(b"\xc1")
    with pytest.raises(BadRequest, match="not valid msgpack"):
        decode(msgpack.packb({1: 2}))  # non-string keys are refused


def test_decode_without_the_depth_walk_still_refuses_what_is_not_a_map() -> None:
    assert decode(encode({"a": 1}), check_depth=False) == {"a": 1}
    with pytest.raises(BadRequest, match="msgpack map"):
        decode(encode([1, 2]), check_depth=False)
    with pytest.raises(BadRequest, match="not valid msgpack"):
        decode(b"\xc1", check_depth=False)


def _nesting(value: Any) -> int:
    """Brute force: how deeply maps and lists nest (recursive, for the test's small values)."""
    if isinstance(value, dict):
        return 1 + max((_nesting(child) for child in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_nesting(child) for child in value), default=0)
    return 0


def _chain(levels: int, leaf: Any) -> Any:
    nested = leaf
    for level in range(levels):
        nested = [nested, 1] if level % 2 else {"k": nested, "x": 2}
    return nested


@given(values | st.builds(_chain, st.integers(0, 3 * MAX_DEPTH), values))
def test_depth_equals_a_brute_force_count_up_to_one_past_the_bound(value: Any) -> None:
    assert _depth(value) == min(_nesting(value), MAX_DEPTH + 1)
