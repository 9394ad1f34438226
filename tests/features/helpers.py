"""Publishing normalized events and labels, waiting for the consumers, expected online state."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from nats.js import JetStreamContext

from services.features.views import FeatureView
from shared.codec import encode
from shared.messages import Event, Label
from shared.subjects import Names
from tests.features.reference import Ev, accepted, brute_vector

BASE_TS = 1_700_000_000_000


def txn(
    i: int, card: str, ts: int, *, amount: float = 10.0, merchant: str = "m1", country: str = "FR"
) -> dict[str, Any]:
    data = {
        "card": card,
        "merchant": merchant,
        "amount": amount,
        "currency": "EUR",
        "mcc": "5411",
        "country": country,
        "channel": "pos",
        "device": "d1",
    }
    return Event(id=f"tx{i}", type="transaction", entity=card, ts=ts, data=data).to_dict()


async def publish_events(
    js: JetStreamContext, names: Names, events: Sequence[dict[str, Any]], *, msg_id: bool = True
) -> None:
    for event in events:
        headers = {"Nats-Msg-Id": event["id"]} if msg_id else None
        await js.publish(names.norm(event["type"]), encode(event), headers=headers)


async def publish_label(js: JetStreamContext, names: Names, event_id: str, label: float, ts: int) -> None:
    body = Label(id=event_id, label=label, ts=ts, event_id=f"lab-{event_id}").to_dict()
    await js.publish(names.labels("label"), encode(body), headers={"Nats-Msg-Id": f"lab-{event_id}"})


async def wait_drained(js: JetStreamContext, names: Names, purpose: str = "norm", *, timeout_s: float = 30.0) -> None:
    """Until the consumer has delivered and had acked everything in its stream."""
    stream = names.stream("norm" if purpose == "norm" else "labels")
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        info = await js.consumer_info(stream, names.consumer("features", purpose))
        if info.num_pending == 0 and info.num_ack_pending == 0:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(
                f"consumer {purpose} not drained: {info.num_pending} pending, {info.num_ack_pending} unacked"
            )
        await asyncio.sleep(0.05)


def expected_online(view: FeatureView, arrivals: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per entity of ``view``: the brute-force vector over the events the stream accepts, as of the latest."""
    by_entity: dict[str, list[Ev]] = {}
    for event in arrivals:
        if event["type"] != view.source:
            continue
        entity = view.entity_of(event["entity"], event["data"])
        if entity is not None:
            by_entity.setdefault(entity, []).append(Ev(event["id"], event["ts"], event["data"]))
    out = {}
    for entity, evs in by_entity.items():
        applied = accepted(evs, view.lateness_ms)
        out[entity] = brute_vector(view, applied, max(e.ts for e in applied))
    return out
