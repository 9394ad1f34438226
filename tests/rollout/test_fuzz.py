"""Fuzz every endpoint from the served OpenAPI document: no 5xx, and auth enforced on every mutating route.

Bodies come from the document's own schemas (valid-shaped) mixed with arbitrary
JSON; path parameters from their patterns mixed with hostile strings and
numbers. schemathesis is not installable here, so the schema-to-strategy step is
the small converter below.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.rollout.openapi import COMPONENT_SCHEMAS
from services.rollout.service import RolloutService

from .conftest import AUTH, model_bytes, version_form

JSON_LEAVES = (
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=20)
)
ANY_JSON = st.recursive(
    JSON_LEAVES, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)  # fmt: skip


def from_schema(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """A strategy for values matching the subset of JSON Schema our document uses."""
    if "$ref" in schema:
        return from_schema(COMPONENT_SCHEMAS[schema["$ref"].rsplit("/", 1)[1]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if isinstance(kind, list):
        return st.one_of([from_schema({**schema, "type": k}) for k in kind])
    if kind == "object":
        properties = schema.get("properties", {})
        required = set(schema.get("required", ()))
        return st.fixed_dictionaries(
            {k: from_schema(v) for k, v in properties.items() if k in required},
            optional={k: from_schema(v) for k, v in properties.items() if k not in required},
        )
    if kind == "array":
        return st.lists(from_schema(schema.get("items", {})), min_size=schema.get("minItems", 0),
                        max_size=min(schema.get("maxItems", 6), 6))  # fmt: skip
    if kind == "integer":
        return st.integers(schema.get("minimum", -(2**31)), schema.get("maximum", 2**31))
    if kind == "number":
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        return st.floats(min_value=low, max_value=schema.get("maximum"), allow_nan=False, allow_infinity=False,
                         exclude_min="exclusiveMinimum" in schema)  # fmt: skip
    if kind == "string":
        if "pattern" in schema:
            return st.from_regex(schema["pattern"], fullmatch=True)
        return st.text(max_size=schema.get("maxLength", 30))
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    return ANY_JSON


def path_value(parameter: dict[str, Any]) -> st.SearchStrategy[str]:
    hostile = st.sampled_from(["..", "%00", "a.b", "*", "0", "-1", "99999999999999999999", "x" * 80, "fraud"])
    if parameter["name"] == "name":
        typical = st.sampled_from(["fuzz", "fuzz", "nope"])
    elif parameter["name"] == "version":
        typical = st.integers(1, 3).map(str)
    else:
        typical = st.from_regex(r"[a-f0-9]{16}", fullmatch=True)
    return st.one_of(typical, hostile, st.text(min_size=1, max_size=12))


OPERATIONS: list[tuple[str, str, dict[str, Any]]] = []


@pytest.fixture(scope="module")
async def document(rollout_service: RolloutService, http: aiohttp.ClientSession) -> AsyncIterator[dict[str, Any]]:
    async with http.post("/models/fuzz/versions", data=version_form(model_bytes(7)), headers=AUTH) as r:
        assert r.status == 201
    async with http.get("/openapi.json") as r:
        doc: dict[str, Any] = await r.json()
    yield doc


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return sorted((m, p, op) for p, ops in doc["paths"].items() for m, op in ops.items())


async def send(
    http: aiohttp.ClientSession, method: str, path: str, op: dict[str, Any], *, params: dict[str, str], body: Any,
    headers: dict[str, str],
) -> aiohttp.ClientResponse:  # fmt: skip
    url = path
    for key, value in params.items():
        url = url.replace("{" + key + "}", quote(value, safe=""))
    content = op.get("requestBody", {}).get("content", {})
    if "multipart/form-data" in content:
        form = aiohttp.FormData()
        artifact, metadata = body
        form.add_field("artifact", artifact, filename="m.onnx")
        form.add_field("metadata", metadata)
        response = await http.request(method, url, data=form, headers=headers)
    elif body is None:
        response = await http.request(method, url, headers=headers)
    else:
        response = await http.request(method, url, data=json.dumps(body), headers=headers | {
            "Content-Type": "application/json"})  # fmt: skip
    await response.read()
    return response


@st.composite
def requests(draw: st.DrawFn, doc: dict[str, Any]) -> tuple[str, str, dict[str, Any], dict[str, str], Any]:
    method, path, op = draw(st.sampled_from(operations(doc)))
    params = {p["name"]: draw(path_value(p)) for p in op.get("parameters", [])}
    content = op.get("requestBody", {}).get("content", {})
    body: Any = None
    if "multipart/form-data" in content:
        artifact = draw(st.sampled_from([b"", b"garbage", model_bytes(3)]) | st.binary(max_size=64))
        metadata = draw(
            st.one_of(from_schema(COMPONENT_SCHEMAS["ModelMetadata"]).map(json.dumps), ANY_JSON.map(json.dumps),
                      st.text(max_size=20))
        )  # fmt: skip
        body = (artifact, metadata)
    elif "application/json" in content:
        schema = content["application/json"]["schema"]
        body = draw(st.one_of(from_schema(schema), ANY_JSON))
    return method, path, op, params, body


@settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
async def test_no_5xx_on_generated_requests(
    data: st.DataObject, document: dict[str, Any], http: aiohttp.ClientSession
) -> None:
    method, path, op, params, body = data.draw(requests(document))
    response = await send(http, method, path, op, params=params, body=body, headers=AUTH)
    assert response.status < 500, (method, path, params, body, await response.text())
    if response.content_type == "application/json":
        assert str(response.status) in op["responses"], (method, path, response.status, await response.text())
    if response.status >= 400 and response.content_type == "application/json":
        assert (await response.json())["error"]["message"]
    elif response.status >= 400:  # only aiohttp's own answer for a path no route matches ('..' normalised away)
        assert response.status in (404, 405), (method, path, params)


@pytest.mark.parametrize("header", [None, "Bearer wrong-token", "Basic dGVzdA==", "Bearer "])
async def test_every_mutating_route_enforces_auth(
    document: dict[str, Any], http: aiohttp.ClientSession, header: str | None
) -> None:
    mutating = [(m, p, op) for m, p, op in operations(document) if op["x-mutating"]]
    assert {m for m, _, _ in mutating} == {"post"}
    assert len(mutating) == len([o for o in operations(document) if o[0] != "get"]) == 8
    for method, path, op in mutating:
        params = {p["name"]: {"name": "fuzz", "version": "1"}.get(p["name"], "abc") for p in op.get("parameters", [])}
        body = (model_bytes(3), json.dumps({"features": [{"name": "a"}]})) if "multipart/form-data" in op.get(
            "requestBody", {}).get("content", {}) else {"version": 1, "candidate": 1, "strategy": "canary"}  # fmt: skip
        headers = {} if header is None else {"Authorization": header}
        response = await send(http, method, path, op, params=params, body=body, headers=headers)
        expected = 403 if header == "Bearer wrong-token" else 401
        assert response.status == expected, (method, path, response.status)
