"""Postgres: the database is created when missing; each namespace is a schema."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import structlog

log = structlog.get_logger(__name__)


def _database_name(dsn: str) -> str:
    return urlsplit(dsn).path.lstrip("/") or "postgres"


def _maintenance_dsn(dsn: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/postgres"))


def quote_ident(name: str) -> str:
    """Quote an SQL identifier.

    >>> quote_ident('rtml')
    '"rtml"'
    >>> quote_ident('a"b')
    '"a""b"'
    """
    return '"' + name.replace('"', '""') + '"'


async def ensure_database(dsn: str) -> None:
    """Create the DSN's database if it does not exist yet."""
    name = _database_name(dsn)
    try:
        connection = await asyncpg.connect(dsn, timeout=5)
    except asyncpg.InvalidCatalogNameError:
        admin = await asyncpg.connect(_maintenance_dsn(dsn), timeout=5)
        try:
            await admin.execute(f"CREATE DATABASE {quote_ident(name)}")
            log.info("database_created", database=name)
        except asyncpg.DuplicateDatabaseError:
            pass  # another service created it first
        finally:
            await admin.close()
    else:
        await connection.close()


async def ensure_schema(pool: asyncpg.Pool, schema: str) -> None:
    async with pool.acquire() as connection:
        # Two services racing on CREATE SCHEMA IF NOT EXISTS can still collide; the schema exists then.
        with suppress(asyncpg.UniqueViolationError):
            await connection.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}")


async def drop_schema(pool: asyncpg.Pool, schema: str) -> None:
    async with pool.acquire() as connection:
        await connection.execute(f"DROP SCHEMA IF EXISTS {quote_ident(schema)} CASCADE")


@asynccontextmanager
async def open_pool(dsn: str, *, schema: str, min_size: int = 1, max_size: int = 10) -> AsyncIterator[asyncpg.Pool]:
    """A pool whose connections resolve unqualified names in ``schema`` first; closed on exit."""
    await ensure_database(dsn)
    pool = await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size, server_settings={"search_path": f"{schema},public"}
    )
    try:
        await ensure_schema(pool, schema)
        yield pool
    finally:
        await pool.close()
