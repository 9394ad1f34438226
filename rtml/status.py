"""``rtml status``: every service instance of the namespace, from ``$SRV.INFO`` and its ``/healthz``."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

import aiohttp
from nats.aio.client import Client
from nats.aio.msg import Msg

from shared.bus import connect

DISCOVERY_WAIT_S = 0.75


@dataclass(frozen=True, slots=True)
class Instance:
    name: str
    id: str
    version: str
    endpoints: list[str]
    http: str
    health: str
    ready: str


async def discover(nc: Client, namespace: str, wait_s: float = DISCOVERY_WAIT_S) -> list[dict[str, Any]]:
    """The ``$SRV.INFO`` answers of every instance in ``namespace`` (many instances answer one request)."""
    answers: list[dict[str, Any]] = []
    inbox = nc.new_inbox()

    async def collect(msg: Msg) -> None:
        if not msg.data:  # the server's "no responders" status (503, empty body) while no service runs yet
            return
        info = json.loads(msg.data)
        if (info.get("metadata") or {}).get("namespace") == namespace:
            answers.append(info)

    subscription = await nc.subscribe(inbox, cb=collect)
    await nc.publish("$SRV.INFO", b"", reply=inbox)
    await asyncio.sleep(wait_s)
    await subscription.unsubscribe()
    return answers


async def _probe(http: aiohttp.ClientSession, url: str) -> str:
    try:
        async with http.get(url, timeout=aiohttp.ClientTimeout(total=2)) as response:
            body = await response.json()
            return "ok" if response.status == 200 else f"{response.status} {body.get('reason', '')}".strip()
    except (aiohttp.ClientError, TimeoutError, ValueError) as error:
        return f"unreachable ({type(error).__name__})"


async def collect_status(nats_url: str, namespace: str) -> list[Instance]:
    async with connect(nats_url, name="rtml-status", startup_timeout_s=3) as nc:
        infos = await discover(nc, namespace)
    instances: list[Instance] = []
    async with aiohttp.ClientSession() as http:
        for info in sorted(infos, key=lambda i: (i["name"], i["id"])):
            address = info["metadata"].get("http", "")
            instances.append(
                Instance(
                    name=info["name"].removeprefix("rtml-"),
                    id=info["id"],
                    version=info["version"],
                    endpoints=[e["subject"] for e in info.get("endpoints") or []],
                    http=address,
                    health=await _probe(http, f"http://{address}/healthz"),
                    ready=await _probe(http, f"http://{address}/readyz"),
                )
            )
    return instances


def render(instances: list[Instance], namespace: str) -> str:
    if not instances:
        return f"no rtml service answers in namespace {namespace!r}"
    replicas = Counter(i.name for i in instances)
    lines = [f"{'service':<10} {'replicas':>8}  {'instance':<24} {'version':<8} {'health':<8} {'ready':<8} http"]
    for i in instances:
        lines.append(
            f"{i.name:<10} {replicas[i.name]:>8}  {i.id:<24} {i.version:<8} {i.health:<8} {i.ready:<8} {i.http}"
        )
    return "\n".join(lines)
