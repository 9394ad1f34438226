"""msgpack on the wire: maps with short string keys.

Decoding is strict: no bytes where strings belong, a size and depth bound, and a
clear :class:`~shared.errors.BadRequest` for anything that is not a msgpack map.
"""

from __future__ import annotations

from typing import Any

import msgpack

from shared.errors import BadRequest

MAX_MESSAGE_BYTES = 1 << 20
MAX_DEPTH = 16


def encode(value: Any) -> bytes:
    """Serialize ``value`` to msgpack.

    >>> decode(encode({"a": [1, 2.5, "x"]}))
    {'a': [1, 2.5, 'x']}
    """
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


def decode_any(data: bytes, *, check_depth: bool = True) -> Any:
    """Deserialize msgpack of any top-level type, with a size bound and (unless ``check_depth``
    is off) a nesting-depth bound."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise BadRequest(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        value = msgpack.unpackb(data, raw=False, strict_map_key=True, max_bin_len=MAX_MESSAGE_BYTES)
    except (msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, ValueError, TypeError) as error:
        raise BadRequest(f"payload is not valid msgpack: {error}") from error
    if check_depth and _depth(value) > MAX_DEPTH:
        raise BadRequest(f"payload nests deeper than {MAX_DEPTH} levels")
    return value


def decode(data: bytes, *, check_depth: bool = True) -> dict[str, Any]:
    """Deserialize a msgpack map; anything else is a :class:`BadRequest`.

    ``check_depth=False`` skips the walk over every value that bounds the nesting, for a reader
    whose message type refuses nested values itself (the walk is a large share of decoding a
    small flat message).

    >>> decode(b"\\x91\\x01")
    Traceback (most recent call last):
    ...
    shared.errors.BadRequest: payload must be a msgpack map, got list
    """
    value = decode_any(data, check_depth=check_depth)
    if not isinstance(value, dict):
        raise BadRequest(f"payload must be a msgpack map, got {type(value).__name__}")
    return value


def _depth(value: Any) -> int:
    """How deeply maps and lists nest in ``value`` (a scalar 0, a flat map 1), counted up to one
    past :data:`MAX_DEPTH`. Level by level, keeping only the containers: a flat message's values
    cost one type check each. Iterative, so a hostile payload cannot blow the Python stack."""
    level = 0
    containers = [value] if isinstance(value, (dict, list)) else []
    while containers:
        level += 1
        if level > MAX_DEPTH:
            return level
        inner = []
        for container in containers:
            for child in container.values() if isinstance(container, dict) else container:
                if isinstance(child, (dict, list)):
                    inner.append(child)
        containers = inner
    return level
