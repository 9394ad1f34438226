"""The ingest service: the intake worker on the events stream, and the HTTP intake."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import ClassVar

from aiohttp import web

from services.ingest.consumer import Intake
from services.ingest.http import HttpIntake
from services.ingest.metrics import IngestMetrics
from services.ingest.pipeline import Pipeline
from services.ingest.settings import IngestSettings
from shared.runtime import Service, Worker


class IngestService(Service):
    name: ClassVar[str] = "ingest"

    def __init__(self, settings: IngestSettings) -> None:
        super().__init__(settings.common)
        self.settings = settings
        self.pipeline = Pipeline(
            registry=settings.registry(),
            names=self.names,
            limits=settings.limits,
            max_bytes=settings.max_event_bytes,
            max_depth=settings.max_depth,
        )
        self.ingest_metrics = IngestMetrics(self.metrics)
        self.http = HttpIntake(lambda: self.js, self.names, self.pipeline, settings, self.ingest_metrics)

    def workers(self) -> Mapping[str, Worker]:
        return {"intake": self._intake}

    def routes(self) -> Sequence[web.AbstractRouteDef]:
        return self.http.routes()

    async def _intake(self, stop: asyncio.Event) -> None:
        await Intake(self.nc, self.names, self.pipeline, self.settings, self.ingest_metrics).run(stop)
