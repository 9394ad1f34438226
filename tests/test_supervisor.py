"""``rtml up`` runs every service; ``rtml status`` sees them healthy; Ctrl-C leaves nothing behind."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import pytest

from rtml.discovery import runnable_services
from rtml.status import collect_status, render
from shared.settings import CommonSettings
from tests.conftest import PROJECT_ROOT

STARTED = re.compile(r"rtml: started (\S+) \(pid (\d+)\)")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
async def test_up_status_then_ctrl_c(settings: CommonSettings, tmp_path: Path) -> None:
    services = runnable_services()
    assert services, "no service has an entry point"
    env = dict(
        os.environ,
        RTML_NAMESPACE=settings.namespace,
        RTML_NATS_URL=settings.nats_url,
        RTML_REDIS_URL=settings.redis_url,
        RTML_DATABASE_URL=settings.database_url,
        RTML_ADMIN_TOKEN="test-token",
        **{f"RTML_{name.upper()}_HTTP_PORT": "0" for name in services},
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rtml", "up", "--home", str(tmp_path), "--replicas", "inference=2",
        cwd=PROJECT_ROOT, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    expected = len(services) + (1 if "inference" in services else 0)
    children: dict[str, int] = {}
    stderr_lines: list[str] = []

    async def read_stderr() -> None:
        assert process.stderr is not None
        while line := (await process.stderr.readline()).decode():
            stderr_lines.append(line)
            if match := STARTED.search(line):
                children[match.group(1)] = int(match.group(2))

    reader = asyncio.create_task(read_stderr())
    try:
        instances = []
        for _ in range(240):
            instances = await collect_status(settings.nats_url, settings.namespace)
            if len(instances) == expected and all(i.health == "ok" and i.ready == "ok" for i in instances):
                break
            await asyncio.sleep(0.5)
        assert len(instances) == expected, render(instances, settings.namespace) + "".join(stderr_lines[-30:])
        assert sorted({i.name for i in instances}) == sorted(services)
        assert all(i.health == "ok" and i.ready == "ok" for i in instances), render(instances, settings.namespace)
        process.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(process.wait(), timeout=60) == 0
        await reader
        assert len(children) == expected
        for label, pid in children.items():
            assert not alive(pid), f"{label} (pid {pid}) outlived rtml up"
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        for pid in children.values():
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
