"""The event types the fraud-detection domain ships with, declared as data (see :mod:`services.ingest.schema`).

The envelope's ``ts`` is the transaction's time; ``data.timestamp`` is accepted in its place for clients
that put it there.
"""

from __future__ import annotations

from typing import Any

BUILTIN_SCHEMAS: tuple[dict[str, Any], ...] = (
    {
        "type": "transaction",
        "version": 1,
        "description": "A card payment attempt.",
        "time_field": "timestamp",
        "fields": {
            "card": {"kind": "string", "max_len": 64, "description": "card token (the envelope's entity is the card)"},
            "merchant": {"kind": "string", "required": True, "max_len": 128, "description": "merchant id"},
            "amount": {
                "kind": "money", "required": True, "min": 0, "max": 1e9, "currency_field": "currency",
                "unit": "major currency units (amount_minor: minor units)",
            },
            "currency": {"kind": "currency", "required": True, "unit": "ISO-4217"},
            "mcc": {"kind": "string", "pattern": r"^[0-9]{4}$", "description": "ISO-18245 merchant category code"},
            "category": {"kind": "category", "max_len": 64, "description": "merchant category name"},
            "country": {"kind": "category", "required": True, "pattern": r"^[a-z]{2}$", "unit": "ISO-3166 alpha-2"},
            "channel": {"kind": "category", "required": True, "enum": ["pos", "online", "atm", "moto", "recurring"]},
            "device": {"kind": "string", "max_len": 128, "description": "device fingerprint"},
            "timestamp": {"kind": "timestamp", "unit": "epoch ms UTC"},
        },
    },
    {
        "type": "label",
        "version": 1,
        "description": "The known outcome of a prediction or event; its data is the Label message's {id, label, ts}.",
        "output": "label",
        "fields": {
            "id": {"kind": "string", "required": True, "description": "the prediction or event id it resolves"},
            "label": {"kind": "number", "required": True, "min": 0, "max": 1, "description": "1 fraud, 0 legitimate"},
            "ts": {"kind": "timestamp", "unit": "epoch ms UTC", "description": "when known (default: envelope ts)"},
        },
    },
)  # fmt: skip
