"""Metrics end to end: the service's metrics, exported by Ray, scraped and queried by a real Prometheus.

The counters are cumulative over the whole test session (other modules generate too), so the
expectations are increases over a baseline read once the series have stopped moving.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from serve.api import pb
from serve.local_prometheus import (
    CAMEL_CASE_PROBLEM,
    PrometheusServer,
    check_metrics,
    metric_families,
    non_loopback,
    scrape,
    snake_case_ray_labels,
)
from serve.metrics import GPU_MEMORY, QUOTA_REFUSALS, SERVE_LABELS, SPECS, Kind

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "k8s" / "components" / "monitoring" / "rules" / "videogen.rules.yaml"
MODEL = "cogvideox-2b"  # fast on tiny weights, runs in one process (no rank actors)
STEPS = 3
GENERATES = 3
# Prometheus scrapes every SCRAPE_S with the same timeout (it allows no longer): by this module, Ray's
# exposition holds every series of the session's earlier apps (megabytes), and a scrape of it on a busy
# 2-core machine can take more than a second, so a 1-second interval would lose every scrape.
SCRAPE_S = 4
SETTLE_S = 3.0 * SCRAPE_S  # Ray pushes metrics every second here (conftest); unchanged over 3 scrapes
TIMEOUT_S = 90.0

M = f'model="{MODEL}"'
LATENCY = "ray_videogen_request_latency_seconds"
EXPRS = {
    "frames": f"sum(ray_videogen_frames_generated_total{{{M}}})",
    "video_seconds": f"sum(ray_videogen_video_seconds_generated_total{{{M}}})",
    "generate_ok": f'sum(ray_videogen_requests_total{{{M}, rpc="Generate", code="OK"}})',
    "submit_ok": f'sum(ray_videogen_requests_total{{{M}, rpc="SubmitJob", code="OK"}})',
    "generate_latency_count": f'sum({LATENCY}_count{{{M}, rpc="Generate"}})',
    "generate_latency_inf": f'sum({LATENCY}_bucket{{{M}, rpc="Generate", le="+Inf"}})',
    "generate_latency_sum": f'sum({LATENCY}_sum{{{M}, rpc="Generate"}})',
    "job_latency_count": f'sum({LATENCY}_count{{{M}, rpc="SubmitJob"}})',
    "steps": f"sum(ray_videogen_denoising_step_seconds_count{{{M}}})",
    # CogVideoX runs one (batched CFG) forward a step; the tiny deployment does not cache steps.
    "forwards": f'sum(ray_videogen_transformer_forwards_total{{{M}, outcome="computed"}})',
    "steps_sum": f"sum(ray_videogen_denoising_step_seconds_sum{{{M}}})",
    "queue_wait_count": f"sum(ray_videogen_queue_wait_seconds_count{{{M}}})",
    "succeeded": f'sum(ray_videogen_generations_total{{{M}, outcome="succeeded"}})',
    "jobs_succeeded": 'sum(ray_videogen_jobs{state="succeeded"})',
}
# Counters that must rise by exactly the expected amount; the sums are checked against bounds.
EXACT = [name for name in EXPRS if not name.endswith("_sum")]


@dataclass
class Activity:
    """What the test traffic did, as the client saw it, and the series before and after it."""

    frames: int
    video_seconds: float
    denoising_steps: int
    generate_seconds: float  # wall time of the Generate calls, client side
    before: dict[str, float]
    after: dict[str, float]

    def increase(self, name: str) -> float:
        return self.after[name] - self.before[name]


def read(prometheus: PrometheusServer) -> dict[str, float]:
    """Every EXPRS value now; a series not yet exported reads 0."""
    return {name: prometheus.value(f"{expr} or vector(0)") or 0.0 for name, expr in EXPRS.items()}


def settled(prometheus: PrometheusServer) -> dict[str, float]:
    """EXPRS once unchanged for SETTLE_S: earlier tests' increments have all been exported."""
    deadline = time.monotonic() + TIMEOUT_S
    values, since = read(prometheus), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = read(prometheus)
        if now != values:
            values, since = now, time.monotonic()
        elif time.monotonic() - since >= SETTLE_S:
            return values
    raise TimeoutError(f"metrics still changing after {TIMEOUT_S} s: {values}")


def params(**fields) -> pb.GenerationParams:
    return pb.GenerationParams(
        model=MODEL, prompt="a red fox in the snow", num_inference_steps=STEPS, **fields
    )


