"""``rtml models register|ls|show|serve`` against the real servers."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from services.inference.cli import register as register_cli
from shared.routing import read_policy
from shared.settings import CommonSettings
from tests.onnx_factory import logistic_model


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="rtml")
    register_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


async def test_register_list_show_serve(
    settings: CommonSettings,
    kv: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for variable, value in {
        "RTML_NAMESPACE": settings.namespace, "RTML_NATS_URL": settings.nats_url,
        "RTML_REDIS_URL": settings.redis_url, "RTML_DATABASE_URL": settings.database_url,
    }.items():  # fmt: skip
        monkeypatch.setenv(variable, value)
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(logistic_model(np.ones(2), 0.0))
    metadata = tmp_path / "m.json"
    metadata.write_text(json.dumps({"features": [{"name": "a"}, {"name": "b"}], "batch_policy": {"max_batch_size": 4}}))
    cli = ["models", "register", "climodel", "--onnx", str(onnx_file), "--metadata", str(metadata)]
    assert await asyncio.to_thread(run_cli, cli) == 0
    assert "registered climodel version 1" in capsys.readouterr().out
    assert await asyncio.to_thread(run_cli, ["models", "ls"]) == 0
    assert "climodel" in capsys.readouterr().out
    assert await asyncio.to_thread(run_cli, ["models", "show", "climodel", "--version", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["batch_policy"] == {"max_batch_size": 4}
    assert await asyncio.to_thread(run_cli, ["models", "serve", "climodel", "1"]) == 0
    policy = await read_policy(kv, "climodel")
    assert policy is not None and policy.stable == 1

    metadata.write_text(json.dumps({"features": [{"name": "a"}, {"name": "b"}], "batch_policy": {"max_batch": 4}}))
    assert await asyncio.to_thread(run_cli, cli) == 1
    assert "unknown keys" in capsys.readouterr().err
    assert await asyncio.to_thread(run_cli, ["models", "serve", "climodel", "9"]) == 1
