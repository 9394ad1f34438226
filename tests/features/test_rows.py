"""Offline rows: the fast JSON path against the standard library's, on any data msgpack can carry."""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.features.rows import clean, data_json

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text()
    | st.binary(max_size=8)
)
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4)
)
keys = st.text() | st.binary(max_size=4)


def _reference(data: dict[Any, Any]) -> Any:
    """What the standard library makes of the cleaned data, read back."""
    return json.loads(json.dumps(clean(data), default=str))


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


@settings(max_examples=300, deadline=None)
@given(data=st.dictionaries(keys, values, max_size=6))
def test_data_json_reads_back_as_the_stdlib_json_of_the_cleaned_data(data: dict[Any, Any]) -> None:
    # equal to the cleaned data read back, so no NUL (which jsonb refuses) and no NaN is left
    assert _same(json.loads(data_json(data)), _reference(data))


def test_data_json_edge_values() -> None:
    data = {"nan": float("nan"), "inf": -math.inf, "nul": "a\x00b", "bytes": b"\x01", "big": 2**70, b"k": 1}
    assert json.loads(data_json(data)) == {
        "nan": None, "inf": None, "nul": "a\ufffdb", "bytes": "b'\\x01'", "big": 2**70, "b'k'": 1,
    }  # fmt: skip
