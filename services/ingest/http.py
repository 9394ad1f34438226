"""``POST /v1/events``: HTTP intake for clients without NATS.

The body is a JSON array of events, each with its ``type``. Every event is validated at once and answered
on its own: a valid one is published to the events stream (so it takes the same durable path as a NATS
publish: ``accepted`` means JetStream has stored it), a rejected one is answered with its reason and also
dead-lettered for the operator. An event without an id gets one, returned in the answer.

Status: 200 with per-event results; 503 with the same body when some event could not be stored (retry those);
413 for a body or an event count over the limit; 400 for a body that is not a JSON array.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from aiohttp import web
from nats.js import JetStreamContext

from services.ingest.decoding import JSON_CONTENT_TYPE
from services.ingest.dlq import CONTENT_TYPE, MSG_ID, dead_letter_headers
from services.ingest.metrics import IngestMetrics
from services.ingest.pipeline import INVALID_TYPE, Accepted, Pipeline, Rejected
from services.ingest.reasons import Reason, Rejection
from services.ingest.settings import IngestSettings
from shared.codec import encode
from shared.subjects import Names, check_token


class BodyTooLarge(Exception):
    pass


class HttpIntake:
    def __init__(
        self,
        js: Callable[[], JetStreamContext],
        names: Names,
        pipeline: Pipeline,
        settings: IngestSettings,
        metrics: IngestMetrics,
    ) -> None:
        self._js = js
        self.names = names
        self.pipeline = pipeline
        self.settings = settings
        self.metrics = metrics

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v1/events", self.post_events), web.get("/v1/schemas", self.get_schemas)]

    async def get_schemas(self, _: web.Request) -> web.Response:
        registry = self.pipeline.registry
        return web.json_response({"schemas": [registry.get(t).describe() for t in registry.types()]})  # type: ignore[union-attr]

    async def post_events(self, request: web.Request) -> web.Response:
        try:
            body = await self._read_body(request)
        except BodyTooLarge:
            return _error(413, f"body exceeds {self.settings.max_body_bytes} bytes")
        try:
            events = json.loads(body.decode("utf-8"))
        except RecursionError:
            return _error(400, "body nests too deeply")
        except (UnicodeDecodeError, ValueError) as error:
            return _error(400, f"body is not JSON: {error}")
        if not isinstance(events, list):
            return _error(400, f"body must be a JSON array of events, got {type(events).__name__}")
        if len(events) > self.settings.max_http_events:
            return _error(413, f"{len(events)} events exceed the limit of {self.settings.max_http_events} per request")
        now_ms = int(time.time() * 1000)
        results = await asyncio.gather(*(self._one(index, event, now_ms) for index, event in enumerate(events)))
        counts = {
            status: sum(1 for r in results if r["status"] == status) for status in ("accepted", "rejected", "failed")
        }
        for outcome, count in counts.items():
            if count:
                self.metrics.http_events.labels(outcome).inc(count)
        status = 503 if counts["failed"] else 200
        return web.json_response({**counts, "results": results}, status=status)

    async def _read_body(self, request: web.Request) -> bytes:
        limit = self.settings.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise BodyTooLarge
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.content.iter_chunked(1 << 16):
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge
            chunks.append(chunk)
        return b"".join(chunks)

    async def _one(self, index: int, event: Any, now_ms: int) -> dict[str, Any]:
        if isinstance(event, dict) and event.get("id") is None:
            event = {**event, "id": uuid.uuid4().hex}
        raw_type = event.get("type") if isinstance(event, dict) else None
        outcome: Accepted | Rejected
        if not isinstance(event, dict):
            rejection = Rejection(Reason.NOT_A_MAP, "", f"an event must be a JSON object, got {type(event).__name__}")
            outcome = Rejected(INVALID_TYPE, INVALID_TYPE, rejection, None)
        elif not isinstance(raw_type, str) or not _is_token(raw_type):
            reason = Reason.MISSING_FIELD if raw_type is None else Reason.BAD_FORMAT
            rejection = Rejection(reason, "type", "each event needs a type: 1-64 characters of A-Z, a-z, 0-9, _ and -")
            outcome = Rejected(INVALID_TYPE, INVALID_TYPE, rejection, None)
        else:
            outcome = self.pipeline.process_map(raw_type, event, now_ms=now_ms)
        if isinstance(outcome, Rejected):
            return await self._reject(index, event, outcome, now_ms)
        return await self._store(index, event, outcome)

    async def _store(self, index: int, event: dict[str, Any], outcome: Accepted) -> dict[str, Any]:
        try:
            data, headers = encode(event), {MSG_ID: outcome.msg_id}
        except (OverflowError, TypeError, ValueError):  # e.g. an undeclared integer beyond 64 bits
            data, headers = _json_bytes(event), {MSG_ID: outcome.msg_id, CONTENT_TYPE: JSON_CONTENT_TYPE}
        try:
            await self._js().publish(self.names.events(outcome.event_type), data, headers=headers)
        except Exception as error:
            return {"index": index, "id": outcome.msg_id, "status": "failed", "reason": "unavailable",
                    "message": f"could not store the event: {type(error).__name__}"}  # fmt: skip
        return {"index": index, "id": outcome.msg_id, "status": "accepted"}

    async def _reject(self, index: int, event: Any, outcome: Rejected, now_ms: int) -> dict[str, Any]:
        rejection = outcome.rejection
        answer: dict[str, Any] = {
            "index": index, "id": outcome.event_id, "status": "rejected",
            "reason": rejection.reason.value, "field": rejection.field, "message": rejection.message,
        }  # fmt: skip
        key = outcome.event_id or uuid.uuid4().hex
        headers = dead_letter_headers(
            rejection,
            subject=self.names.events(outcome.event_type),
            event_id=outcome.event_id,
            source="http",
            source_key=key,
            deliveries=1,
            rejected_at_ms=now_ms,
            content_type=JSON_CONTENT_TYPE,
        )
        try:
            await self._js().publish(self.names.dlq(outcome.event_type), _json_bytes(event), headers=headers)
        except Exception:
            self.metrics.publish_failures.inc()
        else:
            self.metrics.rejected.labels(outcome.metric_type, rejection.reason.value).inc()
        return answer


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), allow_nan=True).encode()


def _is_token(value: str) -> bool:
    try:
        check_token("event type", value)
    except ValueError:
        return False
    return True


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": {"code": status, "message": message}}, status=status)
