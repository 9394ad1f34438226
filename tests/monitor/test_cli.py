"""``rtml monitor profile|alerts``: a training CSV becomes a stored reference profile."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import numpy as np
import pytest

from services.monitor import cli
from services.monitor.profiles import ReferenceProfile, load_profile
from shared.db import open_pool
from shared.settings import CommonSettings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rtml")
    cli.register(parser.add_subparsers(dest="command", required=True))
    return parser


@pytest.fixture
def env(settings: CommonSettings, monkeypatch: pytest.MonkeyPatch) -> CommonSettings:
    monkeypatch.setenv("RTML_NAMESPACE", settings.namespace)
    monkeypatch.setenv("RTML_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("RTML_NATS_URL", settings.nats_url)
    return settings


async def _load(settings: CommonSettings) -> ReferenceProfile | None:
    async with open_pool(settings.database_url, schema=settings.namespace) as pool:
        return await load_profile(pool, "churn", 4)


def test_profile_from_csv(env: CommonSettings, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    rows = ["tenure,plan,score,label"]
    for _ in range(500):
        label = int(rng.random() < 0.3)
        score = min(1, max(0, 0.3 + 0.4 * label + rng.normal(0, 0.1)))
        rows.append(f"{rng.normal(12, 3):.3f},{rng.choice(['a', 'b'])},{score:.3f},{label}")
    data = tmp_path / "train.csv"
    data.write_text("\n".join(rows) + "\n")
    args = _parser().parse_args(
        ["monitor", "profile", "--model", "churn", "--version", "4", "--data", str(data),
         "--score-column", "score", "--label-column", "label"]
    )  # fmt: skip
    assert args.func(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["features"] == ["tenure", "plan"] and printed["metrics"]["auc"] > 0.9
    profile = asyncio.run(_load(env))
    assert profile is not None and set(profile.categorical["plan"].shares) == {"a", "b"}

    alerts = _parser().parse_args(["monitor", "alerts", "--open"])
    assert alerts.func(alerts) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_bad_input_is_an_error_not_a_crash(
    env: CommonSettings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _parser().parse_args(
        ["monitor", "profile", "--model", "m", "--version", "1", "--data", str(tmp_path / "x.txt")]
    )
    assert args.func(args) == 1
    assert "expected a .parquet or .csv file" in capsys.readouterr().err
