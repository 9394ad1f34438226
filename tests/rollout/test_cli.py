"""``rtml models`` and ``rtml rollout`` against the running service."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import pytest
import structlog

from services.rollout.cli import register
from services.rollout.service import RolloutService

from .conftest import TOKEN, model_bytes


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="rtml")
    register(root.add_subparsers(dest="command", required=True))
    return root


async def run(*argv: str) -> int:
    args = parser().parse_args(argv)
    with structlog.testing.capture_logs():  # keep the in-process service's log lines out of stdout
        return int(await asyncio.to_thread(args.func, args))


async def test_cli_registers_lists_and_runs_a_rollout(
    rollout_service: RolloutService, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("RTML_ROLLOUT_URL", f"http://127.0.0.1:{rollout_service.http_port}")
    monkeypatch.setenv("RTML_ADMIN_TOKEN", TOKEN)
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(model_bytes(11))
    for _ in range(2):
        assert await run("models", "register", "clim", "--onnx", str(onnx), "--features", "amount,velocity,age") == 0
    capsys.readouterr()
    assert await run("models", "ls") == 0
    assert {"name": "clim", "versions": 2, "latest": 2} in json.loads(capsys.readouterr().out)["models"]
    assert await run("models", "show", "clim", "--version", "2") == 0
    assert json.loads(capsys.readouterr().out)["version"] == 2
    assert await run("rollout", "stable", "clim", "1") == 0
    capsys.readouterr()
    assert await run("rollout", "start", "clim", "--candidate", "2", "--steps", "50,100", "--dwell-s", "60") == 0
    rollout_id = json.loads(capsys.readouterr().out)["id"]
    assert await run("rollout", "abort", "clim", rollout_id, "--reason", "changed my mind") == 0
    assert json.loads(capsys.readouterr().out)["state"] == "aborted"
    assert await run("models", "show", "nosuchmodel") == 1
    assert "no model" in capsys.readouterr().err
    monkeypatch.setenv("RTML_ADMIN_TOKEN", "wrong")
    assert await run("rollout", "stable", "clim", "2") == 1
    assert "error 403" in capsys.readouterr().err
