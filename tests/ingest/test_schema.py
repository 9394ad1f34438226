"""Schemas as data: the built-ins, user YAML files and Python modules, and clear errors for bad declarations."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import msgpack
import pytest

from services.ingest.pipeline import Accepted, Pipeline, Rejected
from services.ingest.reasons import Reason
from services.ingest.schema import EventSchema, SchemaError, build_registry, load_source
from services.ingest.settings import IngestSettings
from shared.settings import SettingsError
from shared.subjects import Names
from tests.ingest.cases import pack

NOW_MS = int(time.time() * 1000)

YAML = """
types:
  - type: login
    version: 3
    fields:
      user: {kind: string, required: true, max_len: 32}
      method: {kind: category, enum: [Password, SSO]}
      attempts: {kind: integer, min: 1}
      at: {kind: timestamp}
    time_field: at
"""


def test_builtins_describe_themselves() -> None:
    registry = build_registry()
    assert registry.types() == ["label", "transaction"]
    described = registry.get("transaction").describe()  # type: ignore[union-attr]
    assert described["version"] == 1 and described["fields"]["currency"]["kind"] == "currency"
    assert described["fields"]["channel"]["enum"] == ["atm", "moto", "online", "pos", "recurring"]


def test_user_yaml_type(tmp_path: Path) -> None:
    path = tmp_path / "login.yaml"
    path.write_text(YAML)
    pipeline = Pipeline(build_registry([str(path)]), Names("rtml"))
    body = {"id": "l1", "entity": "u", "data": {"user": "ann", "method": " sso ", "attempts": "2", "at": NOW_MS}}
    outcome = pipeline.process("rtml.events.login", pack(body), content_type=None, now_ms=NOW_MS)
    assert isinstance(outcome, Accepted) and outcome.schema_version == 3
    assert msgpack.unpackb(outcome.payload)["data"] == {"user": "ann", "method": "sso", "attempts": 2, "at": NOW_MS}
    body["data"]["attempts"] = 0
    outcome = pipeline.process("rtml.events.login", pack(body), content_type=None, now_ms=NOW_MS)
    assert isinstance(outcome, Rejected) and outcome.rejection.reason == Reason.OUT_OF_RANGE


def test_user_module_with_hook() -> None:
    pipeline = Pipeline(build_registry(["tests.ingest.crashy_schemas"]), Names("rtml"))

    def run(data: dict[str, Any]) -> Accepted | Rejected:
        body = {"id": "r1", "entity": "s", "ts": NOW_MS, "data": data}
        return pipeline.process("rtml.events.reading", pack(body), content_type=None, now_ms=NOW_MS)

    ok = run({"sensor": "A", "value": 100})
    assert isinstance(ok, Accepted) and msgpack.unpackb(ok.payload)["data"]["value_f"] == 212.0
    refused = run({"sensor": "retired", "value": 1})
    assert isinstance(refused, Rejected) and refused.rejection.reason == Reason.NOT_ALLOWED
    with pytest.raises(RuntimeError, match="poisoned"):
        run({"sensor": "a", "value": 1, "poison": "yes"})


@pytest.mark.parametrize(
    ("declaration", "message"),
    [
        ({"type": "x.y", "version": 1, "fields": {"a": {"kind": "string"}}}, "must be 1-64 characters"),
        ({"type": "x", "version": 0, "fields": {"a": {"kind": "string"}}}, "version must be a positive integer"),
        ({"type": "x", "version": 1, "fields": {}}, "fields must be a non-empty mapping"),
        ({"type": "x", "version": 1, "fields": {"a": {"kind": "text"}}}, "kind must be one of"),
        ({"type": "x", "version": 1, "fields": {"a": {"kind": "number", "enum": ["1"]}}}, "enum applies to"),
        ({"type": "x", "version": 1, "fields": {"a": {"kind": "money"}}}, "needs currency_field"),
        (
            {"type": "x", "version": 1, "fields": {"a": {"kind": "money", "currency_field": "a"}}},
            "currency_field must name a currency field",
        ),
        ({"type": "x", "version": 1, "fields": {"a": {"kind": "string", "pattern": "("}}}, "bad pattern"),
        ({"type": "x", "version": 1, "fields": {"a": {"kind": "string", "colour": 1}}}, "unknown keys"),
        ({"type": "x", "version": 1, "output": "label", "fields": {"a": {"kind": "string"}}}, "label schema needs"),
        ({"type": "x", "version": 1, "time_field": "a", "fields": {"a": {"kind": "string"}}}, "must be a timestamp"),
    ],
)
def test_bad_declarations_are_named(declaration: dict[str, Any], message: str) -> None:
    with pytest.raises(SchemaError, match=message):
        EventSchema.from_dict(declaration)


def test_bad_sources_fail_settings(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match="cannot import"):
        load_source("no_such_module_here")
    broken = tmp_path / "broken.yaml"
    broken.write_text("types: [{type: z}]")
    with pytest.raises(SettingsError, match="RTML_INGEST_SCHEMAS"):
        IngestSettings.from_env({"RTML_INGEST_SCHEMAS": str(broken)})
    with pytest.raises(SettingsError, match="RTML_INGEST_BATCH"):
        IngestSettings.from_env({"RTML_INGEST_BATCH": "0"})
    with pytest.raises(SettingsError, match="cannot read schema file"):
        IngestSettings.from_env({"RTML_INGEST_SCHEMAS": f" {tmp_path / 'missing.yml'} "})
