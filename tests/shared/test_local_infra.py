"""``rtml infra up``: starts real servers where nothing listens, reuses those that answer."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from infra.local import manager
from infra.local.probe import endpoint_of, nats_answers, postgres_answers, redis_answers
from infra.local.servers import colocated_gomaxprocs
from shared.settings import CommonSettings
from tests.conftest import PROJECT_ROOT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_starts_private_servers_on_free_ports_and_stops_only_them(tmp_path: Path) -> None:
    urls = {
        "nats_url": f"nats://127.0.0.1:{free_port()}",
        "redis_url": f"redis://127.0.0.1:{free_port()}/0",
        "database_url": f"postgresql://postgres@127.0.0.1:{free_port()}/rtml",
    }
    home = tmp_path / "rtml"
    states = manager.up(**urls, home=home)
    try:
        assert [s.started_by_us for s in states] == [True, True, True]
        assert nats_answers(endpoint_of(urls["nats_url"], 4222))
        assert redis_answers(endpoint_of(urls["redis_url"], 6379))
        assert postgres_answers(endpoint_of(urls["database_url"], 5432))
        for state in states:
            assert state.log_file is not None and Path(state.log_file).exists()
        # nats-server runs Go code on a quarter of the CPUs (it shares them), unless told otherwise
        (nats,) = [s for s in states if s.kind == "nats"]
        environ = Path(f"/proc/{nats.pid}/environ").read_bytes().split(b"\0")
        gomaxprocs = os.environ.get("GOMAXPROCS") or str(colocated_gomaxprocs(os.cpu_count() or 1))
        assert f"GOMAXPROCS={gomaxprocs}".encode() in environ
        again = manager.up(**urls, home=home)  # a second `up` reuses what the first started
        assert [s.pid for s in again] == [s.pid for s in states]
    finally:
        stopped = manager.down(home=home)
    assert {s.kind for s in stopped} == {"nats", "redis", "postgres"}
    assert not nats_answers(endpoint_of(urls["nats_url"], 4222))
    assert not redis_answers(endpoint_of(urls["redis_url"], 6379))


def test_reuses_running_servers(infra: CommonSettings, tmp_path: Path) -> None:
    states = manager.up(
        nats_url=infra.nats_url, redis_url=infra.redis_url, database_url=infra.database_url, home=tmp_path
    )
    assert [(s.started_by_us, s.source) for s in states] == [(False, "already running")] * 3
    assert manager.down(home=tmp_path) == []  # nothing of ours to stop: the running servers are left alone
    assert all(
        answers
        for _, answers in manager.status(
            nats_url=infra.nats_url, redis_url=infra.redis_url, database_url=infra.database_url, home=tmp_path
        )
    )


def test_cli_reports_what_it_used(infra: CommonSettings, tmp_path: Path) -> None:
    env = {
        "RTML_NATS_URL": infra.nats_url,
        "RTML_REDIS_URL": infra.redis_url,
        "RTML_DATABASE_URL": infra.database_url,
        "PATH": "/usr/bin:/bin",
    }
    result = subprocess.run(
        [sys.executable, "-m", "rtml", "infra", "status", "--home", str(tmp_path)],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert [line.split()[1] for line in result.stdout.splitlines()] == ["nats", "redis", "postgres"]
