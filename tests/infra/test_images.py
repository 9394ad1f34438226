"""The Dockerfiles and the entry point they share (no Docker engine needed)."""

from __future__ import annotations

import fnmatch
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.infra.inventory import INFRA, ROOT, SERVICES, has_entry_point

ENTRY = INFRA / "docker" / "rtml-service.sh"


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    found = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def final_stage(dockerfile: Path) -> list[tuple[str, str]]:
    steps = instructions(dockerfile)
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[last_from:]


def copy_sources(steps: list[tuple[str, str]]) -> list[str]:
    sources = []
    for keyword, rest in steps:
        if keyword == "COPY" and "--from=" not in rest:
            parts = [part for part in rest.split() if not part.startswith("--")]
            sources.extend(parts[:-1])
    return sources


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore: the last matching pattern wins; ``!`` re-includes."""
    verdict = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        glob = pattern[1:] if negate else pattern
        if fnmatch.fnmatch(path, glob) or fnmatch.fnmatch(path, glob.rstrip("*").rstrip("/")):
            verdict = not negate
    return verdict


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.gpu"])
def test_image_is_multi_stage_non_root_and_runs_the_entry_point(name: str) -> None:
    dockerfile = INFRA / name
    steps = instructions(dockerfile)
    assert sum(keyword == "FROM" for keyword, _ in steps) >= 2, "build and runtime stages"
    final = final_stage(dockerfile)
    users = [rest for keyword, rest in final if keyword == "USER"]
    assert users, "the runtime stage sets no USER, so it runs as root"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}, f"runs as {user}"
    entrypoint = [rest for keyword, rest in final if keyword == "ENTRYPOINT"]
    assert entrypoint == ['["rtml-service"]']
    assert any("infra/docker/rtml-service.sh /usr/local/bin/rtml-service" in rest for _, rest in final)
    patterns = [
        line.strip() for line in (INFRA / f"{name}.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]  # fmt: skip
    for source in copy_sources(steps):
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
        assert not ignored(source.rstrip("/"), patterns), f"COPY {source}: excluded by {name}.dockerignore"
    assert ignored(".venv", patterns) and ignored("tests", patterns)


def test_cpu_image_uses_a_slim_python_and_only_runtime_dependencies() -> None:
    text = (INFRA / "Dockerfile").read_text()
    assert re.search(r"ARG PYTHON_IMAGE=python:3\.1[1-9]-slim", text)
    assert "['project']['dependencies']" in text  # not optional-dependencies (dev, loadtest, gpu)


def test_gpu_image_is_nvidias_tensorrt_image_with_pycuda() -> None:
    text = (INFRA / "Dockerfile.gpu").read_text()
    assert re.search(r"ARG TENSORRT_IMAGE=nvcr\.io/nvidia/tensorrt:\d\d\.\d\d-py3", text)
    assert "pycuda" in text and "import tensorrt" in text
    assert instructions(INFRA / "Dockerfile.gpu")[-1] == ("CMD", '["inference"]')


def run_entry(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", str(ENTRY), *args], capture_output=True, text=True, timeout=60, env=env, check=False)


def test_entry_point_knows_exactly_the_five_services() -> None:
    case = re.search(r"^\s*([a-z |]+)\)\s*$", ENTRY.read_text(), re.MULTILINE)
    assert case is not None
    assert {name.strip() for name in case.group(1).split("|")} == set(SERVICES)
    refused = run_entry("nonsense")
    assert refused.returncode == 64 and "unknown service 'nonsense'" in refused.stderr
    assert run_entry().returncode == 64
    assert run_entry("--help").returncode == 0


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_entry_point_execs_the_service_module(service: str, tmp_path: Path) -> None:
    # A stand-in `python` first on PATH records what the entry point execs; that the module
    # itself starts and serves is test_metrics_exported's job (it runs `python -m services.<name>`).
    fake = tmp_path / "python"
    fake.write_text('#!/bin/sh\necho "python $*"\n')
    fake.chmod(0o755)
    result = run_entry(service, "--extra", env={**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"python -m services.{service} --extra"
    assert has_entry_point(service), f"services/{service}/__main__.py does not exist"


def test_entry_point_runs_the_cli(tmp_path: Path) -> None:
    fake = tmp_path / "python"
    fake.write_text('#!/bin/sh\necho "python $*"\n')
    fake.chmod(0o755)
    result = run_entry("rtml", "status", env={**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"})
    assert result.stdout.strip() == "python -m rtml status"
    assert (ROOT / "rtml" / "__main__.py").is_file()
