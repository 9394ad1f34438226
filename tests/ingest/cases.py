"""Events for the tests: valid ones and one malformed input per way an input can be wrong, with its reason."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import msgpack

from services.ingest.reasons import Reason


@dataclass(frozen=True, slots=True)
class Case:
    """An input: the subject token after ``<ns>.events.``, the raw bytes, and the expected verdict."""

    name: str
    subject_type: str
    data: bytes
    reason: Reason | None  # None: valid
    field: str = ""
    content_type: str | None = None


def transaction(ident: str, now_ms: int, **data: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "card": "card-1", "merchant": "m-1", "amount": "12.34", "currency": "eur", "mcc": "5411",
        "country": " FR ", "channel": "Online", "device": "dev-1",
    }  # fmt: skip
    body.update(data)
    return {"id": ident, "type": "transaction", "entity": "card-1", "ts": now_ms, "data": body}


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


def deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {"x": 1}
    for _ in range(levels):
        value = {"x": value}
    return value


def valid_cases(prefix: str, count: int, now_ms: int) -> list[Case]:
    cases = []
    for i in range(count):
        ident = f"{prefix}-ok-{i}"
        match i % 4:
            case 0:
                body = transaction(ident, now_ms - i)
            case 1:  # seconds, numeric strings, minor units, unknown fields
                body = transaction(ident, 0, amount=None, amount_minor="1234", extra="dropped")
                body["ts"] = str((now_ms - i) / 1000)
                body = {**body, "data": {k: v for k, v in body["data"].items() if v is not None}}
            case 2:  # ISO-8601 in the data's timestamp field instead of the envelope ts
                body = transaction(ident, 0, timestamp="2030-01-01T00:00:00+00:00")
                del body["ts"]
                body["data"]["timestamp"] = now_ms * 1000  # microseconds
            case _:
                body = {
                    "id": ident,
                    "type": "label",
                    "entity": "card-1",
                    "ts": now_ms,
                    "data": {"id": f"p-{i}", "label": 1},
                }
        cases.append(Case(f"{prefix}-valid-{i}", body["type"], pack(body), None))
    return cases


def malformed_cases(prefix: str, now_ms: int) -> list[Case]:
    """One input per rejection reason the intake can reach (handler_crash has its own test)."""
    t = "transaction"

    def tx(name: str, **data: Any) -> dict[str, Any]:
        return transaction(f"{prefix}-{name}", now_ms, **data)

    future = tx("future")
    future["ts"] = now_ms + 3_600_000
    old = tx("old")
    old["ts"] = now_ms - 30 * 86_400_000
    no_id = tx("no-id")
    del no_id["id"]
    mismatch = tx("mismatch")
    mismatch["type"] = "label"
    data_list = tx("data-list")
    data_list["data"] = [1, 2]
    nested = tx("nested")
    nested["data"]["extra"] = deep(20)
    cases = [
        Case("oversize", t, pack({**tx("oversize"), "pad": "x" * 70_000}), Reason.OVERSIZE),
        Case("bad-msgpack", t, b"\xc1\x00\x01", Reason.UNDECODABLE),
        Case("truncated-msgpack", t, pack(tx("trunc"))[:-5], Reason.UNDECODABLE),
        Case("bad-json", t, b"{not json", Reason.UNDECODABLE, content_type="application/json"),
        Case("top-level-list", t, pack([1, 2, 3]), Reason.NOT_A_MAP),
        Case("top-level-string", t, pack("event"), Reason.NOT_A_MAP),
        Case("deep-nesting", t, pack(nested), Reason.TOO_DEEP),
        Case("bad-subject", "a.b", pack(tx("subject")), Reason.BAD_SUBJECT),
        Case("unknown-type", "refund", pack(tx("refund")), Reason.UNKNOWN_TYPE, "type"),
        Case("type-mismatch", t, pack(mismatch), Reason.TYPE_MISMATCH, "type"),
        Case("missing-id", t, pack(no_id), Reason.MISSING_FIELD, "id"),
        Case("missing-field", t, pack(tx("no-merchant", merchant=None)), Reason.MISSING_FIELD, "data.merchant"),
        Case("data-not-map", t, pack(data_list), Reason.WRONG_TYPE, "data"),
        Case("wrong-type", t, pack(tx("wrong", country=["fr"])), Reason.WRONG_TYPE, "data.country"),
        Case("nan-amount", t, pack(tx("nan", amount=float("nan"))), Reason.NOT_FINITE, "data.amount"),
        Case("inf-amount", t, pack(tx("inf", amount=float("inf"))), Reason.NOT_FINITE, "data.amount"),
        Case("negative-amount", t, pack(tx("neg", amount=-5)), Reason.OUT_OF_RANGE, "data.amount"),
        Case("bad-enum", t, pack(tx("enum", channel="telepathy")), Reason.NOT_ALLOWED, "data.channel"),
        Case("bad-format", t, pack(tx("mcc", mcc="54")), Reason.BAD_FORMAT, "data.mcc"),
        Case("bad-currency", t, pack(tx("cur", currency="EURO")), Reason.BAD_CURRENCY, "data.currency"),
        Case("bad-amount", t, pack(tx("amt", amount="1.234")), Reason.BAD_AMOUNT, "data.amount"),
        Case("bad-timestamp", t, pack({**tx("ts"), "ts": "soon"}), Reason.BAD_TIMESTAMP, "ts"),
        Case("from-future", t, pack(future), Reason.FROM_FUTURE, "ts"),
        Case("too-old", t, pack(old), Reason.TOO_OLD, "ts"),
        Case(
            "label-nan",
            "label",
            pack({"id": f"{prefix}-lnan", "entity": "c", "ts": now_ms, "data": {"id": "p", "label": float("nan")}}),
            Reason.NOT_FINITE,
            "data.label",
        ),
    ]
    return [dataclasses.replace(case, name=f"{prefix}-{case.name}") for case in cases]
