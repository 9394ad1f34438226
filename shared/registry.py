"""The model registry: version metadata in Postgres, ONNX artifacts in the NATS object store.

Every artifact is stored under ``<model>/<version>.onnx`` with its sha256 in
Postgres; :func:`fetch_artifact` checks the digest on every load, so a corrupt or
swapped artifact is refused before it reaches a session.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import asyncpg
import onnx
from nats.js.object_store import ObjectStore

from shared.errors import BadRequest, NotFound

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS models (
    name        text PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS model_versions (
    model              text NOT NULL REFERENCES models(name),
    version            integer NOT NULL,
    sha256             text NOT NULL,
    size_bytes         bigint NOT NULL,
    features           jsonb NOT NULL,
    batch_policy       jsonb NOT NULL DEFAULT '{}',
    threshold          double precision NOT NULL DEFAULT 0.5,
    requires_features  boolean NOT NULL DEFAULT false,
    training_metrics   jsonb NOT NULL DEFAULT '{}',
    reference_profile  jsonb NOT NULL DEFAULT '{}',
    description        text NOT NULL DEFAULT '',
    status             text NOT NULL DEFAULT 'registered',
    created_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model, version)
);
"""


class Status(StrEnum):
    REGISTERED = "registered"
    ARCHIVED = "archived"


class ArtifactCorrupt(Exception):
    """The stored bytes do not match the registered sha256, or do not load as ONNX."""


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """One model input column, in signature order.

    ``source`` is ``online`` (read from the online store: ``view`` and ``field``,
    keyed by the request's entity or by the request feature named ``entity_from``)
    or ``request`` (taken from the request's ``features`` under ``name``).
    ``default`` stands in when the value is missing.
    """

    name: str
    source: str = "request"
    default: float = 0.0
    view: str | None = None
    field: str | None = None
    entity_from: str | None = None

    def __post_init__(self) -> None:
        if self.source not in ("online", "request"):
            raise BadRequest(f"feature '{self.name}': source must be 'online' or 'request', got {self.source!r}")
        if self.source == "online" and not self.view:
            raise BadRequest(f"feature '{self.name}': an online feature needs a view")

    @property
    def online_field(self) -> str:
        return self.field or self.name

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> FeatureSpec:
        if not isinstance(body, dict) or not isinstance(body.get("name"), str) or not body["name"]:
            raise BadRequest(f"each feature needs a non-empty 'name', got {body!r}")
        try:
            default = float(body.get("default", 0.0))
        except (TypeError, ValueError) as error:
            raise BadRequest(f"feature '{body['name']}': default must be a number") from error
        return cls(
            name=body["name"],
            source=str(body.get("source", "request")),
            default=default,
            view=body.get("view"),
            field=body.get("field"),
            entity_from=body.get("entity_from"),
        )


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    """What a caller supplies when registering a version."""

    features: list[FeatureSpec]
    batch_policy: dict[str, Any] = field(default_factory=dict)
    threshold: float = 0.5
    requires_features: bool = False
    training_metrics: dict[str, Any] = field(default_factory=dict)
    reference_profile: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> ModelMetadata:
        raw_features = body.get("features")
        if not isinstance(raw_features, list) or not raw_features:
            raise BadRequest("metadata 'features' must be a non-empty list, in the model's input order")
        features = [FeatureSpec.from_dict(item) for item in raw_features]
        names = [f.name for f in features]
        if len(set(names)) != len(names):
            raise BadRequest("metadata 'features' has duplicate names")
        for key in ("batch_policy", "training_metrics", "reference_profile"):
            if not isinstance(body.get(key, {}), dict):
                raise BadRequest(f"metadata '{key}' must be an object")
        threshold = body.get("threshold", 0.5)
        if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0.0 <= threshold <= 1.0:
            raise BadRequest("metadata 'threshold' must be a number within [0, 1]")
        return cls(
            features=features,
            batch_policy=dict(body.get("batch_policy", {})),
            threshold=float(threshold),
            requires_features=bool(body.get("requires_features", False)),
            training_metrics=dict(body.get("training_metrics", {})),
            reference_profile=dict(body.get("reference_profile", {})),
            description=str(body.get("description", "")),
        )


@dataclass(frozen=True, slots=True)
class ModelVersion:
    model: str
    version: int
    sha256: str
    size_bytes: int
    metadata: ModelMetadata
    status: Status
    created_at: datetime

    @property
    def artifact_name(self) -> str:
        return artifact_name(self.model, self.version)

    def to_dict(self) -> dict[str, Any]:
        body = asdict(self.metadata)
        body.update(
            model=self.model,
            version=self.version,
            sha256=self.sha256,
            size_bytes=self.size_bytes,
            status=self.status.value,
            created_at=self.created_at.isoformat(),
        )
        return body


def artifact_name(model: str, version: int) -> str:
    return f"{model}/{version}.onnx"


