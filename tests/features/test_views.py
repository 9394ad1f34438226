"""View definitions and settings: what is accepted, and the message for what is not."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from services.features.catalog import FRAUD_VIEWS, load_views
from services.features.settings import FeaturesSettings
from services.features.views import Agg, ViewError, Window, parse_view, parse_views
from shared.settings import SettingsError

ROOT = Path(__file__).resolve().parents[2]


def _view(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "v",
        "source": "transaction",
        "entity": "card",
        "features": [{"name": "n", "agg": "count", "window": "1h"}],
    }
    body.update(overrides)
    return body


def test_fraud_views_cover_every_aggregation() -> None:
    views = load_views(None)
    assert set(views) == {"card_velocity", "card_amount", "card_diversity", "merchant_volume"}
    used = {f.agg for v in views.values() for f in v.features}
    assert used == set(Agg)
    assert views["merchant_volume"].entity_of("card1", {"merchant": "m9"}) == "m9"
    assert views["card_velocity"].entity_of("card1", {"merchant": "m9"}) == "card1"
    assert views["merchant_volume"].entity_of("card1", {}) is None


def test_windows_and_defaults() -> None:
    view = parse_view(_view(buckets=6, features=[
        {"name": "a", "agg": "mean", "field": "amount", "window": "1m", "default": -1},
        {"name": "b", "agg": "count", "window": "1m"},
        {"name": "c", "agg": "max", "field": "amount", "window": "10s", "buckets": 2},
        {"name": "d", "agg": "distinct_count", "field": "merchant", "window": "1h"},
    ]))  # fmt: skip
    assert view.windows == (Window(60_000, 6), Window(10_000, 2))  # the distinct count keeps its own state
    assert view.numeric_fields == ("amount",) and view.distinct_fields == ("merchant",)
    assert view.defaults == {"a": -1.0, "b": 0.0, "c": 0.0, "d": 0.0}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"name": "a.b"}, "view 'a.b'"),
        ({"version": 0}, "version must be a positive integer"),
        ({"source": None}, "source"),
        ({"entity_field": "da ta"}, "entity_field"),
        ({"buckets": 0}, "buckets must be an integer between 1 and 120"),
        ({"features": []}, "features must be a non-empty list"),
        ({"features": [{"name": "x", "agg": "median", "window": "1m"}]}, "agg must be one of"),
        ({"features": [{"name": "x", "agg": "sum", "window": "1m"}]}, "sum needs a field"),
        ({"features": [{"name": "x", "agg": "count"}]}, "count needs a window"),
        ({"features": [{"name": "x", "agg": "count", "window": "7ms"}]}, "whole-millisecond buckets"),
        ({"features": [{"name": "x", "agg": "count", "window": "5 min"}]}, "must look like"),
        ({"features": [{"name": "x", "agg": "count", "window": "1m", "default": "zero"}]}, "default must be"),
        ({"features": [{"name": "x", "agg": "time_since_last", "field": "amount"}]}, "takes no field"),
        ({"features": [{"name": "x", "agg": "count", "window": "1m"}] * 2}, "feature names must be unique"),
        ({"ttl": "1m"}, "ttl must cover the longest window plus the lateness"),
    ],
)
def test_bad_definitions_are_refused_with_a_reason(overrides: dict[str, Any], message: str) -> None:
    body = _view(**overrides)
    if body.get("source") is None:
        del body["source"]
    with pytest.raises(ViewError, match=message):
        parse_view(body)


def test_versions_and_fingerprints() -> None:
    first = parse_view(_view())
    assert parse_view(_view()).fingerprint == first.fingerprint
    assert parse_view(_view(lateness="2m")).fingerprint != first.fingerprint
    assert parse_views([_view(), _view(version=2)])["v"].version == 2  # the later definition wins


def test_user_views_from_yaml(tmp_path: Path) -> None:
    path = tmp_path / "views.yaml"
    path.write_text(
        "views:\n  - {name: mine, source: login, entity: user, features: [{name: n, agg: count, window: 1h}]}\n"
    )
    views = load_views(str(path))
    assert set(views) == {v["name"] for v in FRAUD_VIEWS} | {"mine"}
    path.write_text("not: [a, views, list]\n")
    with pytest.raises(ViewError, match="expected a map with a 'views' list"):
        load_views(str(path))
    with pytest.raises(ViewError, match="cannot read views"):
        load_views(str(tmp_path / "missing.yaml"))


def test_settings_are_checked() -> None:
    assert FeaturesSettings.from_env({}).batch_size == 4000
    with pytest.raises(SettingsError, match="RTML_FEATURES_ACK_WAIT_S"):
        FeaturesSettings.from_env({"RTML_FEATURES_ACK_WAIT_S": "soon"})
    with pytest.raises(SettingsError, match="RTML_FEATURES_MAX_LAG"):
        FeaturesSettings.from_env({"RTML_FEATURES_MAX_LAG": "0"})


def test_entry_point_refuses_bad_configuration() -> None:
    env = {**os.environ, "RTML_FEATURES_BATCH": "lots"}
    done = subprocess.run(
        [sys.executable, "-m", "services.features"],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "RTML_FEATURES_BATCH='lots': not an integer" in done.stderr
