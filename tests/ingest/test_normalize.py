"""Value normalizers against references: datetime for timestamps, exact decimal arithmetic for amounts."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.ingest.currencies import MINOR_UNIT_EXPONENT
from services.ingest.normalize import (
    to_amount,
    to_boolean,
    to_category,
    to_currency,
    to_epoch_ms,
    to_integer,
    to_number,
)
from services.ingest.reasons import Reason, Rejection

# 1973-03-03 (1e11 ms) to 2200-01-01: the span where seconds, milliseconds and microseconds are unambiguous
MS_RANGE = st.integers(min_value=100_000_000_000, max_value=7_258_118_400_000)


def reason_of(fn: Any, *args: Any) -> Reason:
    with pytest.raises(Rejection) as caught:
        fn(*args)
    return caught.value.reason


@given(MS_RANGE)
def test_epoch_units_agree(ms: int) -> None:
    assert to_epoch_ms(ms, "ts") == ms
    assert to_epoch_ms(ms * 1000, "ts") == ms
    assert to_epoch_ms(ms * 1000 + 499, "ts") == ms
    assert to_epoch_ms(str(ms * 1000), "ts") == ms
    assert to_epoch_ms(ms / 1000, "ts") == ms
    assert to_epoch_ms(str(ms), "ts") == ms


@given(MS_RANGE, st.integers(min_value=-14 * 60, max_value=14 * 60))
def test_iso8601_matches_datetime(ms: int, offset_min: int) -> None:
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    local = moment.astimezone(timezone(timedelta(minutes=offset_min)))
    assert to_epoch_ms(local.isoformat(timespec="milliseconds"), "ts") == ms
    assert to_epoch_ms(moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z", "ts") == ms
    # no offset reads as UTC
    assert to_epoch_ms(moment.replace(tzinfo=None).isoformat(), "ts") == ms


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("yesterday", Reason.BAD_TIMESTAMP),
        (True, Reason.BAD_TIMESTAMP),
        ([1], Reason.BAD_TIMESTAMP),
        (float("nan"), Reason.NOT_FINITE),
        (float("inf"), Reason.NOT_FINITE),
        ("inf", Reason.NOT_FINITE),
        (10**18, Reason.BAD_TIMESTAMP),  # nanoseconds are not accepted
        ("2024-13-01T00:00:00Z", Reason.BAD_TIMESTAMP),
    ],
)
def test_bad_timestamps(value: Any, reason: Reason) -> None:
    assert reason_of(to_epoch_ms, value, "ts") == reason


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_numeric_strings_become_the_same_number(x: float) -> None:
    assert to_number(repr(x), "x") == x
    assert to_number(f"  {x!r}\t", "x") == x


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("12,5", Reason.WRONG_TYPE),
        ("1_000", Reason.WRONG_TYPE),
        ("NaN", Reason.NOT_FINITE),
        ("-Infinity", Reason.NOT_FINITE),
        (float("nan"), Reason.NOT_FINITE),
        (float("-inf"), Reason.NOT_FINITE),
        ("1e999", Reason.NOT_FINITE),
        (10**400, Reason.NOT_FINITE),
        (None, Reason.WRONG_TYPE),
        ({"a": 1}, Reason.WRONG_TYPE),
    ],
)
def test_bad_numbers(value: Any, reason: Reason) -> None:
    assert reason_of(to_number, value, "x") == reason


def test_integers() -> None:
    assert to_integer(" -12 ", "n") == -12
    assert to_integer(3.0, "n") == 3
    assert reason_of(to_integer, 1 << 63, "n") == Reason.OUT_OF_RANGE
    assert reason_of(to_integer, "1.5", "n") == Reason.WRONG_TYPE
    assert reason_of(to_integer, False, "n") == Reason.WRONG_TYPE
    assert reason_of(to_integer, math.nan, "n") == Reason.NOT_FINITE


def test_booleans_categories_currencies() -> None:
    assert [to_boolean(v, "b") for v in ("TRUE", " no ", 1, False)] == [True, False, True, False]
    assert reason_of(to_boolean, "maybe", "b") == Reason.WRONG_TYPE
    assert to_category("\tPOS  ", "c") == "pos"
    assert to_currency("usd ", "c") == "USD"
    assert reason_of(to_currency, "US$", "c") == Reason.BAD_CURRENCY
    assert reason_of(to_currency, 978, "c") == Reason.WRONG_TYPE


@given(st.sampled_from(sorted(MINOR_UNIT_EXPONENT)), st.integers(min_value=0, max_value=10**12))
def test_amount_major_and_minor_agree_exactly(currency: str, minor: int) -> None:
    exponent = MINOR_UNIT_EXPONENT[currency]
    major_text = str(Decimal(minor).scaleb(-exponent))
    major, minor_out = to_amount(major_text, None, currency, "amount")
    assert minor_out == minor
    assert major == pytest.approx(float(Decimal(minor).scaleb(-exponent)), rel=1e-12)
    assert to_amount(None, minor, currency, "amount") == (major, minor)
    assert to_amount(major_text, minor, currency, "amount") == (major, minor)


def test_amount_errors() -> None:
    assert reason_of(to_amount, "10.001", None, "EUR", "amount") == Reason.BAD_AMOUNT
    assert reason_of(to_amount, "10.00", 999, "EUR", "amount") == Reason.BAD_AMOUNT
    assert reason_of(to_amount, None, None, "EUR", "amount") == Reason.MISSING_FIELD
    assert reason_of(to_amount, None, 1.5, "EUR", "amount") == Reason.WRONG_TYPE
    assert reason_of(to_amount, True, None, "EUR", "amount") == Reason.WRONG_TYPE
    assert reason_of(to_amount, 1e300, None, "EUR", "amount") == Reason.OUT_OF_RANGE
    assert to_amount("10.001", None, "KWD", "amount") == (10.001, 10001)
