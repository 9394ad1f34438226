"""Reference profiles: built from a training set, stored in and loaded from the real Postgres."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import asyncpg
import numpy as np
import pytest

from services.monitor.profiles import (
    CategoricalProfile,
    NumericProfile,
    ReferenceProfile,
    build_reference_profile,
    ensure_profile_table,
    load_profile,
    store_profile,
)
from shared.db import open_pool
from shared.errors import BadRequest
from shared.settings import CommonSettings


def _training(n: int = 5000) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    features = {
        "amount": rng.lognormal(3, 1, n),
        "age": rng.normal(40, 10, n),
        "country": rng.choice(np.array([1.0, 2.0, 3.0]), n, p=[0.5, 0.3, 0.2]),
    }
    labels = (rng.random(n) < 0.1).astype(float)
    scores = np.clip(0.1 + 0.6 * labels + rng.normal(0, 0.1, n), 0, 1)
    return features, scores, labels


def test_profile_captures_the_training_distribution() -> None:
    features, scores, labels = _training()
    profile = build_reference_profile(
        model="fraud", version=3, features=features, scores=scores, labels=labels, categorical=["country"],
        sample_size=500,
    )  # fmt: skip
    amount = profile.numeric["amount"]
    assert amount.count == 5000 and len(amount.sample) == 500
    assert amount.mean == pytest.approx(features["amount"].mean())
    assert len(amount.edges) == 9 and sum(amount.fractions) == pytest.approx(1.0)
    np.testing.assert_allclose(amount.fractions, 0.1, atol=0.001)
    assert set(profile.categorical["country"].shares) == {"1", "2", "3"}
    assert profile.categorical["country"].shares["1"] == pytest.approx(0.5, abs=0.02)
    assert profile.score is not None and profile.metrics["auc"] > 0.9
    assert 0 < profile.metrics["error_rate"] < 0.1


def test_profile_from_a_dataframe() -> None:
    pandas = pytest.importorskip("pandas")
    frame = pandas.DataFrame({"x": [1.0, 2.0, 3.0], "c": ["a", "b", "a"]})
    profile = build_reference_profile(model="m", version=1, features=frame)
    assert isinstance(profile.features["c"], CategoricalProfile)
    assert isinstance(profile.features["x"], NumericProfile)


def test_roundtrip_through_json() -> None:
    features, scores, labels = _training(500)
    profile = build_reference_profile(model="fraud", version=1, features=features, scores=scores, labels=labels)
    assert ReferenceProfile.from_dict(json.loads(json.dumps(profile.to_dict()))) == profile


def test_bad_input_is_a_clear_error() -> None:
    with pytest.raises(BadRequest, match="categorical columns not among"):
        build_reference_profile(model="m", version=1, features={"x": [1.0]}, categorical=["y"])
    with pytest.raises(BadRequest, match="at least one finite value"):
        build_reference_profile(model="m", version=1, features={"x": [float("nan")]})
    with pytest.raises(BadRequest, match="malformed"):
        ReferenceProfile.from_dict({"model": "m"})


@pytest.fixture(scope="module")
async def pool(settings: CommonSettings) -> AsyncIterator[asyncpg.Pool]:
    async with open_pool(settings.database_url, schema=settings.namespace) as opened:
        await ensure_profile_table(opened)
        yield opened


async def test_store_and_load(pool: asyncpg.Pool) -> None:
    features, scores, labels = _training(1000)
    profile = build_reference_profile(model="fraud", version=2, features=features, scores=scores, labels=labels)
    await store_profile(pool, profile)
    await store_profile(pool, profile)  # idempotent upsert
    assert await load_profile(pool, "fraud", 2) == profile
    assert await load_profile(pool, "fraud", 99) is None


async def test_falls_back_to_the_registry_column(pool: asyncpg.Pool) -> None:
    from shared import registry

    await registry.ensure_tables(pool)
    profile = build_reference_profile(model="reg", version=1, features={"x": [1.0, 2.0, 3.0]})
    await pool.execute("INSERT INTO models (name) VALUES ('reg') ON CONFLICT DO NOTHING")
    await pool.execute(
        """INSERT INTO model_versions (model, version, sha256, size_bytes, features, reference_profile)
           VALUES ('reg', 1, 'x', 1, '[]', $1::jsonb)""",
        json.dumps(profile.to_dict()),
    )
    assert await load_profile(pool, "reg", 1) == profile


async def test_join_retention_forgets_old_rows(pool: asyncpg.Pool) -> None:
    from services.monitor import store

    await store.ensure_tables(pool)
    await store.write_predictions(pool, [("old", "m", 1, "stable", 1_000, 0.5), ("new", "m", 1, "stable", 9_000, 0.7)])
    assert await store.write_labels(pool, [("e-old", "old", 1.0, 1_000), ("e-new", "new", 0.0, 9_000)]) == {
        "e-old", "e-new",
    }  # fmt: skip
    assert await store.forget_before(pool, 5_000) == 1
    assert set(await store.find_predictions(pool, ["old", "new"])) == {"new"}
    assert await pool.fetchval("SELECT count(*) FROM monitor_labels") == 1
