"""The few admin calls the story makes: the rollout service's REST API and the monitor's read API."""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict
from typing import Any

import aiohttp

from rtml.train.pipeline import TrainResult
from shared.registry import ModelMetadata

TERMINAL = ("succeeded", "rolled_back", "aborted")


class RestError(RuntimeError):
    """A service answered an admin call with an error."""


class Admin:
    """``rollout_url`` with the admin token for mutations; ``monitor_url`` for reads."""

    def __init__(self, http: aiohttp.ClientSession, rollout_url: str, monitor_url: str, token: str) -> None:
        self.http = http
        self.rollout_url = rollout_url.rstrip("/")
        self.monitor_url = monitor_url.rstrip("/")
        self.auth = {"Authorization": f"Bearer {token}"}

    async def _call(self, method: str, url: str, *, expect: tuple[int, ...], **kwargs: Any) -> dict[str, Any]:
        async with self.http.request(method, url, timeout=aiohttp.ClientTimeout(total=60), **kwargs) as response:
            body = await response.json(content_type=None)
            if response.status not in expect:
                raise RestError(f"{method} {url} answered {response.status}: {body}")
            return dict(body)

    async def register(self, model: str, artifact: bytes, metadata: ModelMetadata) -> int:
        form = aiohttp.FormData()
        form.add_field("artifact", artifact, filename=f"{model}.onnx", content_type="application/octet-stream")
        form.add_field("metadata", json.dumps(asdict(metadata)), content_type="application/json")
        body = await self._call(
            "POST", f"{self.rollout_url}/models/{model}/versions", expect=(201,), data=form, headers=self.auth
        )
        return int(body["version"])

    async def register_result(self, model: str, result: TrainResult) -> int:
        return await self.register(model, result.artifact, result.metadata)

    async def set_stable(self, model: str, version: int) -> None:
        url = f"{self.rollout_url}/models/{model}/stable"
        await self._call("POST", url, expect=(200,), json={"version": version}, headers=self.auth)

    async def start_rollout(self, model: str, body: dict[str, Any]) -> dict[str, Any]:
        url = f"{self.rollout_url}/models/{model}/rollouts"
        return await self._call("POST", url, expect=(201,), json=body, headers=self.auth)

    async def rollout(self, model: str, rollout_id: int | str) -> dict[str, Any]:
        return await self._call("GET", f"{self.rollout_url}/models/{model}/rollouts/{rollout_id}", expect=(200,))

    async def routing(self, model: str) -> dict[str, Any]:
        return await self._call("GET", f"{self.rollout_url}/models/{model}/routing", expect=(200,))

    async def drift(self, model: str) -> dict[str, Any] | None:
        """The monitor's latest drift evaluation per version; None until it has seen the model."""
        return await self._monitor_figures(f"{self.monitor_url}/models/{model}/drift")

    async def performance(self, model: str) -> dict[str, Any] | None:
        """The monitor's live performance per version (labels joined to predictions); None before any."""
        return await self._monitor_figures(f"{self.monitor_url}/models/{model}/performance")

    async def _monitor_figures(self, url: str) -> dict[str, Any] | None:
        async with self.http.get(url, timeout=aiohttp.ClientTimeout(total=5)) as response:
            if response.status == 404:
                return None
            body = await response.json(content_type=None)
            if response.status != 200:
                raise RestError(f"GET {url} answered {response.status}: {body}")
            return dict(body)

    async def alerts(self, model: str, *, open_only: bool = False) -> list[dict[str, Any]]:
        url = f"{self.monitor_url}/alerts"
        params = {"model": model, "open": "true" if open_only else "false"}
        body = await self._call("GET", url, expect=(200,), params=params)
        return list(body["alerts"])

    async def wait_rollout(
        self, model: str, rollout_id: int | str, *, timeout_s: float, on_state: Any = None
    ) -> dict[str, Any]:
        """Poll until the rollout ended and its last policy is published; ``on_state(state)`` sees each poll."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            state = await self.rollout(model, rollout_id)
            if on_state is not None:
                on_state(state)
            if state["state"] in TERMINAL and state["policy_published"]:
                return state
            if loop.time() > deadline:
                raise TimeoutError(f"rollout {rollout_id} still {state['state']} after {timeout_s:.0f}s")
            await asyncio.sleep(0.5)


def max_psi(drift: dict[str, Any] | None, version: int) -> tuple[str, float] | None:
    """The feature with the largest PSI in ``version``'s latest evaluation.

    >>> body = {"versions": {"1": {"features": [
    ...     {"feature": "a", "statistics": {"psi": 0.1}}, {"feature": "b", "statistics": {"psi": 0.7}},
    ...     {"feature": "c", "statistics": {"psi": None}}]}}}
    >>> max_psi(body, 1), max_psi(body, 2), max_psi(None, 1)
    (('b', 0.7), None, None)
    """
    if drift is None:
        return None
    figures = (drift.get("versions") or {}).get(str(version))
    if not figures:
        return None
    scored = [
        (f["feature"], float(f["statistics"]["psi"]))
        for f in figures.get("features") or []
        if (f.get("statistics") or {}).get("psi") is not None
    ]
    return max(scored, key=lambda item: item[1]) if scored else None
