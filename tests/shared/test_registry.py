"""The model registry on real Postgres and the real NATS object store."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import numpy as np
import pytest

from shared.db import open_pool
from shared.errors import BadRequest, NotFound
from shared.registry import (
    ArtifactCorrupt,
    FeatureSpec,
    ModelMetadata,
    Status,
    archive_version,
    ensure_tables,
    fetch_artifact,
    get_version,
    list_models,
    list_versions,
    register_version,
)
from shared.settings import CommonSettings
from tests.onnx_factory import logistic_model


def metadata(n: int) -> ModelMetadata:
    return ModelMetadata(features=[FeatureSpec(name=f"f{i}") for i in range(n)], threshold=0.4)


async def test_versions_number_up_and_artifacts_verify(pool: asyncpg.Pool, store: Any) -> None:
    artifact = logistic_model(np.ones(3), 0.0)
    first, second = await asyncio.gather(
        register_version(pool, store, "fraud", artifact, metadata(3)),
        register_version(pool, store, "fraud", artifact, metadata(3)),
    )
    assert sorted([first.version, second.version]) == [1, 2]
    loaded = await get_version(pool, "fraud", 1)
    assert loaded.metadata.threshold == 0.4 and [f.name for f in loaded.metadata.features] == ["f0", "f1", "f2"]
    assert await fetch_artifact(store, loaded) == artifact
    assert [v.version for v in await list_versions(pool, "fraud")] == [1, 2]
    assert {"name": "fraud", "versions": 2, "latest": 2} in await list_models(pool)
    assert (await archive_version(pool, "fraud", 1)).status is Status.ARCHIVED


async def test_refuses_bad_artifacts(pool: asyncpg.Pool, store: Any) -> None:
    with pytest.raises(BadRequest, match="not a loadable ONNX"):
        await register_version(pool, store, "bad", b"not onnx", metadata(3))
    with pytest.raises(BadRequest, match="takes 3 inputs but the metadata lists 2"):
        await register_version(pool, store, "bad", logistic_model(np.ones(3), 0.0), metadata(2))
    with pytest.raises(NotFound):
        await get_version(pool, "bad", 1)


async def test_corrupt_artifact_is_refused(pool: asyncpg.Pool, store: Any) -> None:
    version = await register_version(pool, store, "corrupt", logistic_model(np.ones(2), 0.0), metadata(2))
    await store.put(version.artifact_name, b"tampered")
    with pytest.raises(ArtifactCorrupt, match="does not match"):
        await fetch_artifact(store, version)


async def test_concurrent_ensure_tables_do_not_collide(settings: CommonSettings) -> None:
    """Services starting together (inference and rollout) create the tables at once in a fresh schema."""
    schema = f"{settings.namespace}_ddl"
    async with open_pool(settings.database_url, schema=schema, max_size=6) as racing:
        try:
            await asyncio.gather(*(ensure_tables(racing) for _ in range(6)))
            assert await racing.fetchval("SELECT count(*) FROM model_versions") == 0
        finally:
            await racing.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
