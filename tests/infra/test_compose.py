"""infra/docker-compose.yml: every reference resolves, every service is real and configured right."""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Any

import pytest

from shared.settings import CommonSettings
from tests.infra.inventory import INFRA, SERVICES, compose, has_entry_point, validate_service_settings, variables_read

_INTERPOLATION = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def interpolate(value: str) -> str:
    """Compose's ``${VAR:-default}`` with nothing set in the environment: the default."""
    return _INTERPOLATION.sub(lambda match: match.group(2) or "", value)


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    assert isinstance(env, dict), "environment must be a map"
    return {key: interpolate(str(value)) for key, value in env.items()}


def services() -> dict[str, dict[str, Any]]:
    found = compose()["services"]
    assert isinstance(found, dict)
    return found


def seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)(ms|s|m)", duration)
    assert match, f"unsupported duration {duration!r}"
    return int(match.group(1)) * {"ms": 0.001, "s": 1, "m": 60}[match.group(2)]


def test_all_five_services_and_their_servers_are_there() -> None:
    names = set(services())
    assert set(SERVICES) <= names
    assert {"nats-1", "nats-2", "nats-3", "redis", "postgres", "prometheus", "grafana"} <= names
    assert services()["inference"]["deploy"]["replicas"] == 2


def test_references_name_existing_services_volumes_and_files() -> None:
    names = set(services())
    volumes = set(compose().get("volumes", {}))
    for name, service in services().items():
        depends = service.get("depends_on", [])
        for dependency in depends if isinstance(depends, list) else list(depends):
            assert dependency in names, f"{name} depends on unknown service {dependency}"
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("."):
                assert (INFRA / source).exists(), f"{name} mounts {source}, which does not exist"
            else:
                assert source in volumes, f"{name} mounts undeclared volume {source}"
        build = service.get("build")
        if build:
            context = INFRA / build["context"]
            assert (context / build["dockerfile"]).is_file()


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_service_runs_its_entry_point_with_settings_it_reads(service: str) -> None:
    spec = services()[service]
    assert spec["command"] == [service], "the image's entry point takes the service name"
    env = environment(spec)
    settings = CommonSettings.from_env(env, service=service, default_http_port=SERVICES[service])
    assert settings.http_port == SERVICES[service]
    assert settings.http_host == "0.0.0.0"
    validate_service_settings(service, env)
    unread = set(env) - variables_read(service, env)
    assert not unread, f"{service} sets {sorted(unread)}, which no settings of {service} read"
    assert f":{SERVICES[service]}/readyz" in " ".join(spec["healthcheck"]["test"])
    assert seconds(spec["stop_grace_period"]) > settings.shutdown_grace_s, "SIGKILL would cut the drain short"
    if not has_entry_point(service):
        pytest.skip(f"services/{service}/__main__.py is not written yet")


def test_nats_is_a_three_node_jetstream_cluster_with_r3_streams() -> None:
    conf = (INFRA / "nats" / "nats-server.conf").read_text()
    routes = set(re.findall(r"nats://([\w-]+):6222", conf))
    nodes = {name for name in services() if re.fullmatch(r"nats-\d", name)}
    assert routes == nodes and len(nodes) == 3
    assert "jetstream" in conf
    for node in nodes:
        assert environment(services()[node])["NATS_SERVER_NAME"] == node
        assert "nats" in services()[node]["networks"]["default"]["aliases"]
    replicas = {environment(services()[name])["RTML_STREAM_REPLICAS"] for name in SERVICES}
    assert replicas == {"3"}


def test_prometheus_scrapes_every_service_and_every_nats_exporter() -> None:
    import yaml

    config = yaml.safe_load((INFRA / "prometheus" / "prometheus.yml").read_text())
    scraped: dict[str, int] = {}
    static: set[str] = set()
    for job in config["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            for name in sd["names"]:
                scraped[name] = sd["port"]
        for group in job.get("static_configs", []):
            static |= {target.split(":")[0] for target in group["targets"]}
    assert scraped == SERVICES
    exporters = {name for name in services() if name.startswith("nats-exporter")}
    assert exporters and exporters <= static
    assert static - {"localhost"} <= set(services())
    for exporter in exporters:
        # -prefix=nats as the NATS Helm chart's exporter has it: one metric name in compose and Kubernetes.
        assert {"-jsz=all", "-prefix=nats"} <= set(services()[exporter]["command"])


def test_compose_config_validates_with_docker_compose() -> None:
    for command in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(command[0]) is None:
            continue
        probe = subprocess.run([*command, "version"], capture_output=True, text=True, timeout=30, check=False)
        if probe.returncode != 0:
            continue
        result = subprocess.run(
            [*command, "-f", str(INFRA / "docker-compose.yml"), "config", "--quiet"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return
    pytest.skip("no docker compose (plugin or docker-compose) on this machine")
