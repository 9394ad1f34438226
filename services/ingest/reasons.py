"""Why an event was refused: one code per way an input can be wrong, and the exception that carries it."""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Reason codes, written to the ``Rtml-Reason`` header of every dead letter."""

    OVERSIZE = "oversize"
    UNDECODABLE = "undecodable"
    NOT_A_MAP = "not_a_map"
    TOO_DEEP = "too_deep"
    BAD_SUBJECT = "bad_subject"
    UNKNOWN_TYPE = "unknown_type"
    TYPE_MISMATCH = "type_mismatch"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    NOT_FINITE = "not_finite"
    OUT_OF_RANGE = "out_of_range"
    NOT_ALLOWED = "not_allowed"
    BAD_FORMAT = "bad_format"
    BAD_TIMESTAMP = "bad_timestamp"
    BAD_CURRENCY = "bad_currency"
    BAD_AMOUNT = "bad_amount"
    FROM_FUTURE = "from_future"
    TOO_OLD = "too_old"
    HANDLER_CRASH = "handler_crash"


class Rejection(Exception):
    """An input refused for ``reason``; ``field`` names the offending field ('' for the whole message).

    >>> str(Rejection(Reason.MISSING_FIELD, "data.card", "required field is missing"))
    'missing_field at data.card: required field is missing'
    """

    def __init__(self, reason: Reason, field: str, message: str) -> None:
        super().__init__(f"{reason.value} at {field or '<message>'}: {message}")
        self.reason = reason
        self.field = field
        self.message = message
