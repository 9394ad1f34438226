"""Register a trained version: the artifact into the object store, its metadata into Postgres."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import aiohttp

from rtml.train.pipeline import TrainResult
from shared.bus import connect, provision
from shared.db import open_pool
from shared.registry import ModelVersion, ensure_tables, register_version
from shared.settings import CommonSettings
from shared.subjects import Names


async def register(settings: CommonSettings, model: str, result: TrainResult) -> ModelVersion:
    """Store ``result`` as the next version of ``model`` through :func:`shared.registry.register_version`."""
    names = Names(settings.namespace)
    async with (
        connect(settings.nats_url, name="rtml-train") as nc,
        open_pool(settings.database_url, schema=names.schema, max_size=2) as pool,
    ):
        js = nc.jetstream()
        await provision(js, names, replicas=settings.stream_replicas)
        await ensure_tables(pool)
        store = await js.object_store(names.models_bucket)
        return await register_version(pool, store, model, result.artifact, result.metadata)


async def register_via_rollout(url: str, token: str, model: str, result: TrainResult) -> dict[str, Any]:
    """POST the version to the rollout service's ``/models/{model}/versions`` (multipart: artifact + metadata)."""
    form = aiohttp.FormData()
    form.add_field("artifact", result.artifact, filename=f"{model}.onnx", content_type="application/octet-stream")
    form.add_field("metadata", json.dumps(asdict(result.metadata)), content_type="application/json")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    endpoint = f"{url.rstrip('/')}/models/{model}/versions"
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session,
        session.post(endpoint, data=form, headers=headers) as response,
    ):
        body = await response.json(content_type=None)
        if response.status != 201:
            raise RuntimeError(f"rollout refused the version ({response.status}): {body}")
        return dict(body)