@pytest.fixture(scope="module")
def prometheus(service, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    server = PrometheusServer(
        [f"127.0.0.1:{service.metrics_port}"],
        tmp_path_factory.mktemp("prometheus"),
        rule_files=[RULES],
        interval=f"{SCRAPE_S}s",
    )
    with server:
        # The replica's memory gauge is set when it loads: once stored, scraping works end to end.
        value = server.wait_for(
            f"sum(ray_videogen_resident_memory_bytes{{{M}}})",
            lambda v: v is not None,
            TIMEOUT_S,
        )
        assert value is not None, f"no videogen series in Prometheus after {TIMEOUT_S} s:\n{server.log()}"
        yield server


@pytest.fixture(scope="module")
def activity(service, prometheus: PrometheusServer) -> Activity:
    """GENERATES Generate calls and one job on MODEL, then the series once they show all of it."""
    with service.client() as client:
        # Creates the Generate series first, so that rate() over them sees the test's increase.
        client.generate(params(seed=1000), timeout=120)
    before = settled(prometheus)
    frames, video_seconds, steps = 0, 0.0, 0
    with service.client() as client:
        began = time.monotonic()
        for seed in range(GENERATES):
            progress: list[pb.Progress] = []
            video = client.generate(params(seed=seed), on_progress=progress.append, timeout=120)
            assert progress[-1].stage == pb.STAGE_DONE
            steps += video.summary.num_inference_steps  # each step is timed, even if its event was coalesced
            frames += video.summary.num_frames
            video_seconds += video.summary.num_frames / video.summary.fps
        generate_seconds = time.monotonic() - began
        job = client.wait(client.submit(params(seed=99)).job_id, timeout=120)
        assert job.state == pb.JOB_STATE_SUCCEEDED, job.error
        frames += job.summary.num_frames
        video_seconds += job.summary.num_frames / job.summary.fps
        steps += job.summary.num_inference_steps
    expected = {
        "frames": frames,
        "generate_ok": GENERATES,
        "submit_ok": 1,
        "generate_latency_count": GENERATES,
        "generate_latency_inf": GENERATES,
        "job_latency_count": 1,
        "steps": steps,
        "forwards": steps,
        "queue_wait_count": GENERATES + 1,
        "succeeded": GENERATES + 1,
        "jobs_succeeded": 1,
    }
    deadline = time.monotonic() + TIMEOUT_S
    after = read(prometheus)
    while time.monotonic() < deadline and any(after[n] < before[n] + v for n, v in expected.items()):
        time.sleep(0.5)
        after = read(prometheus)
    time.sleep(SETTLE_S)  # anything late would show up now as an overshoot
    after = read(prometheus)
    return Activity(frames, video_seconds, steps, generate_seconds, before, after)


def test_counters_rise_by_exactly_what_the_requests_did(activity: Activity) -> None:
    increases = {name: activity.increase(name) for name in EXACT}

    assert activity.frames == 4 * 9 and activity.denoising_steps == 4 * STEPS  # tiny cogvideox: 9 frames
    assert increases == {
        "frames": activity.frames,
        "video_seconds": pytest.approx(activity.video_seconds),
        "generate_ok": GENERATES,
        "submit_ok": 1,
        "generate_latency_count": GENERATES,
        "generate_latency_inf": GENERATES,
        "job_latency_count": 1,
        "steps": activity.denoising_steps,
        "forwards": activity.denoising_steps,
        "queue_wait_count": GENERATES + 1,
        "succeeded": GENERATES + 1,
        "jobs_succeeded": 1,
    }


def test_histogram_sums_are_seconds_within_what_the_client_measured(activity: Activity) -> None:
    latency = activity.increase("generate_latency_sum")
    step_time = activity.increase("steps_sum")

    # The server's end-to-end time is the client's give or take the last message's trip; a ms/s mix-up
    # would be 1000x off.
    assert activity.generate_seconds / 2 < latency < activity.generate_seconds + 0.5 * GENERATES
    assert 0 < step_time < latency + 60


def test_gauges_show_memory_per_replica_and_nothing_left_in_flight(
    service, prometheus: PrometheusServer, activity: Activity
) -> None:
    resident = prometheus.query(f'ray_videogen_resident_memory_bytes{{{M}, rank="0", device="cpu"}}')
    peak = prometheus.query(f'ray_videogen_last_job_peak_memory_bytes{{{M}, device="cpu"}}')

    assert len(resident) == 1  # one replica
    labels = resident[0]["metric"]
    assert float(resident[0]["value"][1]) > 100e6  # a process holding torch and a pipeline
    # Per replica: ray.serve.metrics labels every series of a replica with its deployment and replica id.
    assert labels["deployment"] == service.config.model(MODEL).deployment_name and labels["replica"]
    assert len(peak) == 1 and float(peak[0]["value"][1]) > 100e6
    assert prometheus.value(f"sum(ray_videogen_requests_in_flight{{{M}}})") == 0
    assert prometheus.value(f'sum(ray_videogen_jobs{{{M}, state=~"queued|running"}})') == 0
    assert prometheus.value(f"sum(ray_videogen_requests_queued{{{M}}})") == 0


def test_recording_rules_evaluate_on_the_scraped_series(
    prometheus: PrometheusServer, activity: Activity
) -> None:
    rate = prometheus.wait_for(f"model:videogen_frames_generated:rate5m{{{M}}}", lambda v: bool(v), 30)
    p95 = prometheus.wait_for(
        f'model_rpc:videogen_request_latency_seconds:quantile_rate5m{{{M}, rpc="Generate", quantile="0.95"}}',
        lambda v: v is not None and v == v,  # NaN while no bucket has grown in the window
        30,
    )

    assert rate is not None and rate > 0
    assert p95 is not None and 0 < p95 <= 60


def exported_here() -> tuple[list, list]:
    """(the metrics this app must export on this machine, those it may): no GPU series without a GPU;
    quota refusals only once some caller was refused for its quota, which another test's app in the
    same cluster may have done (tests/integration/test_auth.py)."""
    import torch

    gpu = list(GPU_MEMORY.values())
    required = [
        spec
        for spec in SPECS
        if spec is not QUOTA_REFUSALS and (spec not in gpu or torch.cuda.is_available())
    ]
    return required, [*required, QUOTA_REFUSALS]


def test_every_metric_is_stored_with_its_type_and_labels(
    prometheus: PrometheusServer, activity: Activity
) -> None:
    stored = {n for n in prometheus.api("label/__name__/values") if n.startswith("ray_videogen_")}
    metadata = prometheus.api("metadata")

    required, allowed = exported_here()
    assert (
        {s for spec in required for s in spec.series}
        <= stored
        <= {s for spec in allowed for s in spec.series}
    )
    for spec in (spec for spec in allowed if spec.exported in stored or spec.series[0] in stored):
        # Prometheus scrapes OpenMetrics, whose counter families drop the _total of their samples.
        family = metadata.get(spec.exported) or metadata[spec.exported.removesuffix("_total")]
        assert [m["type"] for m in family] == [spec.kind.value], spec.exported
        expected = set(spec.labels) | (set(SERVE_LABELS) if spec.serve_labels else set())
        if spec.kind is Kind.HISTOGRAM:
            expected.add("le")
        # Label names over all series: Prometheus drops empty labels (ListModels counts model="").
        labels = set().union(*prometheus.api("series", {"match[]": spec.series[0]}))
        assert expected <= labels, spec.exported


def test_promtool_check_metrics_passes_on_a_raw_scrape_of_ray(service, activity: Activity) -> None:
    exposition = metric_families(scrape(f"http://127.0.0.1:{service.metrics_port}/metrics"), "ray_videogen_")
    families = {line.split()[2] for line in exposition.splitlines() if line.startswith("# TYPE ")}

    required, allowed = exported_here()
    assert {spec.exported for spec in required} <= families <= {spec.exported for spec in allowed}
    # Ray adds CamelCase labels (Component, NodeAddress, SessionName, Version, WorkerId) to every
    # series it exports, its own included; promtool's only complaint about ours is those names.
    assert {p.split(" ", 1)[1] for p in check_metrics(exposition)} <= {CAMEL_CASE_PROBLEM}
    assert check_metrics(snake_case_ray_labels(exposition)) == []


def test_prometheus_only_talks_to_loopback(prometheus: PrometheusServer, activity: Activity) -> None:
    targets = prometheus.api("targets")["activeTargets"]

    assert [t["health"] for t in targets] == ["up"]
    assert all(t["scrapeUrl"].startswith("http://127.0.0.1:") for t in targets)
    assert prometheus.api("alertmanagers")["activeAlertmanagers"] == []
    assert non_loopback(prometheus.remote_addresses()) == []
