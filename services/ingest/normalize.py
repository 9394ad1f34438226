"""Pure value normalizers: each takes a raw value and the field's path, returns the canonical value or raises
:class:`~services.ingest.reasons.Rejection` naming the field and the reason.

Timestamps become epoch milliseconds UTC, numeric strings become numbers, categorical values are trimmed and
lower-cased, currencies become upper-case ISO-4217 codes and amounts are checked against the currency's
minor unit.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any

from services.ingest.currencies import minor_unit_exponent
from services.ingest.reasons import Reason, Rejection

_NUMERIC = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$")
_INTEGER = re.compile(r"^[+-]?\d+$")
_NON_FINITE_WORDS = frozenset({"nan", "+nan", "-nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"})
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1

# Epoch magnitudes: below 1e11 reads as seconds (1e11 s is the year 5138, 1e11 ms is 1973), below 1e14 as
# milliseconds (1e14 ms is the year 5138), below 1e17 as microseconds. Anything larger is refused rather
# than guessed at: nanoseconds are not a unit the contract accepts.
_SECONDS_BELOW = 1e11
_MILLIS_BELOW = 1e14
_MICROS_BELOW = 1e17


def to_number(value: Any, field: str) -> float:
    """A finite float from a number, a numeric string or a boolean (``true`` is 1).

    >>> to_number(" 12.5 ", "x"), to_number(3, "x"), to_number(True, "x")
    (12.5, 3.0, 1.0)
    >>> to_number("NaN", "x")
    Traceback (most recent call last):
    ...
    services.ingest.reasons.Rejection: not_finite at x: must be a finite number, got 'NaN'
    """
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in _NON_FINITE_WORDS:
            raise Rejection(Reason.NOT_FINITE, field, f"must be a finite number, got {_show(value)}")
        if not _NUMERIC.match(text):
            raise Rejection(Reason.WRONG_TYPE, field, f"must be a number, got the string {_show(value)}")
        value = float(text)
    elif isinstance(value, int):
        try:
            value = float(value)
        except OverflowError:
            raise Rejection(Reason.NOT_FINITE, field, "integer too large for a number") from None
    elif not isinstance(value, float):
        raise Rejection(Reason.WRONG_TYPE, field, f"must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise Rejection(Reason.NOT_FINITE, field, f"must be a finite number, got {value!r}")
    return float(value)


def to_integer(value: Any, field: str) -> int:
    """An int (64-bit) from an int, an integral float or an integer string.

    >>> to_integer("42", "n"), to_integer(7.0, "n")
    (42, 7)
    >>> to_integer(7.5, "n")
    Traceback (most recent call last):
    ...
    services.ingest.reasons.Rejection: wrong_type at n: must be an integer, got 7.5
    """
    if isinstance(value, bool):
        raise Rejection(Reason.WRONG_TYPE, field, "must be an integer, got a boolean")
    if isinstance(value, str):
        text = value.strip()
        if not _INTEGER.match(text):
            if text.lower() in _NON_FINITE_WORDS:
                raise Rejection(Reason.NOT_FINITE, field, f"must be a finite integer, got {_show(value)}")
            raise Rejection(Reason.WRONG_TYPE, field, f"must be an integer, got the string {_show(value)}")
        result = int(text)
    elif isinstance(value, int):
        result = value
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise Rejection(Reason.NOT_FINITE, field, f"must be a finite integer, got {value!r}")
        if not value.is_integer():
            raise Rejection(Reason.WRONG_TYPE, field, f"must be an integer, got {value!r}")
        result = int(value)
    else:
        raise Rejection(Reason.WRONG_TYPE, field, f"must be an integer, got {type(value).__name__}")
    if not INT64_MIN <= result <= INT64_MAX:
        raise Rejection(Reason.OUT_OF_RANGE, field, "integer outside the 64-bit range")
    return result


def to_boolean(value: Any, field: str) -> bool:
    """A bool from a boolean, 0/1 or the strings true/false/yes/no/1/0 (any case).

    >>> to_boolean("Yes", "b"), to_boolean(0, "b")
    (True, False)
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("true", "yes", "1"):
            return True
        if text in ("false", "no", "0"):
            return False
    raise Rejection(Reason.WRONG_TYPE, field, f"must be a boolean, got {_show(value)}")


def to_string(value: Any, field: str) -> str:
    """A trimmed string; integers are accepted and written in decimal (ids often arrive as numbers).

    >>> to_string("  card-1 ", "c"), to_string(12, "c")
    ('card-1', '12')
    """
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise Rejection(Reason.WRONG_TYPE, field, f"must be a string, got {type(value).__name__}")


def to_category(value: Any, field: str) -> str:
    """A categorical value: trimmed and lower-cased.

    >>> to_category("  Online ", "channel")
    'online'
    """
    return to_string(value, field).lower()


def to_currency(value: Any, field: str) -> str:
    """An upper-case ISO-4217 code.

    >>> to_currency(" eur", "currency")
    'EUR'
    >>> to_currency("EURO", "currency")
    Traceback (most recent call last):
    ...
    services.ingest.reasons.Rejection: bad_currency at currency: 'EURO' is not an ISO-4217 currency code
    """
    if not isinstance(value, str):
        raise Rejection(Reason.WRONG_TYPE, field, f"must be an ISO-4217 code string, got {type(value).__name__}")
    code = value.strip().upper()
    if minor_unit_exponent(code) is None:
        raise Rejection(Reason.BAD_CURRENCY, field, f"{_show(value)} is not an ISO-4217 currency code")
    return code


