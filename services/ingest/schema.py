"""Event schemas as data: each type declared once (fields, kinds, required, bounds, enums, units) with a version.

A declaration is a plain mapping, the same in the built-in module, a user YAML file or a user Python module::

    type: transaction
    version: 1
    time_field: timestamp      # optional: data field used as the event time when the envelope has no ts
    output: norm               # norm (default) or label (published as the Label message)
    fields:
      card: {kind: string, required: true, max_len: 64}
      amount: {kind: money, required: true, min: 0, currency_field: currency, unit: major units}
      channel: {kind: category, enum: [pos, online, atm, moto]}

Kinds: ``string`` (trimmed), ``category`` (trimmed, lower-cased), ``number`` (float), ``integer``,
``boolean``, ``timestamp`` (epoch ms UTC), ``currency`` (ISO-4217, upper-case) and ``money`` (an amount in
the major unit under its own name or in minor units under ``<name>_minor``; normalized to both).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from shared.subjects import check_token

KINDS = frozenset({"string", "category", "number", "integer", "boolean", "timestamp", "currency", "money"})
OUTPUTS = frozenset({"norm", "label"})
LABEL_FIELDS = ("id", "label")

# A hook a Python schema module may attach: it gets the normalized data and returns it (possibly changed);
# it may raise Rejection to refuse the event. Any other exception is a crash, retried and then dead-lettered.
Hook = Callable[[dict[str, Any]], dict[str, Any]]


class SchemaError(ValueError):
    """A schema declaration is malformed; the message names the type and the field."""


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One field of an event's ``data``."""

    name: str
    kind: str
    required: bool = False
    minimum: float | None = None
    maximum: float | None = None
    enum: frozenset[str] | None = None
    max_len: int = 256
    pattern: re.Pattern[str] | None = None
    unit: str = ""
    currency_field: str | None = None
    description: str = ""
    path: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", f"data.{self.name}")

    @classmethod
    def from_dict(cls, event_type: str, name: str, body: Mapping[str, Any]) -> FieldSpec:
        where = f"schema {event_type!r} field {name!r}"
        known = {
            "kind",
            "required",
            "min",
            "max",
            "enum",
            "max_len",
            "pattern",
            "unit",
            "currency_field",
            "description",
        }
        extra = set(body) - known
        if extra:
            raise SchemaError(f"{where}: unknown keys {sorted(extra)}")
        kind = body.get("kind")
        if kind not in KINDS:
            raise SchemaError(f"{where}: kind must be one of {sorted(KINDS)}, got {kind!r}")
        enum = body.get("enum")
        if enum is not None and (not isinstance(enum, list) or not all(isinstance(v, str) for v in enum)):
            raise SchemaError(f"{where}: enum must be a list of strings")
        if enum is not None and kind not in ("category", "string", "currency"):
            raise SchemaError(f"{where}: enum applies to category, string and currency fields only")
        pattern = body.get("pattern")
        try:
            compiled = re.compile(pattern) if pattern is not None else None
        except (re.error, TypeError) as error:
            raise SchemaError(f"{where}: bad pattern {pattern!r} ({error})") from error
        bounds = {}
        for key in ("min", "max"):
            value = body.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise SchemaError(f"{where}: {key} must be a number")
            bounds[key] = None if value is None else float(value)
        max_len = body.get("max_len", 256)
        if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1:
            raise SchemaError(f"{where}: max_len must be a positive integer")
        currency_field = body.get("currency_field")
        if kind == "money" and not isinstance(currency_field, str):
            raise SchemaError(f"{where}: a money field needs currency_field naming its currency field")
        if kind != "money" and currency_field is not None:
            raise SchemaError(f"{where}: currency_field applies to money fields only")
        normalized_enum: frozenset[str] | None = None
        if enum is not None:
            normalized_enum = frozenset(
                v.strip().upper() if kind == "currency" else v.strip().lower() if kind == "category" else v
                for v in enum
            )
        return cls(
            name=name,
            kind=kind,
            required=bool(body.get("required", False)),
            minimum=bounds["min"],
            maximum=bounds["max"],
            enum=normalized_enum,
            max_len=max_len,
            pattern=compiled,
            unit=str(body.get("unit", "")),
            currency_field=currency_field,
            description=str(body.get("description", "")),
        )