def onnx_input_width(artifact: bytes) -> int:
    """Check that ``artifact`` is a loadable ONNX model with one ``[batch, n]`` float input; return ``n``."""
    try:
        model = onnx.load_model_from_string(artifact)
        onnx.checker.check_model(model)
    except Exception as error:
        raise BadRequest(f"not a loadable ONNX model: {error}") from error
    initializers = {init.name for init in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise BadRequest(f"the model must take exactly one input, it takes {len(inputs)}")
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) != 2 or not dims[1].HasField("dim_value"):
        raise BadRequest("the model input must be float32 [batch, n_features] with a fixed n_features")
    if inputs[0].type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        raise BadRequest("the model input must be float32")
    return int(dims[1].dim_value)


REGISTRY_DDL_LOCK = 0x7274_6D6C_7267  # "rtmlrg": inference and rollout start together and both create the tables


async def ensure_tables(pool: asyncpg.Pool) -> None:
    """Create the registry tables; serialized, since concurrent ``CREATE TABLE IF NOT EXISTS`` can collide."""
    async with pool.acquire() as connection, connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", REGISTRY_DDL_LOCK)
        await connection.execute(SCHEMA_SQL)


def _row_to_version(row: asyncpg.Record) -> ModelVersion:
    metadata = ModelMetadata(
        features=[FeatureSpec(**item) for item in json.loads(row["features"])],
        batch_policy=json.loads(row["batch_policy"]),
        threshold=row["threshold"],
        requires_features=row["requires_features"],
        training_metrics=json.loads(row["training_metrics"]),
        reference_profile=json.loads(row["reference_profile"]),
        description=row["description"],
    )
    return ModelVersion(
        model=row["model"],
        version=row["version"],
        sha256=row["sha256"],
        size_bytes=row["size_bytes"],
        metadata=metadata,
        status=Status(row["status"]),
        created_at=row["created_at"],
    )


async def register_version(
    pool: asyncpg.Pool, store: ObjectStore, model: str, artifact: bytes, metadata: ModelMetadata
) -> ModelVersion:
    """Validate the artifact against its feature list, store it, and record the next version number."""
    width = onnx_input_width(artifact)
    if width != len(metadata.features):
        raise BadRequest(f"the model takes {width} inputs but the metadata lists {len(metadata.features)} features")
    digest = hashlib.sha256(artifact).hexdigest()
    async with pool.acquire() as connection, connection.transaction():
        await connection.execute("INSERT INTO models (name) VALUES ($1) ON CONFLICT DO NOTHING", model)
        # Serialize version numbering per model on the models row.
        await connection.execute("SELECT 1 FROM models WHERE name = $1 FOR UPDATE", model)
        version = await connection.fetchval(
            "SELECT coalesce(max(version), 0) + 1 FROM model_versions WHERE model = $1", model
        )
        await store.put(artifact_name(model, version), artifact)
        row = await connection.fetchrow(
            """INSERT INTO model_versions (model, version, sha256, size_bytes, features, batch_policy, threshold,
                   requires_features, training_metrics, reference_profile, description)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING *""",
            model, version, digest, len(artifact),
            json.dumps([asdict(f) for f in metadata.features]), json.dumps(metadata.batch_policy),
            metadata.threshold, metadata.requires_features, json.dumps(metadata.training_metrics),
            json.dumps(metadata.reference_profile), metadata.description,
        )  # fmt: skip
    return _row_to_version(row)


async def get_version(pool: asyncpg.Pool, model: str, version: int) -> ModelVersion:
    row = await pool.fetchrow("SELECT * FROM model_versions WHERE model = $1 AND version = $2", model, version)
    if row is None:
        raise NotFound(f"model {model!r} has no version {version}")
    return _row_to_version(row)


async def list_versions(pool: asyncpg.Pool, model: str) -> list[ModelVersion]:
    rows = await pool.fetch("SELECT * FROM model_versions WHERE model = $1 ORDER BY version", model)
    if not rows and await pool.fetchval("SELECT 1 FROM models WHERE name = $1", model) is None:
        raise NotFound(f"no model {model!r}")
    return [_row_to_version(row) for row in rows]


async def list_models(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        """SELECT m.name, count(v.version) AS versions, max(v.version) AS latest
           FROM models m LEFT JOIN model_versions v ON v.model = m.name GROUP BY m.name ORDER BY m.name"""
    )
    return [{"name": r["name"], "versions": r["versions"], "latest": r["latest"]} for r in rows]


async def archive_version(pool: asyncpg.Pool, model: str, version: int) -> ModelVersion:
    row = await pool.fetchrow(
        "UPDATE model_versions SET status = 'archived' WHERE model = $1 AND version = $2 RETURNING *", model, version
    )
    if row is None:
        raise NotFound(f"model {model!r} has no version {version}")
    return _row_to_version(row)


async def fetch_artifact(store: ObjectStore, version: ModelVersion) -> bytes:
    """The artifact's bytes, refused with :class:`ArtifactCorrupt` unless they match the registered sha256."""
    result = await store.get(version.artifact_name)
    data = result.data or b""
    digest = hashlib.sha256(data).hexdigest()
    if digest != version.sha256:
        raise ArtifactCorrupt(
            f"{version.artifact_name}: sha256 {digest[:12]}... does not match the registered {version.sha256[:12]}..."
        )
    return data