def to_epoch_ms(value: Any, field: str) -> int:
    """Epoch milliseconds UTC from ISO-8601 or epoch seconds, milliseconds or microseconds (told apart by size).

    A string without an offset is read as UTC.

    >>> to_epoch_ms("2024-01-02T03:04:05.678Z", "ts")
    1704164645678
    >>> to_epoch_ms(1704164645.678, "ts"), to_epoch_ms(1704164645678, "ts"), to_epoch_ms("1704164645678000", "ts")
    (1704164645678, 1704164645678, 1704164645678)
    >>> to_epoch_ms("2024-01-02T04:04:05.678+01:00", "ts")
    1704164645678
    """
    if isinstance(value, bool):
        raise Rejection(Reason.BAD_TIMESTAMP, field, "must be a timestamp, got a boolean")
    if isinstance(value, str):
        text = value.strip()
        if _NUMERIC.match(text):
            return _epoch_number_to_ms(float(text) if not _INTEGER.match(text) else int(text), field)
        if text.lower() in _NON_FINITE_WORDS:
            raise Rejection(Reason.NOT_FINITE, field, f"timestamp must be finite, got {_show(value)}")
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise Rejection(
                Reason.BAD_TIMESTAMP, field, f"{_show(value)} is neither ISO-8601 nor an epoch number"
            ) from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        try:
            return round(parsed.timestamp() * 1000)
        except (OverflowError, ValueError, OSError):
            raise Rejection(Reason.BAD_TIMESTAMP, field, f"{_show(value)} is outside the representable range") from None
    if isinstance(value, int | float):
        return _epoch_number_to_ms(value, field)
    raise Rejection(Reason.BAD_TIMESTAMP, field, f"must be a timestamp, got {type(value).__name__}")


def _epoch_number_to_ms(value: int | float, field: str) -> int:
    if isinstance(value, float) and not math.isfinite(value):
        raise Rejection(Reason.NOT_FINITE, field, f"timestamp must be finite, got {value!r}")
    magnitude = abs(value)
    if magnitude < _SECONDS_BELOW:
        scaled: int | float = value * 1000
    elif magnitude < _MILLIS_BELOW:
        scaled = value
    elif magnitude < _MICROS_BELOW:
        scaled = value / 1000 if isinstance(value, float) else _div_round(value, 1000)
    else:
        raise Rejection(Reason.BAD_TIMESTAMP, field, f"epoch value {value!r} is too large for s, ms or us")
    return scaled if isinstance(scaled, int) else round(scaled)


def _div_round(value: int, divisor: int) -> int:
    """Integer division rounding half away from zero, exact for any int size."""
    quotient, remainder = divmod(abs(value), divisor)
    if remainder * 2 >= divisor:
        quotient += 1
    return quotient if value >= 0 else -quotient


def to_amount(major: Any, minor: Any, currency: str, field: str) -> tuple[float, int]:
    """``(major units, minor units)`` of an amount given in major units, minor units or both (which must agree).

    An amount in major units with more decimals than the currency has is refused rather than rounded:
    a stray decimal usually means the amount was in the wrong unit.

    >>> to_amount("12.50", None, "EUR", "amount")
    (12.5, 1250)
    >>> to_amount(None, 1250, "JPY", "amount")
    (1250.0, 1250)
    >>> to_amount(1.5, None, "JPY", "amount")
    Traceback (most recent call last):
    ...
    services.ingest.reasons.Rejection: bad_amount at amount: 1.5 has more decimals than JPY allows (0)
    """
    exponent = minor_unit_exponent(currency)
    if exponent is None:  # the currency field was validated first; this guards direct callers
        raise Rejection(Reason.BAD_CURRENCY, field, f"{currency!r} is not an ISO-4217 currency code")
    scale = 10**exponent
    minor_units: int | None = None
    if minor is not None:
        minor_units = to_integer(minor, f"{field}_minor")
    if major is not None:
        if isinstance(major, bool):
            raise Rejection(Reason.WRONG_TYPE, field, "must be an amount, got a boolean")
        amount = to_number(major, field)
        scaled = amount * scale
        if abs(scaled) > INT64_MAX / 2:
            raise Rejection(Reason.OUT_OF_RANGE, field, f"{amount!r} is too large an amount")
        rounded = round(scaled)
        if abs(scaled - rounded) > 1e-6 * max(1.0, abs(scaled)):
            raise Rejection(
                Reason.BAD_AMOUNT, field, f"{amount!r} has more decimals than {currency} allows ({exponent})"
            )
        if minor_units is not None and minor_units != rounded:
            raise Rejection(Reason.BAD_AMOUNT, field, f"{field}={amount!r} and {field}_minor={minor_units} disagree")
        minor_units = rounded
    if minor_units is None:
        raise Rejection(Reason.MISSING_FIELD, field, f"required field is missing (give {field} or {field}_minor)")
    return minor_units / scale, minor_units


def _show(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
