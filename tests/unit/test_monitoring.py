"""k8s/components/monitoring: the rules load in promtool and fire as intended, the dashboard queries
only metrics the service exports, and the overlays ship both."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from serve.local_prometheus import promtool, videogen_names
from serve.metrics import SPECS
from tests.k8s_checks import find, overlay, render

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "k8s" / "components" / "monitoring"
RULES = MONITORING / "rules" / "videogen.rules.yaml"
PROMETHEUS_RULE = MONITORING / "prometheusrule.yaml"
DASHBOARD = MONITORING / "grafana" / "videogen.json"
RULE_TESTS = REPO / "tests" / "data" / "prometheus" / "videogen.rules.test.yaml"
EXPORTED = {series for spec in SPECS for series in spec.series}
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$model": ".+"}


def rule_groups() -> list[dict[str, Any]]:
    return yaml.safe_load(RULES.read_text())["groups"]


def recorded_names() -> set[str]:
    return {rule["record"] for group in rule_groups() for rule in group["rules"] if "record" in rule}


def dashboard_exprs() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel.get("targets", [])]


def test_rules_pass_promtool_check_rules() -> None:
    result = promtool("check", "rules", str(RULES))

    assert result.returncode == 0, result.stdout + result.stderr


def test_alerts_fire_on_growing_queues_full_gpus_and_errors_and_stay_quiet_otherwise() -> None:
    result = promtool("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)

    assert result.returncode == 0, result.stdout + result.stderr
    alerts = {rule["alert"] for group in rule_groups() for rule in group["rules"] if "alert" in rule}
    tested = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    assert alerts == {a["alertname"] for t in tested for a in t.get("alert_rule_test", [])}


def test_every_alert_names_a_runbook_section_of_the_k8s_readme() -> None:
    readme = (REPO / "k8s" / "README.md").read_text()
    for group in rule_groups():
        for rule in group["rules"]:
            if "alert" in rule:
                runbook = rule["labels"]["runbook"]
                assert f"### Runbook: {runbook}\n" in readme, (rule["alert"], runbook)
                assert f'runbook "{runbook}"' in rule["annotations"]["description"], rule["alert"]


def test_prometheus_rule_carries_exactly_the_rule_file_groups() -> None:
    rule = yaml.safe_load(PROMETHEUS_RULE.read_text())

    assert (rule["apiVersion"], rule["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "prometheus"  # the PodMonitors' selector label
    assert rule["spec"]["groups"] == rule_groups()


# Alerts on what others export: Prometheus's own scrape status and KubeRay's operator metrics.
EXTERNAL_ALERTS = {
    "VideogenScrapeTargetDown": "up{",
    "VideogenRayServiceNotReady": "kuberay_service_condition_ready",
}


def test_rules_reference_only_exported_metrics_and_their_own_recordings() -> None:
    for group in rule_groups():
        for rule in group["rules"]:
            names = videogen_names(rule["expr"])
            known = EXPORTED | recorded_names()
            if rule.get("alert") in EXTERNAL_ALERTS:
                assert EXTERNAL_ALERTS[rule["alert"]] in rule["expr"] and not names - known
                continue
            assert names and names <= known, (rule.get("record") or rule["alert"], names - known)


# Ray Serve's own metrics the dashboard shows (replicas, autoscaling), as named in the installed Ray.
SERVE_METRICS = (
    "ray_serve_deployment_replica_healthy",
    "ray_serve_autoscaling_target_replicas",
    "ray_serve_autoscaling_desired_replicas",
    "ray_serve_num_ongoing_requests_at_replicas",
)


def test_dashboard_queries_reference_only_exported_metrics() -> None:
    exprs = dashboard_exprs()

    assert exprs
    for expr in exprs:
        names = videogen_names(expr)
        # Raw series only: the dashboard works on a Prometheus without the recording rules.
        assert names <= EXPORTED, (expr, names - EXPORTED)
        assert names or any(metric in expr for metric in SERVE_METRICS), expr


def test_the_serve_metrics_the_dashboard_uses_exist_in_the_installed_ray() -> None:
    import ray.serve

    source = "\n".join(path.read_text() for path in Path(ray.serve.__file__).parent.rglob("*.py"))
    for metric in SERVE_METRICS:
        assert f'"{metric.removeprefix("ray_")}"' in source, metric
    assert any(metric in expr for expr in dashboard_exprs() for metric in SERVE_METRICS)


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    rules = []
    for i, expr in enumerate(dashboard_exprs()):
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, expr
        rules.append({"record": f"dashboard:expr_{i}", "expr": expr})
    path = tmp_path / "dashboard.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))

    result = promtool("check", "rules", str(path))

    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_shows_throughput_latency_queue_depth_and_vram() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    text = "\n".join(dashboard_exprs())
    panel_ids = [p["id"] for p in dashboard["panels"]]

    assert "rate(ray_videogen_frames_generated_total" in text  # frames/s
    assert 'ray_videogen_generations_total{model=~"$model", outcome="succeeded"}' in text  # clips/h
    assert "histogram_quantile(0.95, sum by (model, rpc, le) (rate(ray_videogen_request_latency" in text
    assert "ray_videogen_requests_queued" in text and 'ray_videogen_jobs{model=~"$model", state=~' in text
    # Per model, rank and GPU: every rank of a multi-GPU replica has its own series.
    assert "max by (model, rank, device) (ray_videogen_gpu_memory_peak_bytes" in text
    assert len(panel_ids) == len(set(panel_ids))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert dashboard["uid"] == "videogen-serve" and variables == {"datasource", "model"}


@pytest.mark.parametrize("name", ["cpu-dev", "gpu"], ids=["overlay-cpu-dev", "overlay-gpu"])
def test_overlays_ship_the_dashboard_configmap_and_the_rules(name: str) -> None:
    objects = render(overlay(name).directory(REPO))
    (dashboard,) = find(objects, "ConfigMap", "videogen-grafana-dashboard")
    (rule,) = find(objects, "PrometheusRule", "videogen")

    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["videogen.json"]) == json.loads(DASHBOARD.read_text())
    assert rule["spec"]["groups"] == rule_groups()
