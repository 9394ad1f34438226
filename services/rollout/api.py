"""The REST admin API: model registry, routing and rollouts, JSON over aiohttp.

Every route is declared once in :meth:`RolloutApi.specs`,
which both the router and the OpenAPI document read, so the document cannot drift
from what is served. Mutating routes need ``Authorization: Bearer <RTML_ADMIN_TOKEN>``
(compared in constant time): 401 without it, 403 with a wrong one, and 403 for
everyone while no token is configured. Reads are open unless
``RTML_ROLLOUT_PROTECT_READS`` is set.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import structlog
from aiohttp import BodyPartReader, web
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from shared import registry
from shared.errors import BadRequest, NotFound, ServiceError
from shared.routing import Mode, RoutingPolicy, read_policy, write_policy
from shared.subjects import check_token

from .controller import Controller
from .settings import RolloutSettings
from .store import Rollout, RolloutStore, StaleRollout
from .strategy import ACTIONS, Conflict, RolloutSpec, manual
from .summary import SummaryReader

log = structlog.get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_JSON_BYTES = 1 << 20
MAX_VERSION = 2**31 - 1


class Unauthorized(ServiceError):
    def __init__(self, message: str) -> None:
        super().__init__(401, message)


class Forbidden(ServiceError):
    def __init__(self, message: str) -> None:
        super().__init__(403, message)


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """One endpoint: how it is routed, whether it mutates, and what the OpenAPI document says of it."""

    method: str
    path: str
    handler: Handler
    summary: str
    mutating: bool
    ok_status: int = 200
    body_schema: dict[str, Any] | None = None
    body_content_type: str = "application/json"
    errors: tuple[int, ...] = (400, 404)
    response_schema: str = "Object"
    extra: dict[str, Any] = field(default_factory=dict)


def error_response(status: int, message: str) -> web.Response:
    response = web.json_response({"error": {"code": status, "message": message}}, status=status)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="rtml"'
    return response


def model_param(request: web.Request) -> str:
    name = request.match_info["name"]
    try:
        return check_token("model", name)
    except ValueError as error:
        raise BadRequest(f"path parameter 'name': {error}") from error


def version_param(request: web.Request) -> int:
    raw = request.match_info["version"]
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_VERSION:
        raise BadRequest(f"path parameter 'version' must be a positive integer, got {raw!r}")
    return int(raw)


def int_field(body: dict[str, Any], key: str, *, required: bool) -> int | None:
    value = body.get(key)
    if value is None:
        if required:
            raise BadRequest(f"field '{key}' is required")
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_VERSION:
        raise BadRequest(f"field '{key}' must be a positive integer, got {value!r}")
    return value


async def json_body(request: web.Request, *, optional: bool = False) -> dict[str, Any]:
    raw = await request.content.read(MAX_JSON_BYTES + 1)
    if len(raw) > MAX_JSON_BYTES:
        raise BadRequest(f"body exceeds {MAX_JSON_BYTES} bytes")
    if not raw.strip():
        if optional:
            return {}
        raise BadRequest("a JSON object body is required")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise BadRequest(f"body is not valid JSON: {error}") from error
    if not isinstance(body, dict):
        raise BadRequest(f"body must be a JSON object, got {type(body).__name__}")
    return body


class RolloutApi:
    def __init__(
        self,
        *,
        settings: RolloutSettings,
        pool: asyncpg.Pool,
        store: RolloutStore,
        kv: KeyValue,
        objects: ObjectStore,
        controller: Controller,
        reader: SummaryReader,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.store = store
        self.kv = kv
        self.objects = objects
        self.controller = controller
        self.reader = reader

    # Route table ----------------------------------------------------------
    def specs(self) -> list[RouteSpec]:
        from . import openapi as oa

        specs = [
            RouteSpec("GET", "/models", self.list_models, "List registered models", False, errors=(),
                      response_schema="ModelList"),
            RouteSpec("GET", "/models/{name}", self.get_model, "A model: versions, routing, active rollout", False,
                      response_schema="Model"),
            RouteSpec("POST", "/models/{name}/versions", self.register_version,
                      "Register a version: the ONNX file plus its metadata (multipart)", True, ok_status=201,
                      body_schema=oa.REGISTER_BODY, body_content_type="multipart/form-data",
                      response_schema="ModelVersion"),
            RouteSpec("GET", "/models/{name}/versions/{version}", self.get_version, "One version's metadata", False,
                      response_schema="ModelVersion"),
            RouteSpec("POST", "/models/{name}/versions/{version}/archive", self.archive_version,
                      "Archive a version (refused while it serves or is in an active rollout)", True,
                      errors=(400, 404, 409), response_schema="ModelVersion"),
            RouteSpec("GET", "/models/{name}/routing", self.get_routing, "The routing policy replicas follow now",
                      False, response_schema="RoutingPolicy"),
            RouteSpec("POST", "/models/{name}/stable", self.set_stable,
                      "Serve one version alone (refused while a rollout is active)", True,
                      body_schema=oa.SET_STABLE_BODY, errors=(400, 404, 409), response_schema="RoutingPolicy"),
            RouteSpec("POST", "/models/{name}/rollouts", self.create_rollout,
                      "Start a shadow, canary or blue-green rollout of a candidate version", True, ok_status=201,
                      body_schema=oa.CREATE_ROLLOUT_BODY, errors=(400, 404, 409), response_schema="Rollout"),
            RouteSpec("GET", "/models/{name}/rollouts", self.list_rollouts, "The model's rollouts, oldest first",
                      False, response_schema="RolloutList"),
            RouteSpec("GET", "/models/{name}/rollouts/{rollout_id}", self.get_rollout,
                      "A rollout with its full timeline", False, response_schema="RolloutWithTimeline"),
        ]  # fmt: skip
        for action in ACTIONS:
            specs.append(
                RouteSpec("POST", f"/models/{{name}}/rollouts/{{rollout_id}}/{action}", self._action_handler(action),
                          f"{action.capitalize()} the rollout", True, body_schema=oa.ACTION_BODY,
                          errors=(400, 404, 409), response_schema="Rollout")
            )  # fmt: skip
        specs.append(RouteSpec("GET", "/openapi.json", self.openapi, "This document", False, errors=(),
                               response_schema="Object", extra={"open": True}))  # fmt: skip
        return specs

    def routes(self) -> list[web.RouteDef]:
        return [web.route(s.method, s.path, self._guard(s)) for s in self.specs()]

    def _guard(self, spec: RouteSpec) -> Handler:
        needs_token = spec.mutating or (self.settings.protect_reads and not spec.extra.get("open"))

        async def handler(request: web.Request) -> web.StreamResponse:
            try:
                if needs_token:
                    self._authorize(request)
                return await spec.handler(request)
            except ServiceError as error:
                return error_response(error.code, error.message)
            except asyncio.CancelledError:
                raise
            except Exception as unexpected:
                log.exception("http_handler_failed", path=spec.path)
                return error_response(500, f"internal error: {type(unexpected).__name__}")

        return handler

    def _authorize(self, request: web.Request) -> None:
        token = self.settings.common.admin_token
        if not token:
            raise Forbidden("this route is disabled: the service has no RTML_ADMIN_TOKEN configured")
        header = request.headers.get("Authorization", "")
        scheme, _, presented = header.partition(" ")
        if scheme.lower() != "bearer" or not presented:
            raise Unauthorized("this route needs 'Authorization: Bearer <admin token>'")
        if not hmac.compare_digest(presented.strip().encode(), token.encode()):
            raise Forbidden("the bearer token is not the admin token")

    # Registry -------------------------------------------------------------
    async def list_models(self, _: web.Request) -> web.Response:
        return web.json_response({"models": await registry.list_models(self.pool)})

    async def get_model(self, request: web.Request) -> web.Response:
        model = model_param(request)
        versions = await registry.list_versions(self.pool, model)
        policy = await read_policy(self.kv, model)
        active = await self.store.active(model)
        return web.json_response(
            {
                "name": model,
                "versions": [v.to_dict() for v in versions],
                "routing": None if policy is None else policy.to_dict(),
                "active_rollout": None if active is None else active.to_dict(),
            }
        )

    async def get_version(self, request: web.Request) -> web.Response:
        version = await registry.get_version(self.pool, model_param(request), version_param(request))
        return web.json_response(version.to_dict())

    async def register_version(self, request: web.Request) -> web.Response:
        model = model_param(request)
        if not request.content_type.startswith("multipart/"):
            raise BadRequest("the body must be multipart/form-data with parts 'artifact' (ONNX) and 'metadata' (JSON)")
        artifact: bytes | None = None
        metadata_raw: bytes | None = None
        try:
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader):
                    raise BadRequest("nested multipart bodies are not accepted")
                data = await self._read_part(part)
                if part.name == "artifact":
                    artifact = data
                elif part.name == "metadata":
                    metadata_raw = data
                else:
                    raise BadRequest(f"unknown part {part.name!r}; expected 'artifact' and 'metadata'")
        except (ValueError, AssertionError, KeyError, UnicodeDecodeError) as error:
            raise BadRequest(f"malformed multipart body: {error}") from error
        if not artifact:
            raise BadRequest("part 'artifact' (the ONNX file) is required")
        if metadata_raw is None:
            raise BadRequest("part 'metadata' (a JSON object) is required")
        try:
            metadata_body = json.loads(metadata_raw)
        except (ValueError, UnicodeDecodeError) as error:
            raise BadRequest(f"part 'metadata' is not valid JSON: {error}") from error
        if not isinstance(metadata_body, dict):
            raise BadRequest("part 'metadata' must be a JSON object")
        metadata = registry.ModelMetadata.from_dict(metadata_body)
        version = await registry.register_version(self.pool, self.objects, model, artifact, metadata)
        log.info("version_registered", model=model, version=version.version, sha256=version.sha256)
        return web.json_response(version.to_dict(), status=201)

    async def _read_part(self, part: BodyPartReader) -> bytes:
        limit = self.settings.max_artifact_bytes
        chunks: list[bytes] = []
        size = 0
        while chunk := await part.read_chunk(1 << 16):
            size += len(chunk)
            if size > limit:
                raise BadRequest(f"part {part.name!r} exceeds {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def archive_version(self, request: web.Request) -> web.Response:
        model, version = model_param(request), version_param(request)
        await registry.get_version(self.pool, model, version)
        policy = await read_policy(self.kv, model)
        if policy is not None and version in policy.versions():
            raise Conflict(f"version {version} is in the routing policy; move traffic off it first")
        active = await self.store.active(model)
        if active is not None and version in (active.stable, active.candidate):
            raise Conflict(f"version {version} is in active rollout {active.id}")
        archived = await registry.archive_version(self.pool, model, version)
        return web.json_response(archived.to_dict())

    async def _servable(self, model: str, version: int, field_name: str) -> None:
        try:
            found = await registry.get_version(self.pool, model, version)
        except NotFound:
            await registry.list_versions(self.pool, model)  # 404 for an unknown model first
            raise NotFound(f"field '{field_name}': model {model!r} has no version {version}") from None
        if found.status is registry.Status.ARCHIVED:
            raise BadRequest(f"field '{field_name}': version {version} is archived")

    # Routing --------------------------------------------------------------
    async def get_routing(self, request: web.Request) -> web.Response:
        model = model_param(request)
        policy = await read_policy(self.kv, model)
        if policy is None:
            raise NotFound(f"model {model!r} has no routing policy yet")
        return web.json_response(policy.to_dict())

    async def set_stable(self, request: web.Request) -> web.Response:
        model = model_param(request)
        body = await json_body(request)
        version = int_field(body, "version", required=True)
        assert version is not None
        await self._servable(model, version, "version")
        active = await self.store.active(model)
        if active is not None:
            raise Conflict(f"model {model!r} has active rollout {active.id}; abort or finish it first")
        current = await read_policy(self.kv, model)
        policy = RoutingPolicy(
            model=model,
            stable=version,
            mode=Mode.STABLE,
            revision=(current.revision + 1) if current is not None else 1,
            updated_ms=int(time.time() * 1000),
        )
        await write_policy(self.kv, policy)
        log.info("stable_set", model=model, version=version)
        return web.json_response(policy.to_dict())

    # Rollouts -------------------------------------------------------------
    async def create_rollout(self, request: web.Request) -> web.Response:
        model = model_param(request)
        body = await json_body(request)
        known = {"candidate", "stable", "strategy", "steps", "dwell_s", "shadow_share", "duration_s", "window_s",
                 "gates"}  # fmt: skip
        unknown = sorted(set(body) - known)
        if unknown:
            raise BadRequest(f"unknown field(s) {unknown}; known: {sorted(known)}")
        candidate = int_field(body, "candidate", required=True)
        assert candidate is not None
        spec = RolloutSpec.from_dict(body)
        stable = int_field(body, "stable", required=False)
        await registry.list_versions(self.pool, model)  # 404 for an unknown model
        if stable is None:
            policy = await read_policy(self.kv, model)
            if policy is None:
                raise Conflict(f"model {model!r} serves no stable version yet; pass 'stable' or POST .../stable")
            stable = policy.stable
        if stable == candidate:
            raise BadRequest(f"field 'candidate': version {candidate} is already the stable version")
        await self._servable(model, candidate, "candidate")
        await self._servable(model, stable, "stable")
        if await self.store.active(model) is not None:
            raise Conflict(f"model {model!r} already has an active rollout")
        baseline = None
        try:
            summary = await self.reader.read(model, stable, candidate, spec.window_s)
            baseline = summary.figures(stable) if summary.figures(stable).predictions > 0 else None
        except Exception as error:  # the monitor may be down; gates then rely on same-window figures
            log.info("baseline_unavailable", model=model, error=str(error))
        rollout = await self.store.create(
            model=model, stable=stable, candidate=candidate, spec=spec, baseline=baseline,
            now_ms=int(time.time() * 1000), actor="admin",
        )  # fmt: skip
        self.controller.wake()
        log.info("rollout_created", model=model, rollout=rollout.id, strategy=spec.strategy.value)
        return web.json_response(rollout.to_dict(), status=201)

    async def list_rollouts(self, request: web.Request) -> web.Response:
        model = model_param(request)
        await registry.list_versions(self.pool, model)
        return web.json_response({"rollouts": [r.to_dict() for r in await self.store.list_for_model(model)]})

    async def get_rollout(self, request: web.Request) -> web.Response:
        rollout = await self._rollout(request)
        body = rollout.to_dict()
        body["timeline"] = await self.store.timeline(rollout.id)
        return web.json_response(body)

    async def _rollout(self, request: web.Request) -> Rollout:
        model = model_param(request)
        rollout_id = request.match_info["rollout_id"]
        if not rollout_id.isascii() or not rollout_id.isalnum() or len(rollout_id) > 64:
            raise BadRequest(f"path parameter 'rollout_id' must be alphanumeric, got {rollout_id!r}")
        return await self.store.get(model, rollout_id)

    def _action_handler(self, action: str) -> Handler:
        async def handle(request: web.Request) -> web.Response:
            body = await json_body(request, optional=True)
            reason = body.get("reason", f"{action} by admin")
            if not isinstance(reason, str) or len(reason) > 500:
                raise BadRequest("field 'reason' must be a string of at most 500 characters")
            for _ in range(10):
                rollout = await self._rollout(request)
                decision = manual(rollout.spec, rollout.progress, action, int(time.time() * 1000), reason=reason)
                try:
                    saved = await self.controller.apply(
                        rollout, decision, summary=None, results=[], actor="admin", publish=False
                    )
                except StaleRollout:
                    continue  # the controller moved it meanwhile: decide again on the new state
                self.controller.wake()
                return web.json_response(saved.to_dict())
            raise Conflict("the rollout kept moving; try again")

        handle.__name__ = f"rollout_{action}"
        return handle

    async def openapi(self, _: web.Request) -> web.Response:
        from .openapi import document

        return web.json_response(document(self.specs()))
