"""``rtml infra up|down|status``: reuse the servers that answer, start the ones that do not.

What it starts lives under ``<home>/<kind>-<port>/`` (data and log), and is
recorded in ``<home>/servers.json`` so ``down`` stops exactly that and nothing else.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from infra.local.probe import endpoint_of
from infra.local.servers import KINDS, ServerKind

STATE_FILE = "servers.json"
START_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class ServerState:
    kind: str
    url: str
    started_by_us: bool
    source: str
    pid: int | None = None
    data_dir: str | None = None
    log_file: str | None = None

    def describe(self) -> str:
        if not self.started_by_us:
            return f"{self.kind:<9} {self.url}  reused: {self.source}"
        return (
            f"{self.kind:<9} {self.url}  started {self.source} pid {self.pid}; "
            f"data {self.data_dir}; log {self.log_file}"
        )


def _urls(nats_url: str, redis_url: str, database_url: str) -> dict[str, str]:
    return {"nats": nats_url, "redis": redis_url, "postgres": database_url}


def _load(home: Path) -> dict[str, dict[str, object]]:
    path = home / STATE_FILE
    if not path.exists():
        return {}
    loaded: dict[str, dict[str, object]] = json.loads(path.read_text())
    return loaded


def _save(home: Path, state: dict[str, dict[str, object]]) -> None:
    home.mkdir(parents=True, exist_ok=True)
    tmp = home / f".{STATE_FILE}.tmp"
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(home / STATE_FILE)


def _key(kind: str, url: str) -> str:
    endpoint = endpoint_of(url, 0)
    return f"{kind}-{endpoint.port}"


def _start(kind: ServerKind, url: str, home: Path) -> ServerState:
    endpoint = endpoint_of(url, kind.default_port)
    if not endpoint.is_local:
        raise RuntimeError(f"{kind.name} at {url} does not answer, and it is not on this machine to start")
    folder = home / f"{kind.name}-{endpoint.port}"
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    log_file = folder / f"{kind.name}.log"
    launch = kind.prepare(endpoint, data, log_file)
    with open(log_file, "ab") as log_handle:
        process = subprocess.Popen(
            launch.argv, stdout=log_handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, user=launch.user, env={**os.environ, **launch.env},
        )  # fmt: skip
    deadline = time.monotonic() + START_TIMEOUT_S
    while not kind.answers(endpoint):
        if process.poll() is not None:
            tail = log_file.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{kind.name} exited with {process.returncode} at start; log {log_file}:\n{tail}")
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"{kind.name} did not answer on {url} within {START_TIMEOUT_S:.0f}s; log {log_file}")
        time.sleep(0.1)
    return ServerState(kind.name, url, True, launch.source, process.pid, str(data), str(log_file))


def up(*, nats_url: str, redis_url: str, database_url: str, home: Path) -> list[ServerState]:
    """Make each server answer at its URL; start those that do not. Returns one state per server."""
    states: list[ServerState] = []
    recorded = _load(home)
    for kind in KINDS:
        url = _urls(nats_url, redis_url, database_url)[kind.name]
        endpoint = endpoint_of(url, kind.default_port)
        key = _key(kind.name, url)
        if kind.answers(endpoint):
            previous = recorded.get(key)
            if previous is not None and previous.get("started_by_us") and _alive(previous.get("pid")):
                states.append(ServerState(**previous))  # type: ignore[arg-type]
            else:
                states.append(ServerState(kind.name, url, False, "already running"))
            continue
        state = _start(kind, url, home)
        recorded[key] = asdict(state)
        _save(home, recorded)
        states.append(state)
    return states


def down(*, home: Path, only: list[ServerState] | None = None) -> list[ServerState]:
    """Stop what ``up`` started (all of it, or just ``only``); servers it reused are left alone."""
    recorded = _load(home)
    keys = [_key(s.kind, s.url) for s in only if s.started_by_us] if only is not None else list(recorded)
    stopped: list[ServerState] = []
    for key in keys:
        entry = recorded.pop(key, None)
        if entry is None:
            continue
        state = ServerState(**entry)  # type: ignore[arg-type]
        if state.pid is not None:
            _terminate(state.pid)
        stopped.append(state)
    _save(home, recorded)
    return stopped


def status(*, nats_url: str, redis_url: str, database_url: str, home: Path) -> list[tuple[ServerState, bool]]:
    """Each server with whether it answers now."""
    recorded = _load(home)
    result: list[tuple[ServerState, bool]] = []
    for kind in KINDS:
        url = _urls(nats_url, redis_url, database_url)[kind.name]
        entry = recorded.get(_key(kind.name, url))
        state = ServerState(**entry) if entry else ServerState(kind.name, url, False, "not started by rtml")  # type: ignore[arg-type]
        result.append((state, kind.answers(endpoint_of(url, kind.default_port))))
    return result


def _alive(pid: object) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _terminate(pid: int, timeout_s: float = 15.0) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            finished, _ = os.waitpid(pid, os.WNOHANG)
            if finished == pid:
                return
        except ChildProcessError:
            pass  # not our child: fall back to probing the pid
        if not _alive(pid):
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
