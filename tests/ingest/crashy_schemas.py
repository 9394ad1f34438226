"""A user schema module for the tests: a type declared in Python with a hook that can refuse or crash."""

from __future__ import annotations

from typing import Any

from services.ingest.reasons import Reason, Rejection

SCHEMAS = [
    {
        "type": "reading",
        "version": 2,
        "fields": {
            "sensor": {"kind": "category", "required": True},
            "value": {"kind": "number", "required": True, "min": -50, "max": 150, "unit": "celsius"},
            "poison": {"kind": "boolean"},
        },
    }
]


def _hook(data: dict[str, Any]) -> dict[str, Any]:
    if data.get("poison"):
        raise RuntimeError("poisoned reading")
    if data["sensor"] == "retired":
        raise Rejection(Reason.NOT_ALLOWED, "data.sensor", "sensor is retired")
    return {**data, "value_f": data["value"] * 9 / 5 + 32}


HOOKS = {"reading": _hook}
