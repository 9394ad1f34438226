"""Reference profiles: what a model version's training data looked like, for drift tests against it.

Per numeric feature: count, mean, standard deviation, decile cut points with the
training share in each bin (a fixed-edge histogram) and a bounded random sample
(for KS and Wasserstein). Per categorical feature: the category shares. The score
gets a numeric profile of its own, and the version's training metrics and decision
threshold ride along. Profiles are JSON documents in the monitor's Postgres table
``monitor_profiles`` keyed by ``(model, version)``; the registry's
``model_versions.reference_profile`` column is read when the monitor has none.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import numpy as np
from numpy.typing import ArrayLike

from services.monitor import performance as perf
from services.monitor.stats import bin_counts, quantile_edges
from shared.errors import BadRequest

PROFILE_VERSION = 1
SCORE = "__score__"

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS monitor_profiles (
    model       text NOT NULL,
    version     integer NOT NULL,
    profile     jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model, version)
);
"""


def category_key(value: Any) -> str:
    """The category a value stands for; integral floats (categorical codes on the wire) lose their ``.0``.

    >>> category_key(3.0), category_key("FR"), category_key(2.5), category_key(True)
    ('3', 'FR', '2.5', 'True')
    """
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@dataclass(frozen=True, slots=True)
class NumericProfile:
    count: int
    mean: float
    std: float
    edges: list[float]
    fractions: list[float]
    sample: list[float]
    kind: str = "numeric"

    @classmethod
    def build(cls, values: ArrayLike, *, bins: int, sample_size: int, rng: np.random.Generator) -> NumericProfile:
        x = np.asarray(values, dtype=np.float64).ravel()
        x = x[np.isfinite(x)]
        if x.size == 0:
            raise BadRequest("a numeric feature needs at least one finite value")
        edges = quantile_edges(x, bins=bins)
        counts = bin_counts(x, edges)
        sample = x if x.size <= sample_size else rng.choice(x, size=sample_size, replace=False)
        return cls(
            count=int(x.size),
            mean=float(x.mean()),
            std=float(x.std()),
            edges=[float(e) for e in edges],
            fractions=[float(c) for c in counts / counts.sum()],
            sample=[float(v) for v in np.sort(sample)],
        )


@dataclass(frozen=True, slots=True)
class CategoricalProfile:
    count: int
    shares: dict[str, float]
    kind: str = "categorical"

    @classmethod
    def build(cls, values: Iterable[Any]) -> CategoricalProfile:
        counts: dict[str, int] = {}
        total = 0
        for value in values:
            key = category_key(value)
            counts[key] = counts.get(key, 0) + 1
            total += 1
        if total == 0:
            raise BadRequest("a categorical feature needs at least one value")
        return cls(count=total, shares={k: v / total for k, v in sorted(counts.items())})


FeatureProfile = NumericProfile | CategoricalProfile


