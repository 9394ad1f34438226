"""``rtml up``: run every service as a supervised subprocess.

Each replica is restarted with exponential backoff when it exits on its own; its
output lines are prefixed with its name. SIGINT or SIGTERM stops all of them with
SIGTERM (the services drain and exit 0), then SIGKILL after a grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import BinaryIO

import structlog

log = structlog.get_logger(__name__)

DEFAULT_HTTP_PORTS = {"ingest": 8101, "features": 8102, "inference": 8103, "monitor": 8104, "rollout": 8105}
REPLICA_PORT_STRIDE = 100
HEALTHY_RUN_S = 60.0
MAX_BACKOFF_S = 30.0


@dataclass(frozen=True, slots=True)
class Replica:
    service: str
    index: int

    @property
    def label(self) -> str:
        return self.service if self.index == 0 else f"{self.service}.{self.index}"

    def environment(self, base: Mapping[str, str]) -> dict[str, str]:
        env = dict(base)
        variable = f"RTML_{self.service.upper()}_HTTP_PORT"
        port = int(base.get(variable, DEFAULT_HTTP_PORTS[self.service]))
        env[variable] = str(port + REPLICA_PORT_STRIDE * self.index if port else 0)
        return env


class Supervisor:
    def __init__(
        self,
        replicas: list[Replica],
        env: Mapping[str, str],
        *,
        stop_grace_s: float = 20.0,
        output: BinaryIO | None = None,
    ) -> None:
        self.replicas = replicas
        self.env = env
        self.stop_grace_s = stop_grace_s
        self.output = output if output is not None else sys.stdout.buffer
        self._stopping = asyncio.Event()
        self._processes: dict[str, asyncio.subprocess.Process] = {}
        self._keepers: list[asyncio.Task[None]] = []

    async def run(self) -> int:
        """Run until SIGINT or SIGTERM, then stop every service."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self._stopping.set)
        self.start()
        await self._stopping.wait()
        await self.stop()
        return 0

    def start(self) -> None:
        self._keepers = [asyncio.create_task(self._keep_running(replica)) for replica in self.replicas]

    async def stop(self) -> None:
        print("rtml: stopping services", file=sys.stderr, flush=True)
        self._stopping.set()
        await self._stop_all()
        for keeper in self._keepers:
            keeper.cancel()
        await asyncio.gather(*self._keepers, return_exceptions=True)

    def kill(self, label: str) -> int:
        """SIGKILL one replica (chaos); the supervisor restarts it. Returns the killed pid."""
        process = self._processes[label]
        process.kill()
        return process.pid

    async def _keep_running(self, replica: Replica) -> None:
        backoff = 0.5
        while not self._stopping.is_set():
            started = asyncio.get_running_loop().time()
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", f"services.{replica.service}",
                env=replica.environment(self.env),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches us only; we stop the children in order
            )  # fmt: skip
            self._processes[replica.label] = process
            print(f"rtml: started {replica.label} (pid {process.pid})", file=sys.stderr, flush=True)
            assert process.stdout is not None
            pump = asyncio.create_task(_prefix_lines(replica.label, process.stdout, self.output))
            code = await process.wait()
            await pump
            if self._stopping.is_set():
                return
            ran_for = asyncio.get_running_loop().time() - started
            backoff = 0.5 if ran_for > HEALTHY_RUN_S else min(backoff * 2, MAX_BACKOFF_S)
            print(
                f"rtml: {replica.label} exited with {code}; restarting in {backoff:.1f}s", file=sys.stderr, flush=True
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=backoff)

    async def _stop_all(self) -> None:
        # Reverse start order: the control plane and consumers go before what they depend on.
        running = [p for p in reversed(list(self._processes.values())) if p.returncode is None]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        waits = [asyncio.create_task(p.wait()) for p in running]
        if waits:
            _, late = await asyncio.wait(waits, timeout=self.stop_grace_s)
            for process in running:
                if process.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
            if late:
                await asyncio.gather(*late, return_exceptions=True)


async def _prefix_lines(label: str, stream: asyncio.StreamReader, output: BinaryIO) -> None:
    prefix = f"[{label}] ".encode()
    while line := await stream.readline():
        output.write(prefix + line)
        output.flush()


def plan(services: list[str], replicas: Mapping[str, int]) -> list[Replica]:
    """One ``Replica`` per process to run.

    >>> [r.label for r in plan(["ingest", "inference"], {"inference": 2})]
    ['ingest', 'inference', 'inference.1']
    """
    return [Replica(name, i) for name in services for i in range(replicas.get(name, 1))]


def run(services: list[str], replicas: Mapping[str, int]) -> int:
    if not services:
        print("rtml: no service in this checkout has an entry point yet; nothing to run", file=sys.stderr)
        return 1
    return asyncio.run(Supervisor(plan(services, replicas), os.environ).run())