@dataclass(frozen=True, slots=True)
class EventSchema:
    """A versioned event type: its fields, where its time comes from, and where it is published."""

    type: str
    version: int
    fields: tuple[FieldSpec, ...]
    time_field: str | None = None
    output: str = "norm"
    description: str = ""
    hook: Hook | None = field(default=None, compare=False)
    by_name: dict[str, FieldSpec] = field(init=False, repr=False, compare=False)
    plain_fields: tuple[FieldSpec, ...] = field(init=False, repr=False, compare=False)
    money_fields: tuple[FieldSpec, ...] = field(init=False, repr=False, compare=False)
    known_keys: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Derived once: validation runs per event, the schema changes only at start.
        money = tuple(spec for spec in self.fields if spec.kind == "money")
        object.__setattr__(self, "by_name", {spec.name: spec for spec in self.fields})
        object.__setattr__(self, "plain_fields", tuple(spec for spec in self.fields if spec.kind != "money"))
        object.__setattr__(self, "money_fields", money)
        known = {spec.name for spec in self.fields} | {f"{spec.name}_minor" for spec in money}
        object.__setattr__(self, "known_keys", frozenset(known))

    @classmethod
    def from_dict(cls, body: Mapping[str, Any], *, hook: Hook | None = None) -> EventSchema:
        event_type = body.get("type")
        if not isinstance(event_type, str):
            raise SchemaError(f"schema declaration without a string 'type': {dict(body)!r:.80}")
        try:
            check_token("event type", event_type)
        except ValueError as error:
            raise SchemaError(str(error)) from error
        known = {"type", "version", "fields", "time_field", "output", "description"}
        extra = set(body) - known
        if extra:
            raise SchemaError(f"schema {event_type!r}: unknown keys {sorted(extra)}")
        version = body.get("version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise SchemaError(f"schema {event_type!r}: version must be a positive integer")
        raw_fields = body.get("fields")
        if not isinstance(raw_fields, Mapping) or not raw_fields:
            raise SchemaError(f"schema {event_type!r}: fields must be a non-empty mapping")
        specs = []
        for name, spec in raw_fields.items():
            if not isinstance(name, str) or not isinstance(spec, Mapping):
                raise SchemaError(f"schema {event_type!r}: field {name!r} must map a name to a mapping")
            specs.append(FieldSpec.from_dict(event_type, name, spec))
        schema = cls(
            type=event_type,
            version=version,
            fields=tuple(specs),
            time_field=body.get("time_field"),
            output=body.get("output", "norm"),
            description=str(body.get("description", "")),
            hook=hook,
        )
        schema._check()
        return schema

    def _check(self) -> None:
        by_name = self.by_name
        if self.output not in OUTPUTS:
            raise SchemaError(f"schema {self.type!r}: output must be one of {sorted(OUTPUTS)}")
        if self.time_field is not None and by_name.get(self.time_field, None) is None:
            raise SchemaError(f"schema {self.type!r}: time_field {self.time_field!r} is not a field")
        if self.time_field is not None and by_name[self.time_field].kind != "timestamp":
            raise SchemaError(f"schema {self.type!r}: time_field {self.time_field!r} must be a timestamp field")
        for spec in self.fields:
            if spec.kind == "money":
                currency = by_name.get(spec.currency_field or "")
                if currency is None or currency.kind != "currency":
                    raise SchemaError(
                        f"schema {self.type!r} field {spec.name!r}: currency_field must name a currency field"
                    )
                if f"{spec.name}_minor" in by_name:
                    raise SchemaError(f"schema {self.type!r}: {spec.name}_minor is reserved for {spec.name}")
        if self.output == "label":
            for name in LABEL_FIELDS:
                if name not in by_name or not by_name[name].required:
                    raise SchemaError(f"schema {self.type!r}: a label schema needs a required field {name!r}")
            if by_name["label"].kind not in ("number", "integer", "boolean"):
                raise SchemaError(f"schema {self.type!r}: the label field must be a number, integer or boolean")

    def describe(self) -> dict[str, Any]:
        """The declaration back as plain data (for docs and ``/v1/schemas``)."""
        fields: dict[str, Any] = {}
        for spec in self.fields:
            entry: dict[str, Any] = {"kind": spec.kind, "required": spec.required}
            for key, value in (
                ("min", spec.minimum),
                ("max", spec.maximum),
                ("enum", sorted(spec.enum) if spec.enum is not None else None),
                ("pattern", spec.pattern.pattern if spec.pattern is not None else None),
                ("unit", spec.unit or None),
                ("currency_field", spec.currency_field),
            ):
                if value is not None:
                    entry[key] = value
            fields[spec.name] = entry
        body: dict[str, Any] = {"type": self.type, "version": self.version, "output": self.output, "fields": fields}
        if self.time_field is not None:
            body["time_field"] = self.time_field
        return body


class SchemaRegistry:
    """The event types the service knows, by name."""

    def __init__(self, schemas: Iterable[EventSchema] = ()) -> None:
        self._schemas: dict[str, EventSchema] = {}
        for schema in schemas:
            self.add(schema)

    def add(self, schema: EventSchema) -> None:
        """Add or replace (a user declaration may override a built-in one)."""
        self._schemas[schema.type] = schema

    def get(self, event_type: str) -> EventSchema | None:
        return self._schemas.get(event_type)

    def types(self) -> list[str]:
        return sorted(self._schemas)

    def __len__(self) -> int:
        return len(self._schemas)


def load_source(source: str) -> list[EventSchema]:
    """Schemas from a YAML file (``*.yaml``/``*.yml``) or an importable Python module.

    A YAML file holds ``types: [declaration, ...]``. A module holds ``SCHEMAS``: a list of declarations
    (mappings) and/or :class:`EventSchema` objects, and optionally ``HOOKS``: ``{type: callable}``.
    """
    if source.endswith((".yaml", ".yml")):
        path = Path(source)
        try:
            document = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as error:
            raise SchemaError(f"cannot read schema file {source}: {error}") from error
        if not isinstance(document, Mapping) or not isinstance(document.get("types"), list):
            raise SchemaError(f"schema file {source}: expected a mapping with a 'types' list")
        return [_declaration(item, source) for item in document["types"]]
    try:
        module = importlib.import_module(source)
    except ImportError as error:
        raise SchemaError(f"cannot import schema module {source}: {error}") from error
    declared = getattr(module, "SCHEMAS", None)
    hooks = getattr(module, "HOOKS", {})
    if not isinstance(declared, list | tuple) or not isinstance(hooks, Mapping):
        raise SchemaError(f"schema module {source}: needs SCHEMAS (a list) and optionally HOOKS (a mapping)")
    schemas = []
    for item in declared:
        schema = item if isinstance(item, EventSchema) else _declaration(item, source)
        hook = hooks.get(schema.type, schema.hook)
        if hook is not None and not callable(hook):
            raise SchemaError(f"schema module {source}: hook for {schema.type!r} is not callable")
        schemas.append(EventSchema(**{**_fields_of(schema), "hook": hook}))
    return schemas


def _declaration(item: Any, source: str) -> EventSchema:
    if not isinstance(item, Mapping):
        raise SchemaError(f"{source}: each declaration must be a mapping, got {type(item).__name__}")
    return EventSchema.from_dict(item)


def _fields_of(schema: EventSchema) -> dict[str, Any]:
    return {name: getattr(schema, name) for name, spec in EventSchema.__dataclass_fields__.items() if spec.init}


def build_registry(sources: Iterable[str] = ()) -> SchemaRegistry:
    """The built-in schemas, overridden or extended by each source in order."""
    from services.ingest.builtin import BUILTIN_SCHEMAS

    registry = SchemaRegistry(EventSchema.from_dict(body) for body in BUILTIN_SCHEMAS)
    for source in sources:
        for schema in load_source(source):
            registry.add(schema)
    return registry
