"""What infra/ declares, loaded once for the infra tests: compose, Kubernetes, rules, dashboard."""

from __future__ import annotations

import dataclasses
import functools
import importlib
import json
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from shared.settings import CommonSettings
from tests.infra.promql import metric_names

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
K8S = INFRA / "k8s"
OVERLAYS = ("dev", "prod", "prod-gpu")
# Service name -> default HTTP port (the contract in COMMON and the services' __main__).
SERVICES: dict[str, int] = {"ingest": 8101, "features": 8102, "inference": 8103, "monitor": 8104, "rollout": 8105}
# Metrics the dashboard and rules read that no rtml service exports, with who does.
EXTERNAL_METRICS: dict[str, str] = {
    "up": "Prometheus, per scrape target",
    "nats_consumer_num_pending": "prometheus-nats-exporter -jsz=all -prefix=nats (compose, NATS chart promExporter)",
}


def yaml_files() -> list[Path]:
    """Every YAML file infra/ owns (infra/local is the local launcher, not deployment config)."""
    files = [*INFRA.rglob("*.yml"), *INFRA.rglob("*.yaml")]
    return sorted(path for path in files if "local" not in path.relative_to(INFRA).parts)


def load_documents(path: Path) -> list[Any]:
    with path.open() as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc is not None]


@functools.cache
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((INFRA / "docker-compose.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


@functools.cache
def rules() -> dict[str, Any]:
    loaded = yaml.safe_load((INFRA / "prometheus" / "rules" / "rtml.rules.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


@functools.cache
def dashboard() -> dict[str, Any]:
    loaded = json.loads((INFRA / "grafana" / "dashboards" / "rtml.json").read_text())
    assert isinstance(loaded, dict)
    return loaded


def all_rules() -> Iterator[dict[str, Any]]:
    for group in rules()["groups"]:
        yield from group["rules"]


def dashboard_panels() -> Iterator[dict[str, Any]]:
    for panel in dashboard()["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_exprs() -> list[str]:
    return [target["expr"] for panel in dashboard_panels() for target in panel.get("targets", [])]


def rule_exprs() -> list[str]:
    return [rule["expr"] for rule in all_rules()]


def recorded_names() -> set[str]:
    return {rule["record"] for rule in all_rules() if "record" in rule}


def used_metric_names() -> set[str]:
    """Raw metric names (not recording rules) the dashboard, the rules, the HPA and the adapter read."""
    names: set[str] = set()
    for expr in [*dashboard_exprs(), *rule_exprs()]:
        names |= metric_names(expr)
    adapter = yaml.safe_load((K8S / "prometheus-adapter" / "values.yaml").read_text())
    for rule in adapter["rules"]["custom"]:
        names |= metric_names(rule["seriesQuery"])
    return names - recorded_names()


def service_of(metric: str) -> str | None:
    """``rtml_<service>_...`` -> service, for the five services."""
    match = re.match(r"^rtml_([a-z]+)_", metric)
    return match.group(1) if match and match.group(1) in SERVICES else None


def service_sources(service: str) -> list[Path]:
    return sorted((ROOT / "services" / service).rglob("*.py"))


def has_entry_point(service: str) -> bool:
    return (ROOT / "services" / service / "__main__.py").is_file()


class RecordingEnv(Mapping[str, str]):
    """A read-only environment that remembers which variables were looked up."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = dict(values)
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        return self._values[key]

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.read.add(key)
        return key in self._values

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return self._values.get(key, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def variables_read(service: str, env: Mapping[str, str]) -> set[str]:
    """Variables the settings read for ``service``: those CommonSettings looks up, and every
    ``RTML_*`` name the service's own code spells (its settings dataclass reads them)."""
    recorder = RecordingEnv(env)
    CommonSettings.from_env(recorder, service=service, default_http_port=SERVICES[service])
    spelled: set[str] = set()
    for path in service_sources(service):
        spelled |= set(re.findall(r"\bRTML_[A-Z0-9_]+\b", path.read_text()))
    return recorder.read | spelled


def validate_service_settings(service: str, env: Mapping[str, str]) -> object | None:
    """Build the service's own settings (``services/<name>/settings.py``) from ``env``; None if it has none.

    Raises the service's ``SettingsError`` when a value the manifests set is invalid.
    """
    try:
        module = importlib.import_module(f"services.{service}.settings")
    except ModuleNotFoundError:
        return None
    for value in vars(module).values():
        if (
            isinstance(value, type)
            and dataclasses.is_dataclass(value)
            and value.__module__ == module.__name__
            and "common" in {field.name for field in dataclasses.fields(value)}
            and hasattr(value, "from_env")
        ):
            built: object = value.from_env(env)
            return built
    return None


def render_overlay(name: str) -> list[dict[str, Any]] | None:
    """The overlay rendered by kustomize (kubectl's built-in one, or the kustomize binary); None if neither."""
    for command in (["kubectl", "kustomize"], ["kustomize", "build"]):
        if shutil.which(command[0]) is None:
            continue
        result = subprocess.run(
            [*command, str(K8S / "overlays" / name)], capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0, f"{' '.join(command)} {name} failed:\n{result.stderr}"
        return [doc for doc in yaml.safe_load_all(result.stdout) if doc is not None]
    return None


def base_documents() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted((K8S / "base").glob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs.extend(load_documents(path))
    return docs
