"""The simulator's events (what the demo and the e2e story publish) are valid ingest input, normalized as expected."""

from __future__ import annotations

import itertools
from collections import Counter

import msgpack

from rtml.simulate.simulator import SimConfig, Simulator
from services.ingest.pipeline import Accepted, Pipeline
from services.ingest.schema import build_registry
from services.ingest.validate import Limits
from shared.codec import encode
from shared.messages import Event, Label
from shared.subjects import Names


def test_every_simulated_emission_is_accepted() -> None:
    config = SimConfig(seed=3, rate_per_s=50.0, chargeback_delay_s=60.0, legit_label_delay_s=60.0)
    emissions = list(itertools.islice(Simulator(config), 3000))
    last_ms = max(item.ts for item in emissions)
    pipeline = Pipeline(build_registry(), Names("rtml"), limits=Limits(max_age_ms=0))
    kinds: Counter[str] = Counter()
    for item in emissions:
        event = item.event()
        outcome = pipeline.process(
            Names("rtml").events(event["type"]), encode(event), content_type=None, now_ms=last_ms
        )
        assert isinstance(outcome, Accepted), (event, outcome)
        body = msgpack.unpackb(outcome.payload)
        kinds[event["type"]] += 1
        if event["type"] == "label":
            label = Label.from_dict(body)
            assert (label.id, label.label, label.event_id) == (event["data"]["id"], event["data"]["label"], event["id"])
        else:
            normalized = Event.from_dict(body)
            assert normalized.data["amount"] == event["data"]["amount"]
            assert (
                normalized.data["currency"] == "EUR" and normalized.data["country"] == event["data"]["country"].lower()
            )
    assert kinds["transaction"] > 0 and kinds["label"] > 0
