"""Kubernetes manifests: structure of the base and of every rendered overlay."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from shared.settings import CommonSettings
from shared.subjects import Names
from tests.infra.inventory import (
    INFRA,
    K8S,
    OVERLAYS,
    SERVICES,
    base_documents,
    has_entry_point,
    load_documents,
    render_overlay,
    validate_service_settings,
    variables_read,
    yaml_files,
)

AUTOSCALERS = ("ScaledObject", "HorizontalPodAutoscaler")
SAMPLE_SECRETS = {"database-url": "postgresql://rtml:secret@postgres.example:5432/rtml", "admin-token": "t0ken"}


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc.get("kind") == kind}


def service_deployments(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        name: doc
        for name, doc in by_kind(docs, "Deployment").items()
        if doc["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "service"
    }


def config_map(docs: list[dict[str, Any]]) -> dict[str, str]:
    data = by_kind(docs, "ConfigMap")["rtml-config"]["data"]
    assert isinstance(data, dict)
    return data


def container_env(docs: list[dict[str, Any]], deployment: dict[str, Any]) -> dict[str, str]:
    """The environment the container gets: envFrom ConfigMaps, then env (secrets filled with samples)."""
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env: dict[str, str] = {}
    config_maps = by_kind(docs, "ConfigMap")
    for source in container.get("envFrom", []):
        name = source["configMapRef"]["name"]
        matches = [doc for cm_name, doc in config_maps.items() if cm_name == name or cm_name.startswith(name + "-")]
        assert matches, f"envFrom names ConfigMap {name!r}, which is not in the manifests"
        env.update(matches[0]["data"])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            assert ref["key"] in SAMPLE_SECRETS, (
                f"secret key {ref['key']!r} is not one the docs tell operators to create"
            )
            env[item["name"]] = SAMPLE_SECRETS[ref["key"]]
    return env


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def prestop_seconds(container: dict[str, Any]) -> float:
    command = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    return float(command[1]) if command[:1] == ["sleep"] else 0.0


def check_documents(docs: list[dict[str, Any]], where: str) -> list[str]:
    """Every problem found in one set of manifests (the base, or one rendered overlay)."""
    problems: list[str] = []
    deployments = service_deployments(docs)
    if set(deployments) != set(SERVICES):
        problems.append(f"{where}: service Deployments {sorted(deployments)} != {sorted(SERVICES)}")
    config = config_map(docs)
    grace_s = float(config["RTML_SHUTDOWN_GRACE_S"])
    pdbs = by_kind(docs, "PodDisruptionBudget")
    services = by_kind(docs, "Service")
    for name, deployment in deployments.items():
        at = f"{where}: Deployment {name}"
        pod = deployment["spec"]["template"]
        labels = pod["metadata"]["labels"]
        spec = pod["spec"]
        container = spec["containers"][0]
        if not selects(deployment["spec"]["selector"]["matchLabels"], labels):
            problems.append(f"{at}: selector does not match its pod labels")
        if container.get("args", [None])[0] != name:
            problems.append(f"{at}: runs {container.get('args')}, expected [{name!r}] (the image's entry point)")
        ports = {port["name"]: port["containerPort"] for port in container.get("ports", [])}
        if ports.get("http") != SERVICES[name]:
            problems.append(f"{at}: http port {ports.get('http')} != {SERVICES[name]}")
        env = container_env(docs, deployment)
        port_variable = f"RTML_{name.upper()}_HTTP_PORT"
        if env.get(port_variable) != str(SERVICES[name]):
            problems.append(f"{at}: {port_variable}={env.get(port_variable)} does not match its container port")
        for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
            http = container.get(probe, {}).get("httpGet", {})
            if http.get("path") != path or http.get("port") not in ("http", SERVICES[name]):
                problems.append(f"{at}: {probe} must GET {path} on the http port, has {http}")
        resources = container.get("resources", {})
        for kind in ("cpu", "memory"):
            if kind not in resources.get("requests", {}):
                problems.append(f"{at}: no {kind} request")
        if "memory" not in resources.get("limits", {}):
            problems.append(f"{at}: no memory limit")
        termination_s = spec.get("terminationGracePeriodSeconds", 30)
        if termination_s <= grace_s + prestop_seconds(container):
            problems.append(
                f"{at}: terminationGracePeriodSeconds {termination_s} leaves no time for preStop "
                f"{prestop_seconds(container)} s + RTML_SHUTDOWN_GRACE_S {grace_s} s"
            )
        security = spec.get("securityContext", {})
        if security.get("runAsNonRoot") is not True or security.get("runAsUser", 0) == 0:
            problems.append(f"{at}: must run as a non-root user")
        if not any(selects(pdb["spec"]["selector"]["matchLabels"], labels) for pdb in pdbs.values()):
            problems.append(f"{at}: no PodDisruptionBudget selects it")
        if not any(selects(svc["spec"].get("selector", {}), labels) for svc in services.values()):
            problems.append(f"{at}: no Service selects it")
    for name, pdb in pdbs.items():
        spec = pdb["spec"]
        if ("minAvailable" in spec) == ("maxUnavailable" in spec):
            problems.append(f"{where}: PodDisruptionBudget {name} needs exactly one of minAvailable, maxUnavailable")
        target = deployments.get(name)
        if target is not None and target["spec"].get("replicas", 1) == 1 and spec.get("minAvailable") == 1:
            problems.append(f"{where}: PodDisruptionBudget {name} would block every node drain (1 replica)")
    return problems


def check_autoscaling(docs: list[dict[str, Any]], where: str) -> list[str]:
    problems: list[str] = []
    deployments = service_deployments(docs)
    names = Names(config_map(docs)["RTML_NAMESPACE"])
    # (stream flow, consumer purpose) each service reads; test_metrics_exported checks them on a live JetStream.
    flows = {"ingest": ("events", "main"), "features": ("norm", "norm")}
    for name, scaled in by_kind(docs, "ScaledObject").items():
        target = scaled["spec"]["scaleTargetRef"]["name"]
        if target not in deployments:
            problems.append(f"{where}: ScaledObject {name} targets unknown Deployment {target}")
            continue
        for trigger in scaled["spec"]["triggers"]:
            if trigger["type"] != "nats-jetstream":
                continue
            meta = trigger["metadata"]
            flow, purpose = flows[target]
            expected = (names.stream(flow), names.consumer(target, purpose))
            if (meta["stream"], meta["consumer"]) != expected:
                problems.append(f"{where}: ScaledObject {name} watches {meta['stream']}/{meta['consumer']}, "
                                f"the service uses {expected[0]}/{expected[1]}")  # fmt: skip
            if int(meta["lagThreshold"]) <= 0:
                problems.append(f"{where}: ScaledObject {name} lagThreshold must be positive")
        if scaled["spec"]["minReplicaCount"] > scaled["spec"]["maxReplicaCount"]:
            problems.append(f"{where}: ScaledObject {name} min > max")
    for name, hpa in by_kind(docs, "HorizontalPodAutoscaler").items():
        target = hpa["spec"]["scaleTargetRef"]
        if target["kind"] != "Deployment" or target["name"] not in deployments:
            problems.append(f"{where}: HPA {name} targets {target}")
    scaled_targets = [doc["spec"]["scaleTargetRef"]["name"] for doc in docs if doc.get("kind") in AUTOSCALERS]
    for target in scaled_targets:
        if "replicas" in deployments.get(target, {}).get("spec", {}):
            problems.append(f"{where}: Deployment {target} is autoscaled but sets spec.replicas (an apply resets it)")
        if not hpa["spec"].get("metrics"):
            problems.append(f"{where}: HPA {name} has no metrics")
    return problems


def test_the_checks_catch_broken_manifests() -> None:
    docs = copy.deepcopy(base_documents())
    ingest = service_deployments(docs)["ingest"]
    container = ingest["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbe"]["httpGet"]["path"] = "/healthz"
    del container["resources"]["requests"]["memory"]
    ingest["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 10
    docs = [doc for doc in docs if not (doc["kind"] == "PodDisruptionBudget" and doc["metadata"]["name"] == "monitor")]
    scaled = by_kind(docs, "ScaledObject")["features"]
    scaled["spec"]["triggers"][0]["metadata"]["consumer"] = "rtml_features_other"
    service_deployments(docs)["inference"]["spec"]["replicas"] = 3
    problems = "\n".join(check_documents(docs, "broken") + check_autoscaling(docs, "broken"))
    assert "Deployment ingest: readinessProbe must GET /readyz" in problems
    assert "Deployment ingest: no memory request" in problems
    assert "Deployment ingest: terminationGracePeriodSeconds 10" in problems
    assert "Deployment monitor: no PodDisruptionBudget selects it" in problems
    assert "ScaledObject features watches rtml_norm/rtml_features_other" in problems
    assert "Deployment inference is autoscaled but sets spec.replicas" in problems


def test_service_settings_validation_is_not_vacuous() -> None:
    if validate_service_settings("inference", {}) is None:
        pytest.skip("services/inference/settings.py is not written yet")
    with pytest.raises(ValueError, match="RTML_INFERENCE_BACKEND"):
        validate_service_settings("inference", {"RTML_INFERENCE_BACKEND": "abacus"})


@pytest.mark.parametrize("overlay", ["base", "prod", "prod-gpu"])
def test_features_consumer_lets_every_replica_hold_its_batches(overlay: str) -> None:
    # Replicas share one durable consumer; its max_ack_pending bounds the batches in flight across
    # all of them, so it must cover the batches one replica holds (the one finishing, those being
    # stored, the one gathered behind) up to the autoscaler's maximum.
    docs = base_documents() if overlay == "base" else render_overlay(overlay)
    if docs is None:
        pytest.skip("neither kubectl nor kustomize is installed")
    features = validate_service_settings("features", container_env(docs, service_deployments(docs)["features"]))
    if features is None:
        pytest.skip("services/features/settings.py is not written yet")
    batch, held = getattr(features, "batch_size"), getattr(features, "stores_in_flight") + 2  # noqa: B009
    effective = getattr(features, "ack_pending_cap")  # noqa: B009  # 0 configured: one replica's batches
    most = by_kind(docs, "ScaledObject")["features"]["spec"]["maxReplicaCount"]
    wanted = held * batch * most
    assert effective >= wanted, f"{overlay}: max_ack_pending {effective} < {held} x batch {batch} x {most} replicas"


def test_every_yaml_file_parses() -> None:
    files = yaml_files()
    assert len(files) >= 15
    for path in files:
        assert load_documents(path), f"{path} holds no document"


def test_kustomization_resources_exist() -> None:
    kustomizations = sorted(K8S.rglob("kustomization.yaml"))
    assert {path.parent.name for path in kustomizations} == {"base", *OVERLAYS}
    for path in kustomizations:
        spec = yaml.safe_load(path.read_text())
        for resource in spec.get("resources", []):
            assert (path.parent / resource).exists(), f"{path}: resource {resource} does not exist"


def test_base_manifests_are_complete() -> None:
    docs = base_documents()
    assert check_documents(docs, "base") == []
    assert check_autoscaling(docs, "base") == []
    assert {"ingest", "features"} <= set(by_kind(docs, "ScaledObject"))
    assert "inference" in by_kind(docs, "HorizontalPodAutoscaler")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rendered_overlay(overlay: str) -> None:
    docs = render_overlay(overlay)
    if docs is None:
        pytest.skip("neither kubectl nor kustomize is installed")
    assert check_documents(docs, overlay) == []
    assert check_autoscaling(docs, overlay) == []
    namespaces = {doc["metadata"].get("namespace") for doc in docs if doc["kind"] != "Namespace"}
    assert len(namespaces) == 1 and None not in namespaces, f"{overlay}: objects outside one namespace: {namespaces}"


def test_dev_overlay_needs_no_operators() -> None:
    docs = render_overlay("dev")
    if docs is None:
        pytest.skip("neither kubectl nor kustomize is installed")
    kinds = {doc["kind"] for doc in docs}
    assert kinds.isdisjoint({"ScaledObject", "HorizontalPodAutoscaler", "PodMonitor", "PrometheusRule"})
    assert config_map(docs)["RTML_STREAM_REPLICAS"] == "1"  # a single-node NATS cannot hold R3 streams
    assert {"redis", "postgres"} <= set(by_kind(docs, "Service"))


def test_prod_gpu_overlay_runs_tensorrt_inference_on_the_gpu_pool() -> None:
    docs = render_overlay("prod-gpu")
    if docs is None:
        pytest.skip("neither kubectl nor kustomize is installed")
    inference = service_deployments(docs)["inference"]
    spec = inference["spec"]["template"]["spec"]
    container = spec["containers"][0]
    assert "rtml-gpu" in container["image"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert spec["nodeSelector"] == {"rtml.io/pool": "gpu"}
    assert any(toleration["key"] == "nvidia.com/gpu" for toleration in spec["tolerations"])
    pool = load_documents(K8S / "gpu-node-pool" / "karpenter-nodepool.yaml")[0]["spec"]["template"]
    assert pool["metadata"]["labels"]["rtml.io/pool"] == "gpu"
    assert any(taint["key"] == "nvidia.com/gpu" for taint in pool["spec"]["taints"])
    others = [d for n, d in service_deployments(docs).items() if n != "inference"]
    assert all("nvidia.com/gpu" not in str(d) for d in others)


@pytest.mark.parametrize("overlay", ["base", *OVERLAYS])
def test_environment_is_read_by_the_settings(overlay: str) -> None:
    docs = base_documents() if overlay == "base" else render_overlay(overlay)
    if docs is None:
        pytest.skip("neither kubectl nor kustomize is installed")
    for name, deployment in service_deployments(docs).items():
        env = container_env(docs, deployment)
        CommonSettings.from_env(env, service=name, default_http_port=SERVICES[name])  # valid values
        validate_service_settings(name, env)
        unread = set(env) - variables_read(name, env)
        assert not unread, f"{overlay}: {name} sets {sorted(unread)}, which no settings of {name} read"


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_each_deployed_service_has_an_entry_point(service: str) -> None:
    if not has_entry_point(service):
        pytest.skip(f"services/{service}/__main__.py is not written yet")
    assert service in service_deployments(base_documents())


def test_nats_helm_values_give_a_jetstream_cluster_for_r3_streams() -> None:
    values = yaml.safe_load((INFRA / "nats" / "values.yaml").read_text())
    cluster = values["config"]["cluster"]
    assert cluster["enabled"] is True
    assert values["config"]["jetstream"]["enabled"] is True
    assert values["config"]["jetstream"]["fileStore"]["pvc"]["enabled"] is True
    assert values["promExporter"]["enabled"] is True
    replicas = int(config_map(base_documents())["RTML_STREAM_REPLICAS"])
    assert replicas <= cluster["replicas"] and replicas % 2 == 1
    dev = yaml.safe_load((INFRA / "nats" / "values-dev.yaml").read_text())
    assert dev["config"]["cluster"]["enabled"] is False


def test_keda_and_services_point_at_the_helm_release() -> None:
    docs = base_documents()
    url = config_map(docs)["RTML_NATS_URL"]
    assert url.startswith("nats://nats.nats.svc")
    for scaled in by_kind(docs, "ScaledObject").values():
        for trigger in scaled["spec"]["triggers"]:
            assert trigger["metadata"]["natsServerMonitoringEndpoint"].startswith("nats-headless.nats.svc")