@dataclass(frozen=True, slots=True)
class ReferenceProfile:
    """A model version's reference: feature profiles in signature order, the score, metrics, threshold."""

    model: str
    version: int
    features: dict[str, FeatureProfile]
    score: NumericProfile | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    threshold: float = 0.5

    @property
    def numeric(self) -> dict[str, NumericProfile]:
        return {n: p for n, p in self.features.items() if isinstance(p, NumericProfile)}

    @property
    def categorical(self) -> dict[str, CategoricalProfile]:
        return {n: p for n, p in self.features.items() if isinstance(p, CategoricalProfile)}

    def to_dict(self) -> dict[str, Any]:
        def one(profile: FeatureProfile) -> dict[str, Any]:
            if isinstance(profile, NumericProfile):
                return {
                    "kind": "numeric", "count": profile.count, "mean": profile.mean, "std": profile.std,
                    "edges": profile.edges, "fractions": profile.fractions, "sample": profile.sample,
                }  # fmt: skip
            return {"kind": "categorical", "count": profile.count, "shares": profile.shares}

        return {
            "profile_version": PROFILE_VERSION,
            "model": self.model,
            "version": self.version,
            "features": [{"name": name, **one(p)} for name, p in self.features.items()],
            "score": None if self.score is None else one(self.score),
            "metrics": self.metrics,
            "threshold": self.threshold,
        }

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> ReferenceProfile:
        try:
            features: dict[str, FeatureProfile] = {}
            for item in body["features"]:
                features[str(item["name"])] = _feature_from_dict(item)
            score = body.get("score")
            score_profile = _feature_from_dict(score) if score else None
            if score_profile is not None and not isinstance(score_profile, NumericProfile):
                raise BadRequest("reference profile: the score profile must be numeric")
            return cls(
                model=str(body["model"]),
                version=int(body["version"]),
                features=features,
                score=score_profile,
                metrics={str(k): float(v) for k, v in dict(body.get("metrics") or {}).items()},
                threshold=float(body.get("threshold", 0.5)),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise BadRequest(f"reference profile is malformed: {type(error).__name__}: {error}") from error


def _feature_from_dict(item: Mapping[str, Any]) -> FeatureProfile:
    if item["kind"] == "numeric":
        return NumericProfile(
            count=int(item["count"]),
            mean=float(item["mean"]),
            std=float(item["std"]),
            edges=[float(v) for v in item["edges"]],
            fractions=[float(v) for v in item["fractions"]],
            sample=[float(v) for v in item["sample"]],
        )
    if item["kind"] == "categorical":
        return CategoricalProfile(
            count=int(item["count"]), shares={str(k): float(v) for k, v in item["shares"].items()}
        )
    raise BadRequest(f"reference profile: unknown feature kind {item['kind']!r}")


def _columns(data: Any) -> dict[str, Any]:
    """A DataFrame (anything with ``columns``) or a mapping of name -> values, as a dict of columns."""
    if hasattr(data, "columns"):
        return {str(name): data[name] for name in data.columns}
    if isinstance(data, Mapping):
        return {str(name): values for name, values in data.items()}
    raise BadRequest("features must be a DataFrame or a mapping of column name to values")


def _is_numeric(values: Any) -> bool:
    array = np.asarray(values)
    return array.dtype.kind in "iuf"


def build_reference_profile(
    *,
    model: str,
    version: int,
    features: Any,
    scores: ArrayLike | None = None,
    labels: ArrayLike | None = None,
    categorical: Iterable[str] = (),
    metrics: Mapping[str, float] | None = None,
    threshold: float = 0.5,
    bins: int = 10,
    sample_size: int = 1000,
    seed: int = 0,
) -> ReferenceProfile:
    """Build a version's reference profile from its training set.

    ``features`` is a DataFrame or a mapping of column -> values; columns named in
    ``categorical`` (or holding non-numbers) get category shares, the rest numeric
    profiles. With ``scores`` the score distribution is profiled; with ``labels``
    too, the training metrics (AUC, precision, recall, log loss, calibration and
    error rate at ``threshold``) are computed and merged under ``metrics``.

    >>> profile = build_reference_profile(
    ...     model="fraud", version=1,
    ...     features={"amount": [1.0, 2.0, 3.0, 4.0], "country": ["FR", "FR", "DE", "FR"]},
    ...     scores=[0.1, 0.2, 0.8, 0.9], labels=[0, 0, 1, 1])
    >>> profile.categorical["country"].shares
    {'DE': 0.25, 'FR': 0.75}
    >>> profile.metrics["auc"], profile.numeric["amount"].mean
    (1.0, 2.5)
    """
    columns = _columns(features)
    if not columns:
        raise BadRequest("a reference profile needs at least one feature")
    if not 0.0 <= threshold <= 1.0:
        raise BadRequest(f"threshold must be within [0, 1], got {threshold}")
    wanted_categorical = set(categorical)
    unknown = wanted_categorical - set(columns)
    if unknown:
        raise BadRequest(f"categorical columns not among the features: {sorted(unknown)}")
    rng = np.random.default_rng(seed)
    profiles: dict[str, FeatureProfile] = {}
    for name, values in columns.items():
        if name in wanted_categorical or not _is_numeric(values):
            profiles[name] = CategoricalProfile.build(list(values))
        else:
            profiles[name] = NumericProfile.build(values, bins=bins, sample_size=sample_size, rng=rng)
    score_profile = None
    all_metrics = {str(k): float(v) for k, v in (metrics or {}).items()}
    if scores is not None:
        score_profile = NumericProfile.build(scores, bins=bins, sample_size=sample_size, rng=rng)
        if labels is not None:
            figures = perf.performance(scores=scores, labels=labels, threshold=threshold, min_samples=1)
            for key, value in figures.to_dict().items():
                if key != "labelled" and value is not None and math.isfinite(value):
                    all_metrics.setdefault(key, float(value))
    return ReferenceProfile(
        model=model, version=version, features=profiles, score=score_profile, metrics=all_metrics, threshold=threshold
    )


async def ensure_profile_table(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as connection:
        await connection.execute(SCHEMA_SQL)


async def store_profile(pool: asyncpg.Pool, profile: ReferenceProfile) -> None:
    """Insert or replace the profile of ``(profile.model, profile.version)``."""
    await pool.execute(
        """INSERT INTO monitor_profiles (model, version, profile) VALUES ($1, $2, $3::jsonb)
           ON CONFLICT (model, version) DO UPDATE SET profile = EXCLUDED.profile, created_at = now()""",
        profile.model,
        profile.version,
        json.dumps(profile.to_dict()),
    )


async def load_profile(pool: asyncpg.Pool, model: str, version: int) -> ReferenceProfile | None:
    """The stored profile; else the registry's ``reference_profile`` when it holds one; else ``None``."""
    raw = await pool.fetchval("SELECT profile FROM monitor_profiles WHERE model = $1 AND version = $2", model, version)
    if raw is None:
        try:
            raw = await pool.fetchval(
                "SELECT reference_profile FROM model_versions WHERE model = $1 AND version = $2", model, version
            )
        except asyncpg.UndefinedTableError:
            raw = None
    if raw is None:
        return None
    body = json.loads(raw)
    if not body or "features" not in body:
        return None
    return ReferenceProfile.from_dict({**body, "model": model, "version": version})
