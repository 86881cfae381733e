"""`videogen bench` runs every tiny workload against the real service and writes a complete report."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml
from PIL import Image

from bench.capacity import CostProfile
from bench.report import PLOTS
from bench.workload import WORKLOADS, Workload
from serve.api import pb
from serve.catalog import Task, get_spec
from serve.cli import main
from tests.integration.conftest import WARM_MODELS
from tests.support import png

pytestmark = pytest.mark.integration

# Every tiny twin but the 60 s one runs against the service: it is the 30 s twin's code path at twice the
# length (a minute of CI time); tests/unit/test_bench_report.py validates it with every other workload.
TINY = sorted(p for p in WORKLOADS.glob("*-tiny.yaml") if p.stem != "long-720p-60s-tiny")
STATS = ("min", "p50", "p90", "p95", "p99", "max")


def start_replicas(service, models: set[str]) -> None:
    """One request to each model that may have scaled to zero (not in conftest.WARM_MODELS), all at once:
    the benchmark, like the capacity planner, measures replicas that are up before the load arrives."""
    cold = sorted(models - WARM_MODELS)

    def start(model: str) -> None:
        image = png() if get_spec(model).task is Task.I2V else b""
        params = pb.GenerationParams(model=model, prompt="warm up", num_inference_steps=1, image=image)
        with service.client() as client:
            client.generate(params, timeout=300)

    with ThreadPoolExecutor(max(1, len(cold))) as pool:
        list(pool.map(start, cold))


@pytest.mark.parametrize("path", TINY, ids=lambda p: p.stem)
def test_tiny_workload_report_accounts_for_every_request(service, tmp_path, path):
    workload = Workload.from_file(path)
    assert workload.bound_s <= 120  # the run stops by itself, whatever the service does
    out = tmp_path / "report"
    profile = tmp_path / "profile.yaml"
    args = ["bench", "--target", service.target, "--workload", str(path), "--out", str(out), "--quiet"]
    args += ["--metrics-port", str(service.metrics_port)]
    if workload.api == "generate":
        args += ["--profile-out", str(profile)]

    start_replicas(service, {entry.model for entry in workload.mix})
    assert main(args) == 0

    report = json.loads((out / "report.json").read_text())
    summary, requests = report["summary"], report["requests"]
    measured = [r for r in requests if r["phase"] >= 0]
    # Every request sent is recorded once, with one outcome, in one phase.
    assert sorted(r["id"] for r in requests) == list(range(len(requests)))
    assert summary["warmup_requests"] == len(workload.mix) * workload.warmup_requests
    assert summary["requests"] == len(measured) == summary["ok"] + sum(summary["errors"].values())
    assert [p["level"] for p in summary["phases"]] == workload.load.levels
    assert sum(p["requests"] for p in summary["phases"]) == summary["requests"]
    for phase in summary["phases"]:
        assert 0 < phase["requests"] <= workload.max_requests
        assert phase["requests"] == phase["ok"] + sum(phase["errors"].values())
        for key in ("latency_s", "queue_wait_s", "first_progress_s"):
            values = [phase[key][q] for q in STATS]
            assert values == sorted(values), (key, phase[key])
    assert summary["ok"] == summary["requests"], summary["errors"]  # a healthy service answers all of them
    for r in measured:
        assert 0 <= r["first_progress_s"] <= r["queue_wait_s"] <= r["latency_s"]
        assert r["num_frames"] > 0 and r["video_bytes"] > 0
        if workload.api == "generate":
            assert r["queue_wait_s"] <= r["first_playable_s"] <= r["latency_s"]
            if get_spec(r["model"]).progressive:  # the first section plays long before the whole clip
                assert r["first_playable_s"] < 0.8 * r["latency_s"], r
    # Memory per replica comes from the service's own metrics.
    models = {entry.model for entry in workload.mix}
    assert {m["model"] for m in summary["memory"]} == models
    assert all(m["peak_bytes"] > 0 for m in summary["memory"])
    text = (out / "report.md").read_text()
    assert workload.name in text and "clips/h" in text and "p99" in text
    for name in PLOTS:
        with Image.open(out / name) as image:
            image.verify()
            assert image.format == "PNG" and image.size[0] >= 400
    if workload.api == "generate":
        measured_profile = CostProfile.model_validate(yaml.safe_load(profile.read_text()))
        assert (
            measured_profile.source.startswith("measured") and measured_profile.parallel[0].step_seconds > 0
        )
