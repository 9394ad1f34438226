"""The views a features process serves: the fraud domain's, plus any a user adds in YAML.

``RTML_FEATURES_VIEWS`` names a YAML file ``{"views": [<view>, ...]}``; its views
are added to the fraud views (one of the same name replaces the shipped one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from services.features.views import FeatureView, ViewError, parse_views

# The fraud domain. Transactions are keyed by card (the event's entity); merchant
# volume keys the same events by their merchant.
FRAUD_VIEWS: tuple[dict[str, Any], ...] = (
    {
        "name": "card_velocity",
        "version": 1,
        "source": "transaction",
        "entity": "card",
        "lateness": "1m",
        "features": [
            {"name": "txn_count_1m", "agg": "count", "window": "1m"},
            {"name": "txn_count_5m", "agg": "count", "window": "5m"},
            {"name": "txn_count_1h", "agg": "count", "window": "1h"},
            {"name": "txn_count_24h", "agg": "count", "window": "24h"},
            {"name": "ms_since_last", "agg": "time_since_last", "window": "24h", "default": -1},
        ],
    },
    {
        "name": "card_amount",
        "version": 1,
        "source": "transaction",
        "entity": "card",
        "lateness": "1m",
        "features": [
            {"name": "amount_sum_1h", "agg": "sum", "field": "amount", "window": "1h"},
            {"name": "amount_mean_24h", "agg": "mean", "field": "amount", "window": "24h"},
            {"name": "amount_max_24h", "agg": "max", "field": "amount", "window": "24h"},
            {"name": "amount_min_24h", "agg": "min", "field": "amount", "window": "24h"},
            {"name": "amount_std_24h", "agg": "stddev", "field": "amount", "window": "24h"},
            {"name": "amount_mean_7d", "agg": "mean", "field": "amount", "window": "7d"},
            {"name": "amount_last", "agg": "last", "field": "amount"},
        ],
    },
    {
        "name": "card_diversity",
        "version": 1,
        "source": "transaction",
        "entity": "card",
        "lateness": "1m",
        "features": [
            {"name": "merchants_1h", "agg": "distinct_count", "field": "merchant", "window": "1h"},
            {"name": "merchants_24h", "agg": "distinct_count", "field": "merchant", "window": "24h"},
            {"name": "countries_24h", "agg": "distinct_count", "field": "country", "window": "24h"},
            {"name": "countries_7d", "agg": "distinct_count", "field": "country", "window": "7d"},
        ],
    },
    {
        "name": "merchant_volume",
        "version": 1,
        "source": "transaction",
        "entity": "merchant",
        "entity_field": "merchant",
        "lateness": "1m",
        "features": [
            {"name": "txn_count_5m", "agg": "count", "window": "5m"},
            {"name": "txn_count_1h", "agg": "count", "window": "1h"},
            {"name": "amount_sum_1h", "agg": "sum", "field": "amount", "window": "1h"},
            {"name": "amount_mean_24h", "agg": "mean", "field": "amount", "window": "24h"},
        ],
    },
)


def load_views(path: str | None) -> dict[str, FeatureView]:
    """The fraud views plus those in the YAML file at ``path`` (when given)."""
    bodies: list[Any] = list(FRAUD_VIEWS)
    if path:
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as error:
            raise ViewError(f"cannot read views from {path}: {error}") from error
        if not isinstance(loaded, dict) or not isinstance(loaded.get("views"), list):
            raise ViewError(f"{path}: expected a map with a 'views' list")
        bodies.extend(loaded["views"])
    return parse_views(bodies)
