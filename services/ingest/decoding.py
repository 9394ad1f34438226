"""Raw bytes to a map, or a precise reason why not: oversize, undecodable, too deep, not a map.

msgpack is the wire format; a message with ``Content-Type: application/json`` is read as JSON (clients
without msgpack, and dead letters that came in over HTTP).
"""

from __future__ import annotations

import json
from typing import Any

import msgpack

from services.ingest.reasons import Reason, Rejection

JSON_CONTENT_TYPE = "application/json"


def decode_event(data: bytes, *, content_type: str | None, max_bytes: int, max_depth: int) -> dict[Any, Any]:
    """The top-level map of an input message.

    >>> decode_event(b"\\x81\\xa1a\\x01", content_type=None, max_bytes=100, max_depth=4)
    {'a': 1}
    >>> decode_event(b"\\x92\\x01", content_type=None, max_bytes=100, max_depth=4)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    services.ingest.reasons.Rejection: undecodable at <message>: not valid msgpack (...)
    """
    if len(data) > max_bytes:
        raise Rejection(Reason.OVERSIZE, "", f"message of {len(data)} bytes exceeds the limit of {max_bytes}")
    value: Any
    if content_type is not None and content_type.split(";")[0].strip().lower() == JSON_CONTENT_TYPE:
        try:
            value = json.loads(data.decode("utf-8"))
        except RecursionError:
            raise Rejection(Reason.TOO_DEEP, "", f"JSON nests deeper than {max_depth} levels") from None
        except (UnicodeDecodeError, ValueError) as error:
            raise Rejection(Reason.UNDECODABLE, "", f"not valid JSON ({error})") from None
    else:
        try:
            value = msgpack.unpackb(data, raw=False, strict_map_key=False, max_bin_len=max_bytes, max_str_len=max_bytes)
        except msgpack.StackError:
            raise Rejection(Reason.TOO_DEEP, "", f"msgpack nests deeper than {max_depth} levels") from None
        except (msgpack.ExtraData, msgpack.FormatError, ValueError, TypeError, UnicodeDecodeError) as error:
            raise Rejection(Reason.UNDECODABLE, "", f"not valid msgpack ({error or type(error).__name__})") from None
        except Exception as error:  # msgpack raises a few undocumented types on hostile input
            raise Rejection(Reason.UNDECODABLE, "", f"not valid msgpack ({type(error).__name__})") from None
    if nesting_depth(value, max_depth) > max_depth:
        raise Rejection(Reason.TOO_DEEP, "", f"payload nests deeper than {max_depth} levels")
    if not isinstance(value, dict):
        raise Rejection(Reason.NOT_A_MAP, "", f"an event must be a map, got {_kind(value)}")
    return value


def nesting_depth(value: Any, limit: int) -> int:
    """Depth of nested maps and lists (a scalar is 0), counted up to ``limit + 1`` and no further.

    Iterative so a hostile payload cannot exhaust the Python stack.

    >>> nesting_depth({"a": [1, {"b": 2}]}, 10), nesting_depth(5, 10)
    (3, 0)
    """
    if not isinstance(value, dict | list | tuple):
        return 0
    if isinstance(value, dict) and limit >= 2:
        # The usual event: a map whose values are scalars or maps of scalars (two levels), checked with plain
        # loops; anything deeper takes the general walk below.
        depth = 1
        for child in value.values():
            if child.__class__ is dict:
                depth = 2
                for leaf in child.values():
                    if isinstance(leaf, dict | list | tuple):
                        depth = 0
                        break
            elif isinstance(child, dict | list | tuple):
                depth = 0
            if not depth:
                break
        if depth:
            return depth
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if level > deepest:
            deepest = level
            if level > limit:
                return level
        for child in item.values() if isinstance(item, dict) else item:
            if isinstance(child, dict | list | tuple):
                stack.append((child, level + 1))
    return deepest


def _kind(value: Any) -> str:
    return {list: "an array", str: "a string", bytes: "binary", type(None): "nil"}.get(
        type(value), type(value).__name__
    )
