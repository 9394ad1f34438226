"""Provisioning on the real NATS: idempotent, updates changed config, isolated per namespace."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from nats.js.errors import NotFoundError

from shared.bus import STREAMS, connect, deprovision, ensure_stream, provision
from shared.codec import decode, encode
from shared.settings import CommonSettings
from shared.subjects import Names
from tests.conftest import fresh_namespace


@pytest.fixture(scope="module")
async def js(settings: CommonSettings) -> AsyncIterator[Any]:
    async with connect(settings.nats_url, name="test-provision") as nc:
        yield nc.jetstream()


async def test_provision_twice_is_harmless(js: Any, names: Names) -> None:
    await provision(js, names)
    await provision(js, names)
    for spec in STREAMS:
        info = await js.stream_info(names.stream(spec.flow))
        assert info.config.subjects == [f"{names.namespace}.{spec.flow}.>"]
    await js.key_value(names.routing_bucket)
    await js.object_store(names.models_bucket)


async def test_changed_config_is_updated_in_place(js: Any, names: Names) -> None:
    spec = replace(STREAMS[0], max_age_s=3600.0)
    await js.publish(names.events("x"), b"kept", headers={"Nats-Msg-Id": "keep-1"})
    await ensure_stream(js, spec.config(names))
    info = await js.stream_info(names.stream(spec.flow))
    assert info.config.max_age == 3600.0
    assert info.state.messages >= 1  # updated, not recreated
    await provision(js, names)  # and back to the contract's settings
    assert (await js.stream_info(names.stream(spec.flow))).config.max_age == STREAMS[0].max_age_s


async def test_namespaces_are_isolated(js: Any, names: Names) -> None:
    other = Names(fresh_namespace())
    await provision(js, other)
    try:
        await js.publish(other.events("transaction"), encode({"n": 1}), headers={"Nats-Msg-Id": "iso-1"})
        mine = await js.stream_info(names.stream("events"))
        theirs = await js.stream_info(other.stream("events"))
        assert theirs.state.messages == 1
        kv_mine = await js.key_value(names.routing_bucket)
        kv_theirs = await js.key_value(other.routing_bucket)
        await kv_theirs.put("fraud", encode({"stable": 1}))
        assert decode((await kv_theirs.get("fraud")).value) == {"stable": 1}
        with pytest.raises(NotFoundError):
            await kv_mine.get("fraud")
        assert mine.state.messages == (await js.stream_info(names.stream("events"))).state.messages
    finally:
        await deprovision(js, other)
    with pytest.raises(NotFoundError):
        await js.stream_info(other.stream("events"))
