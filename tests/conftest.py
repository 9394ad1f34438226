"""Test fixtures on real servers.

The session makes sure NATS, Redis and PostgreSQL answer at the configured URLs,
starting its own (the way ``rtml infra up`` does) where nothing listens and
stopping them afterwards. Each test module gets a fresh namespace: its streams,
buckets, Redis keys and Postgres schema are provisioned and removed afterwards.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import asyncpg
import pytest
from nats.aio.client import Client
from nats.js.object_store import ObjectStore

from infra.local import manager
from shared.bus import connect, deprovision, provision
from shared.db import drop_schema, open_pool
from shared.online import delete_namespace_keys, open_redis
from shared.registry import ensure_tables
from shared.settings import CommonSettings
from shared.subjects import Names

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def infra() -> Iterator[CommonSettings]:
    """Settings pointing at answering servers; what the session started is stopped at its end."""
    settings = CommonSettings.from_env(os.environ, service="tests", default_http_port=0)
    home = PROJECT_ROOT / ".rtml" / f"test-{os.getpid()}"
    states = manager.up(
        nats_url=settings.nats_url, redis_url=settings.redis_url, database_url=settings.database_url, home=home
    )
    try:
        yield settings
    finally:
        manager.down(home=home, only=states)
        shutil.rmtree(home, ignore_errors=True)  # the private servers' data and logs


def fresh_namespace() -> str:
    return f"t_{secrets.token_hex(5)}"


@pytest.fixture(scope="module")
async def settings(infra: CommonSettings) -> AsyncIterator[CommonSettings]:
    """Settings with a fresh namespace, provisioned; everything under it is removed afterwards."""
    namespaced = replace(infra, namespace=fresh_namespace(), shutdown_grace_s=5.0)
    names = Names(namespaced.namespace)
    async with connect(namespaced.nats_url, name="rtml-tests") as nc:
        await provision(nc.jetstream(), names)
        try:
            yield namespaced
        finally:
            await deprovision(nc.jetstream(), names)
            async with open_redis(namespaced.redis_url) as redis:
                await delete_namespace_keys(redis, names.redis_prefix)
            async with open_pool(namespaced.database_url, schema=names.schema) as pool:
                await drop_schema(pool, names.schema)


@pytest.fixture(scope="module")
def names(settings: CommonSettings) -> Names:
    return Names(settings.namespace)


@pytest.fixture(scope="module")
async def nc(settings: CommonSettings) -> AsyncIterator[Client]:
    """A NATS connection for the test module."""
    async with connect(settings.nats_url, name="rtml-tests") as client:
        yield client


@pytest.fixture(scope="module")
async def pool(settings: CommonSettings) -> AsyncIterator[asyncpg.Pool]:
    """A Postgres pool on the module's namespace schema, with the model registry's tables."""
    async with open_pool(settings.database_url, schema=settings.namespace) as opened:
        await ensure_tables(opened)
        yield opened


@pytest.fixture(scope="module")
async def store(settings: CommonSettings) -> AsyncIterator[ObjectStore]:
    """The namespace's model artifact store."""
    async with connect(settings.nats_url, name="rtml-tests-store") as nc:
        yield await nc.jetstream().object_store(Names(settings.namespace).models_bucket)
