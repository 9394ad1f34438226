"""The OpenAPI 3.1 document, built from the same route table the router serves."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .gates import GATE_NAMES

if TYPE_CHECKING:
    from .api import RouteSpec

_NUMBER = {"type": "number"}
_COUNT = {"type": "integer", "minimum": 1}

GATES_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "description": "Overrides of the gate thresholds (see docs/rollout.md)",
    "properties": {
        "min_predictions": _COUNT,
        "max_p99_ratio": {"type": "number", "minimum": 0},
        "p99_slack_ms": {"type": "number", "minimum": 0},
        "max_error_rate_increase": {"type": "number", "minimum": 0, "maximum": 1},
        "max_degraded_rate_increase": {"type": "number", "minimum": 0, "maximum": 1},
        "max_psi": {"type": "number", "minimum": 0},
        "min_agreement": {"type": "number", "minimum": 0, "maximum": 1},
        "min_matched": _COUNT,
        "max_auc_drop": {"type": "number", "minimum": 0, "maximum": 1},
        "min_labelled": _COUNT,
        "fail_checks": {"type": "integer", "minimum": 1, "maximum": 100},
        "enabled": {"type": "array", "items": {"type": "string", "enum": list(GATE_NAMES)}},
    },
}

CREATE_ROLLOUT_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["candidate", "strategy"],
    "additionalProperties": False,
    "properties": {
        "candidate": {"type": "integer", "minimum": 1, "description": "The version to roll out"},
        "stable": {"type": "integer", "minimum": 1, "description": "Defaults to the routing policy's stable"},
        "strategy": {"type": "string", "enum": ["shadow", "canary", "bluegreen"]},
        "steps": {
            "type": "array",
            "items": {"type": "number", "exclusiveMinimum": 0, "maximum": 100},
            "minItems": 1,
            "maxItems": 20,
            "description": "Canary weights in percent, increasing, ending at 100 (default 5, 25, 50, 100)",
        },
        "dwell_s": {"type": "number", "minimum": 0, "description": "Seconds all gates must pass to advance"},
        "duration_s": {"type": "number", "minimum": 0, "description": "Shadow only: how long to mirror"},
        "shadow_share": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        "window_s": {"type": "number", "minimum": 1, "description": "The monitor window the gates read"},
        "gates": GATES_SCHEMA,
    },
}

SET_STABLE_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["version"],
    "properties": {"version": {"type": "integer", "minimum": 1}},
}

ACTION_BODY: dict[str, Any] = {
    "type": "object",
    "properties": {"reason": {"type": "string", "maxLength": 500}},
}

FEATURE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "source": {"type": "string", "enum": ["request", "online"]},
        "default": _NUMBER,
        "view": {"type": "string"},
        "field": {"type": "string"},
        "entity_from": {"type": "string"},
    },
}

METADATA_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["features"],
    "properties": {
        "features": {"type": "array", "minItems": 1, "items": FEATURE_SCHEMA,
                     "description": "In the model's input order"},
        "batch_policy": {"type": "object"},
        "threshold": {"type": "number", "minimum": 0, "maximum": 1},
        "requires_features": {"type": "boolean"},
        "training_metrics": {"type": "object"},
        "reference_profile": {"type": "object"},
        "description": {"type": "string"},
    },
}  # fmt: skip

REGISTER_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["artifact", "metadata"],
    "properties": {
        "artifact": {"type": "string", "format": "binary", "description": "The ONNX file"},
        "metadata": {"type": "string", "description": "JSON text of a ModelMetadata object"},
    },
}

_OBJECT = {"type": "object"}
COMPONENT_SCHEMAS: dict[str, Any] = {
    "Object": _OBJECT,
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {"code": {"type": "integer"}, "message": {"type": "string"}},
            }
        },
    },
    "ModelMetadata": METADATA_SCHEMA,
    "ModelVersion": {
        "type": "object",
        "required": ["model", "version", "sha256", "size_bytes", "features", "status", "created_at"],
        "properties": {
            "model": {"type": "string"},
            "version": {"type": "integer"},
            "sha256": {"type": "string"},
            "size_bytes": {"type": "integer"},
            "features": {"type": "array", "items": FEATURE_SCHEMA},
            "threshold": _NUMBER,
            "status": {"type": "string", "enum": ["registered", "archived"]},
            "created_at": {"type": "string", "format": "date-time"},
        },
    },
    "ModelList": {
        "type": "object",
        "properties": {
            "models": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "versions": {"type": "integer"},
                        "latest": {"type": ["integer", "null"]},
                    },
                },
            }
        },
    },
    "RoutingPolicy": {
        "type": "object",
        "required": ["model", "stable", "mode"],
        "properties": {
            "model": {"type": "string"},
            "stable": {"type": "integer"},
            "mode": {"type": "string", "enum": ["stable", "shadow", "canary", "bluegreen"]},
            "candidate": {"type": ["integer", "null"]},
            "canary_weight_pct": _NUMBER,
            "shadow_share": _NUMBER,
            "revision": {"type": "integer"},
            "rollout_id": {"type": ["string", "null"]},
            "updated_ms": {"type": "integer"},
        },
    },
    "Model": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "versions": {"type": "array", "items": {"$ref": "#/components/schemas/ModelVersion"}},
            "routing": {"oneOf": [{"$ref": "#/components/schemas/RoutingPolicy"}, {"type": "null"}]},
            "active_rollout": {"oneOf": [{"$ref": "#/components/schemas/Rollout"}, {"type": "null"}]},
        },
    },
    "Rollout": {
        "type": "object",
        "required": ["id", "model", "stable", "candidate", "state", "step", "weight_pct", "spec"],
        "properties": {
            "id": {"type": "string"},
            "model": {"type": "string"},
            "stable": {"type": "integer"},
            "candidate": {"type": "integer"},
            "state": {"type": "string", "enum": ["running", "paused", "succeeded", "rolled_back", "aborted"]},
            "step": {"type": "integer"},
            "weight_pct": _NUMBER,
            "consecutive_failures": {"type": "integer"},
            "first_fail_ms": {"type": ["integer", "null"]},
            "policy_published": {"type": "boolean"},
            "spec": _OBJECT,
            "baseline": {"type": ["object", "null"]},
            "report": _OBJECT,
        },
    },
    "RolloutList": {
        "type": "object",
        "properties": {"rollouts": {"type": "array", "items": {"$ref": "#/components/schemas/Rollout"}}},
    },
    "RolloutWithTimeline": {
        "allOf": [
            {"$ref": "#/components/schemas/Rollout"},
            {
                "type": "object",
                "properties": {
                    "timeline": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "seq": {"type": "integer"},
                                "at_ms": {"type": "integer"},
                                "kind": {"type": "string"},
                                "state": {"type": "string"},
                                "step": {"type": "integer"},
                                "reason": {"type": "string"},
                                "actor": {"type": "string"},
                                "detail": _OBJECT,
                            },
                        },
                    }
                },
            },
        ]
    },
}

_PARAMETERS: dict[str, dict[str, Any]] = {
    "name": {"schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}, "description": "Model name"},
    "version": {"schema": {"type": "integer", "minimum": 1}, "description": "Model version"},
    "rollout_id": {"schema": {"type": "string", "pattern": "^[A-Za-z0-9]{1,64}$"}, "description": "Rollout id"},
}

_ERROR_TEXT = {
    400: "Invalid input; the message names the field",
    401: "No bearer token",
    403: "Wrong bearer token, or no admin token configured",
    404: "Unknown model, version or rollout",
    409: "Conflicts with the current state (e.g. a rollout is already active)",
}


def _ref(schema: str) -> str:
    return f"#/components/schemas/{schema}"


def document(specs: Sequence[RouteSpec]) -> dict[str, Any]:
    """The OpenAPI document of ``specs``."""
    paths: dict[str, dict[str, Any]] = {}
    for spec in specs:
        operation: dict[str, Any] = {
            "summary": spec.summary,
            "operationId": spec.method.lower() + re.sub(r"[^A-Za-z0-9]+", "_", spec.path).rstrip("_"),
            "responses": {
                str(spec.ok_status): {
                    "description": "OK",
                    "content": {
                        "application/json": {"schema": {"$ref": f"#/components/schemas/{spec.response_schema}"}}
                    },
                }
            },
        }
        parameters = [
            {"name": name, "in": "path", "required": True, **_PARAMETERS[name]}
            for name in re.findall(r"{(\w+)}", spec.path)
        ]
        if parameters:
            operation["parameters"] = parameters
        if spec.body_schema is not None:
            operation["requestBody"] = {
                "required": spec.body_content_type != "application/json" or "required" in spec.body_schema,
                "content": {spec.body_content_type: {"schema": spec.body_schema}},
            }
        errors = set(spec.errors)
        if spec.mutating:
            operation["security"] = [{"adminToken": []}]
            errors |= {401, 403}
        for code in sorted(errors):
            operation["responses"][str(code)] = {
                "description": _ERROR_TEXT[code],
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            }
        operation["x-mutating"] = spec.mutating
        paths.setdefault(spec.path, {})[spec.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "rtml rollout",
            "version": "1",
            "description": "Model registry, traffic policy and gated rollouts. Mutating routes need the admin token.",
        },
        "paths": paths,
        "components": {
            "schemas": COMPONENT_SCHEMAS,
            "securitySchemes": {"adminToken": {"type": "http", "scheme": "bearer"}},
        },
    }
