"""The compose NATS configuration, run as a real three-node cluster on this machine.

The three servers use infra/nats/nats-server.conf with only what a container
would differ in rewritten (ports, route hosts, store directory); rtml's provisioning
then creates every stream, the routing KV and the model object store with three
replicas, as the services do with RTML_STREAM_REPLICAS=3.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from nats.js.errors import APIError, ServiceUnavailableError

from shared.bus import STREAMS, provision
from shared.subjects import Names
from tests.infra.inventory import INFRA

CONF = INFRA / "nats" / "nats-server.conf"
FORMATION_BOUND_S = 60.0  # a bound on waiting for the cluster, not a speed assertion


def nats_server() -> str | None:
    local = Path(sys.executable).parent / "nats-server"
    return str(local) if local.is_file() else shutil.which("nats-server")


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def node_config(template: str, ports: tuple[int, int, int], routes: dict[str, int], store: Path) -> str:
    """The compose node's configuration on loopback ports (client, monitoring, cluster) and a local store."""
    client, monitor, cluster = ports
    text = re.sub(r"(?m)^port: 4222$", f"host: 127.0.0.1\nport: {client}", template)
    text = re.sub(r"(?m)^http_port: 8222$", f'http: "127.0.0.1:{monitor}"', text)
    text = re.sub(r"(?m)^(\s+)port: 6222$", rf"\g<1>host: 127.0.0.1\n\g<1>port: {cluster}", text)
    text = text.replace("store_dir: /data/jetstream", f"store_dir: {store}")
    for host, port in routes.items():
        text = text.replace(f"nats://{host}:6222", f"nats://127.0.0.1:{port}")
    assert text.count("127.0.0.1") == 3 + len(routes), "the compose configuration changed shape"
    return text


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    binary = nats_server()
    if binary is None:
        pytest.skip("no nats-server binary on this machine")
    template = CONF.read_text()
    nodes = sorted(set(re.findall(r"nats://(nats-\d):6222", template)))
    assert len(nodes) == 3
    ports = free_ports(3 * len(nodes))
    clients, monitors, clusters = ports[0::3], ports[1::3], ports[2::3]
    routes = dict(zip(nodes, clusters, strict=True))
    home = tmp_path_factory.mktemp("nats-cluster")
    processes = []
    try:
        for i, node in enumerate(nodes):
            conf = home / f"{node}.conf"
            node_ports = (clients[i], monitors[i], clusters[i])
            conf.write_text(node_config(template, node_ports, routes, home / node))
            environment = {**os.environ, "NATS_SERVER_NAME": node}
            with (home / f"{node}.log").open("w") as log:
                processes.append(
                    subprocess.Popen([binary, "-c", str(conf)], env=environment, stdout=subprocess.DEVNULL, stderr=log)
                )
        yield [f"nats://127.0.0.1:{port}" for port in clients]
    finally:
        for process in processes:
            process.terminate()  # SIGTERM: a plain shutdown (lame duck mode is SIGUSR2)
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="module")
async def js(cluster: list[str]) -> AsyncIterator[nats.js.JetStreamContext]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + FORMATION_BOUND_S
    while True:
        try:
            nc = await nats.connect(servers=cluster, connect_timeout=1, max_reconnect_attempts=1)
            break
        except Exception:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.2)
    try:
        yield nc.jetstream(timeout=5)
    finally:
        await nc.close()


async def test_rtml_provisions_r3_flows_on_the_compose_cluster(js: nats.js.JetStreamContext) -> None:
    names = Names("t_cluster")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + FORMATION_BOUND_S
    while True:  # until the cluster has elected its JetStream meta leader
        try:
            await provision(js, names, replicas=3)
            break
        except (ServiceUnavailableError, APIError, TimeoutError, nats.errors.TimeoutError):
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.5)
    streams = [names.stream(spec.flow) for spec in STREAMS]
    streams += [f"KV_{names.routing_bucket}", f"OBJ_{names.models_bucket}"]
    for stream in streams:
        info = await js.stream_info(stream)
        assert info.config.num_replicas == 3, stream
        assert info.cluster is not None and info.cluster.name == "rtml", stream
        assert len(info.cluster.replicas or []) == 2, f"{stream}: a leader and two replicas"
    # Provisioning again (another service starting) keeps R3.
    await provision(js, names, replicas=3)
    assert (await js.stream_info(names.stream("events"))).config.num_replicas == 3
