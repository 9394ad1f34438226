"""A trained version registered on the real Postgres and object store loads back with its sha256."""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from rtml.train import cli
from rtml.train.model import onnx_scores
from rtml.train.pipeline import TrainConfig, train
from rtml.train.registration import register
from shared.bus import connect
from shared.db import open_pool
from shared.registry import fetch_artifact, get_version
from shared.settings import CommonSettings
from shared.subjects import Names
from tests.train.export_factory import export_table, write


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write(export_table(hours=8, seed=5), tmp_path_factory.mktemp("export") / "training.csv")


async def test_registered_version_loads_and_its_sha_matches(settings: CommonSettings, export: Path) -> None:
    result = train(TrainConfig(export=export, kind="logreg"))
    version = await register(settings, "fraud", result)
    names = Names(settings.namespace)
    async with (
        open_pool(settings.database_url, schema=names.schema) as pool,
        connect(settings.nats_url, name="test-train") as nc,
    ):
        loaded = await get_version(pool, "fraud", version.version)
        store = await nc.jetstream().object_store(names.models_bucket)
        artifact = await fetch_artifact(store, loaded)
    assert loaded.sha256 == hashlib.sha256(artifact).hexdigest() == result.sha256
    assert [f.name for f in loaded.metadata.features] == [f.name for f in result.metadata.features]
    assert loaded.metadata.threshold == pytest.approx(result.metadata.threshold)
    assert loaded.metadata.training_metrics["holdout_auc"] == pytest.approx(result.holdout["auc"])
    assert loaded.metadata.reference_profile["features"][0]["name"] == "amount"
    rows = np.random.default_rng(0).random((4, len(loaded.metadata.features)))
    assert np.array_equal(onnx_scores(artifact, rows), onnx_scores(result.artifact, rows))


def test_cli_trains_and_registers_the_next_version(
    settings: CommonSettings,
    export: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("RTML_NAMESPACE", settings.namespace)
    monkeypatch.setenv("RTML_NATS_URL", settings.nats_url)
    monkeypatch.setenv("RTML_DATABASE_URL", settings.database_url)
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    out = tmp_path / "fraud.onnx"
    args = parser.parse_args(["train", "--export", str(export), "--kind", "logreg", "--out", str(out)])
    assert args.func(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["version"] >= 1 and summary["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert summary["holdout"]["auc"] > 0.8


def test_cli_refuses_an_export_it_cannot_use(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    bad = tmp_path / "bad.txt"
    bad.write_text("nothing")
    args = parser.parse_args(["train", "--export", str(bad), "--no-register"])
    assert args.func(args) == 2
    assert "expected a .csv or .parquet" in capsys.readouterr().err
