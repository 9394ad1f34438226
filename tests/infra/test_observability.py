"""Prometheus rules and config, the Grafana dashboard and its provisioning."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.infra.inventory import (
    EXTERNAL_METRICS,
    INFRA,
    K8S,
    SERVICES,
    all_rules,
    compose,
    dashboard,
    dashboard_exprs,
    dashboard_panels,
    recorded_names,
    rules,
    service_of,
    used_metric_names,
)
from tests.infra.promql import metric_names

RULES_FILE = INFRA / "prometheus" / "rules" / "rtml.rules.yml"


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    if shutil.which("promtool") is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    return subprocess.run(["promtool", *map(str, args)], capture_output=True, text=True, timeout=60, check=False)


def test_promtool_accepts_the_rules() -> None:
    result = promtool("check", "rules", RULES_FILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_accepts_the_compose_prometheus_config(tmp_path: Path) -> None:
    # rule_files point at the container's path; check a copy that points at the repository's rules.
    config = yaml.safe_load((INFRA / "prometheus" / "prometheus.yml").read_text())
    config["rule_files"] = [str(RULES_FILE)]
    copy = tmp_path / "prometheus.yml"
    copy.write_text(yaml.safe_dump(config))
    result = promtool("check", "config", "--syntax-only", copy)
    assert result.returncode == 0, result.stdout + result.stderr
    mounted = {m.split(":")[1] for m in compose()["services"]["prometheus"]["volumes"] if m.startswith(".")}
    original = yaml.safe_load((INFRA / "prometheus" / "prometheus.yml").read_text())
    assert all(any(rule.startswith(path) for path in mounted) for rule in original["rule_files"])


def test_slo_alerts_cover_the_issue() -> None:
    alerts = {rule["alert"]: rule for rule in all_rules() if "alert" in rule}
    wanted = {
        "predict p99": "rtml_inference_request_latency_seconds_bucket",
        "error rate": "rtml:error_ratio:rate5m",
        "consumer lag": "rtml:consumer_pending:max",
        "freshness": "rtml_features_",
        "drift alerts open": "rtml_monitor_",
        "rollback happened": "rtml_rollout_rollbacks_total",
    }
    expanded = {name: rule["expr"] for name, rule in alerts.items()}
    for record in all_rules():
        if "record" in record:
            expanded = {name: expr.replace(record["record"], record["record"] + " " + record["expr"])
                        for name, expr in expanded.items()}  # fmt: skip
    for what, needle in wanted.items():
        assert any(needle in expr for expr in expanded.values()), f"no alert on {what} ({needle})"
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in {"page", "warn"}, name
        assert rule["annotations"]["summary"], name
        if "for" in rule:
            assert re.fullmatch(r"\d+[smh]", rule["for"]), name


def test_every_metric_read_is_one_a_service_or_a_known_exporter_exports() -> None:
    used = used_metric_names()
    assert used, "the dashboard and rules read no metric at all"
    for name in used:
        assert service_of(name) is not None or name in EXTERNAL_METRICS, (
            f"{name} is neither rtml_<service>_... for one of {sorted(SERVICES)} nor a known exporter's metric"
        )
    # tests/infra/test_metrics_exported.py checks the rtml_* ones against the running services' /metrics.


def test_recording_rules_used_by_the_dashboard_exist() -> None:
    used = set().union(*(metric_names(expr) for expr in dashboard_exprs()))
    recorded = {name for name in used if ":" in name}
    assert recorded <= recorded_names()


def test_the_kubernetes_prometheusrule_matches_the_rules_file() -> None:
    crd = yaml.safe_load((K8S / "base" / "prometheusrule.yaml").read_text())
    assert crd["kind"] == "PrometheusRule"
    assert crd["spec"]["groups"] == rules()["groups"]


def test_dashboard_has_the_panels_the_issue_asks_for() -> None:
    titles = " | ".join(panel["title"].lower() for panel in dashboard_panels())
    for words in ("request rate", "p50 / p99", "batch size", "shed", "drift", "rollout state", "consumer lag"):
        assert words in titles, f"no panel about {words!r}"
    ids = [panel["id"] for panel in dashboard_panels()]
    assert len(ids) == len(set(ids))
    for panel in dashboard_panels():
        if panel["type"] != "row":
            assert panel["targets"] and all(target["expr"].strip() for target in panel["targets"]), panel["title"]


def test_dashboard_panels_do_not_overlap() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard_panels():
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_grafana_provisioning_points_at_the_mounted_dashboards() -> None:
    provider = yaml.safe_load((INFRA / "grafana" / "provisioning" / "dashboards" / "rtml.yml").read_text())
    datasource = yaml.safe_load((INFRA / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    grafana = compose()["services"]["grafana"]
    mounts = dict(m.split(":")[:2] for m in grafana["volumes"] if m.startswith("."))
    assert mounts["./grafana/dashboards"] == provider["providers"][0]["options"]["path"]
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    assert dashboard()["uid"] == "rtml-overview"


def test_the_metric_extraction_sees_what_the_rules_read() -> None:
    # The extraction under the checks above must find names, or those checks pass vacuously.
    names = used_metric_names()
    assert "rtml_inference_request_latency_seconds_bucket" in names
    assert "nats_consumer_num_pending" in names
    assert not any(":" in name for name in names)


def test_scaling_guide_lists_every_metric_infra_reads() -> None:
    guide = (INFRA.parent / "docs" / "scaling.md").read_text()
    suffixes = ("requests_total", "errors_total", "request_latency_seconds", "in_flight", "ready")
    for name in used_metric_names():
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        common = base in {f"rtml_{service_of(base)}_{suffix}" for suffix in suffixes}
        assert common or f"`{base}`" in guide, f"docs/scaling.md does not list {base} among the expected metrics"


def test_scaling_guide_capacity_figures_cite_their_benchmarks() -> None:
    guide = (INFRA.parent / "docs" / "scaling.md").read_text()
    section = guide.split("<!-- capacity-figures:start -->")[1].split("<!-- capacity-figures:end -->")[0]
    assert "PLACEHOLDER" not in section
    for bench in ("bench/ingest.py", "bench/features.py", "bench/inference.py", "bench/monitor.py"):
        assert bench in section, f"the capacity figures do not cite {bench}"
    assert "docs/benchmarks.md" in guide
