"""The rollout service: registry and rollout REST API plus the gate controller."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from typing import ClassVar

import asyncpg
from aiohttp import web

from shared import registry
from shared.db import open_pool
from shared.runtime import Service, Worker

from .api import RolloutApi
from .controller import Controller
from .metrics import RolloutMetrics
from .settings import RolloutSettings
from .store import RolloutStore
from .summary import MonitorSummaryReader, SummaryReader


class RolloutService(Service):
    name: ClassVar[str] = "rollout"

    def __init__(self, settings: RolloutSettings, *, reader: SummaryReader | None = None) -> None:
        super().__init__(settings.common)
        self.settings = settings
        self.rollout_metrics = RolloutMetrics(self.metrics)
        self._reader = reader
        self.pool: asyncpg.Pool
        self.store: RolloutStore
        self.controller: Controller
        self.api: RolloutApi

    async def setup(self, stack: AsyncExitStack) -> None:
        self.pool = await stack.enter_async_context(open_pool(self.common.database_url, schema=self.names.schema))
        await registry.ensure_tables(self.pool)
        self.store = RolloutStore(self.pool, notify_channel=f"{self.names.namespace}_rollout")
        await self.store.ensure_tables()
        kv = await self.js.key_value(self.names.routing_bucket)
        objects = await self.js.object_store(self.names.models_bucket)
        reader = self._reader or MonitorSummaryReader(self.nc, self.names, timeout_s=self.settings.summary_timeout_s)
        self.controller = Controller(
            store=self.store,
            kv=kv,
            js=self.js,
            reader=reader,
            names=self.names,
            metrics=self.rollout_metrics,
            database_url=self.common.database_url,
            interval_s=self.settings.check_interval_s,
        )
        self.api = RolloutApi(
            settings=self.settings,
            pool=self.pool,
            store=self.store,
            kv=kv,
            objects=objects,
            controller=self.controller,
            reader=reader,
        )

    def routes(self) -> Sequence[web.AbstractRouteDef]:
        return self.api.routes()

    def workers(self) -> Mapping[str, Worker]:
        async def control(stop: asyncio.Event) -> None:
            await self.controller.run(stop)

        return {"controller": control}

    async def check_ready(self) -> str | None:
        try:
            await self.pool.fetchval("SELECT 1")
        except Exception as error:
            return f"postgres unavailable: {error}"
        return None
