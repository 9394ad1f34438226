"""The monitor's HTTP API: drift, performance and summary per model, and the alerts."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from aiohttp import web

from services.monitor.alerts import list_alerts
from services.monitor.engine import ModelMonitor
from services.monitor.summary import SummaryRequest, version_figures
from shared.errors import BadRequest, NotFound, ServiceError

if TYPE_CHECKING:
    from services.monitor.service import MonitorService


def _json_safe(value: Any) -> Any:
    """``nan``/``inf`` become ``None`` so every HTTP body is valid JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _json(body: Any, status: int = 200) -> web.Response:
    return web.json_response(_json_safe(body), status=status)


class MonitorApi:
    """``GET /models/{m}/drift``, ``/models/{m}/performance``, ``/models/{m}/versions/{v}/summary``, ``/alerts``."""

    def __init__(self, service: MonitorService) -> None:
        self.service = service

    def routes(self) -> Sequence[web.AbstractRouteDef]:
        return [
            web.get("/models/{model}/drift", self._http_drift),
            web.get("/models/{model}/performance", self._http_performance),
            web.get("/models/{model}/versions/{version}/summary", self._http_summary),
            web.get("/alerts", self._http_alerts),
        ]

    def _model(self, request: web.Request) -> ModelMonitor:
        name = request.match_info["model"]
        model = self.service.models.get(name)
        if model is None:
            raise NotFound(f"no predictions seen for model '{name}'")
        return model

    @staticmethod
    def _error(error: ServiceError) -> web.Response:
        return _json(error.body(), status=error.code)

    async def _http_drift(self, request: web.Request) -> web.Response:
        try:
            model = self._model(request)
        except ServiceError as error:
            return self._error(error)
        versions: dict[str, Any] = {}
        for version, monitor in sorted(model.versions.items()):
            bank = monitor.bank
            versions[str(version)] = {
                "profile": monitor.profile is not None,
                "predictions": monitor.count,
                "evaluated_at_ms": monitor.last.at_ms or None,
                "window": monitor.last.window,
                "features": [result.to_dict() for result in monitor.last.features],
                "confidence": monitor.last.confidence,
                "detector_alarms": monitor.alarms,
                "detectors": {
                    signal: {"upper": d.upper, "lower": d.lower, "h": d.h, "h_down": d.h_down}
                    for signal, d in (bank.detectors() if bank is not None else ())
                },
            }
        return _json({"model": model.model, "versions": versions})

    async def _http_performance(self, request: web.Request) -> web.Response:
        try:
            model = self._model(request)
        except ServiceError as error:
            return self._error(error)
        versions: dict[str, Any] = {}
        for version, monitor in sorted(model.versions.items()):
            versions[str(version)] = {
                "variant": model.variants.get(version),
                "threshold": monitor.threshold,
                "training": monitor.profile.metrics if monitor.profile is not None else {},
                "live": {variant: monitor.performance(variant).to_dict() for variant in monitor.labelled}
                | {"all": monitor.performance().to_dict()},
            }
        return _json({"model": model.model, "versions": versions})

    async def _http_summary(self, request: web.Request) -> web.Response:
        try:
            raw_version = request.match_info["version"]
            if not raw_version.isdigit():
                raise BadRequest(f"version must be an integer, got {raw_version!r}")
            try:
                window_s = float(request.query.get("window_s", "300"))
            except ValueError as error:
                raise BadRequest(f"window_s must be a number, got {request.query.get('window_s')!r}") from error
            version = int(raw_version)
            body = {"model": request.match_info["model"], "stable": version, "candidate": version, "window_s": window_s}
            parsed = SummaryRequest.from_dict(body)
        except ServiceError as error:
            return self._error(error)
        part = self.service.slice(parsed.model, parsed.window_s)
        minimum = self.service.settings.summary_min_samples
        figures = version_figures(part, version, self.service.labels.get, minimum)
        present = sorted({part.variant_names[c] for c in part.variants[part.versions == version].tolist()})
        variants = {
            name: version_figures(part, version, self.service.labels.get, minimum, variant=name) for name in present
        }
        return _json({"model": parsed.model, "version": version, "window_s": window_s, **figures,
                      "variants": variants, "min_samples": minimum})  # fmt: skip

    async def _http_alerts(self, request: web.Request) -> web.Response:
        raw_open = request.query.get("open", "false").lower()
        if raw_open not in ("true", "false", "1", "0"):
            return self._error(BadRequest(f"open must be true or false, got {raw_open!r}"))
        rows = await list_alerts(
            self.service.pool, open_only=raw_open in ("true", "1"), model=request.query.get("model")
        )
        return web.Response(text=json.dumps({"alerts": _json_safe(rows)}), content_type="application/json")
