"""Workload specs, metric parsing and the report of the load generator, without a service."""

from __future__ import annotations

import pytest
from PIL import Image
from pydantic import ValidationError

from bench.loadgen import FRAMES, MEMORY, _Progress, parse_metrics
from bench.report import PLOTS, markdown, plot, summarize_run
from bench.workload import WORKLOADS, LoadSpec, Workload, conditioning_image
from serve.api import pb
from serve.catalog import Task, get_spec
from serve.request import RequestFields, build_request

SHIPPED = sorted(WORKLOADS.glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_workload_is_valid_for_its_models_limits(path):
    workload = Workload.from_file(path)
    tiny = path.stem.endswith("-tiny")
    for entry in workload.mix:
        spec = get_spec(entry.model)
        fields = entry.model_dump(include={"width", "height", "num_frames", "fps", "num_inference_steps"})
        image = conditioning_image(entry.width or 64, entry.height or 64) if spec.task is Task.I2V else b""
        build_request(
            spec, spec.limits_for(tiny), RequestFields(model=entry.model, prompt="p", image=image, **fields)
        )
    assert workload.bound_s < (300 if tiny else 86400)


def test_every_workload_has_a_tiny_twin():
    names = {p.stem for p in SHIPPED}
    assert {"hunyuan-720p-129f", "cogvideox-720x480-49f", "production-mix"} <= names
    assert all(f"{name}-tiny" in names for name in names if not name.endswith("-tiny"))


def test_hunyuan_workload_is_the_720p_129_frame_operating_point():
    (entry,) = Workload.from_file(WORKLOADS / "hunyuan-720p-129f.yaml").mix
    assert (entry.width, entry.height, entry.num_frames, entry.num_inference_steps) == (1280, 720, 129, 50)


def test_production_mix_has_text_and_image_to_video():
    tasks = {get_spec(e.model).task for e in Workload.from_file(WORKLOADS / "production-mix.yaml").mix}
    assert tasks == {Task.T2V, Task.I2V}


@pytest.mark.parametrize(
    "load", [{}, {"concurrency": [1], "arrival_rate_per_s": [1.0]}, {"concurrency": [0]}]
)
def test_load_needs_exactly_one_mode_with_positive_levels(load):
    with pytest.raises(ValidationError):
        LoadSpec.model_validate(load)


def test_conditioning_image_is_a_png_of_the_asked_size():
    import io

    image = Image.open(io.BytesIO(conditioning_image(48, 32)))
    assert image.format == "PNG" and image.size == (48, 32)


def test_parse_metrics_keeps_the_sampled_series_and_replica_labels():
    text = "\n".join(
        [
            "# HELP ray_videogen_frames_generated_total Video frames generated.",
            "# TYPE ray_videogen_frames_generated_total counter",
            'ray_videogen_frames_generated_total{Component="core_worker",WorkerId="ab12",model="svd",'
            'NodeAddress="10.0.0.1",otel_scope_name="x"} 27.0',
            'ray_videogen_resident_memory_bytes{WorkerId="ab12",device="cpu",rank="0",model="svd"} 6.1e+08',
            'ray_videogen_gpu_memory_peak_bytes{device="GPU-5f1c",rank="1",model="hunyuanvideo"} 2.0e+10',
            'ray_videogen_requests_total{model="svd"} 3.0',
            "ray_node_cpu_count 2",
        ]
    )
    rows = parse_metrics(text)
    resident, peak = "ray_videogen_resident_memory_bytes", "ray_videogen_gpu_memory_peak_bytes"
    assert [r["name"] for r in rows] == [FRAMES, resident, peak]
    assert (MEMORY[resident], MEMORY[peak]) == ("resident", "peak")
    assert rows[0]["labels"] == {"model": "svd", "NodeAddress": "10.0.0.1", "WorkerId": "ab12"}
    assert rows[1]["value"] == 6.1e8
    assert rows[2]["labels"] == {"model": "hunyuanvideo", "rank": "1", "device": "GPU-5f1c"}


def test_stage_times_come_from_the_replicas_progress_clock():
    progress = _Progress()
    progress.seen(0.0, pb.STAGE_QUEUED, 0, 0.0)
    progress.seen(0.2, pb.STAGE_PREPARING, 0, 0.0)
    for step in range(1, 5):
        progress.seen(0.3 + step, pb.STAGE_DENOISING, step, 0.5 + step * 0.25)
    progress.seen(2.0, pb.STAGE_DONE, 4, 2.0)
    assert (progress.first_at, progress.running_at) == (0.0, 0.2)
    assert progress.stage_times() == pytest.approx((0.25, 0.5, 0.5))


def _sample(i: int, phase: int, code: str = "OK", latency: float = 1.0) -> dict:
    return {
        "id": i, "phase": phase, "level": float(max(phase, 0) + 1), "entry": "a", "model": "svd",
        "api": "generate", "scheduled_s": float(i), "sent_s": float(i), "latency_s": latency,
        "queue_wait_s": 0.1, "first_progress_s": 0.01, "code": code, "error": "", "num_frames": 4,
        "num_inference_steps": 2, "width": 64, "height": 64, "video_bytes": 10, "server_queue_s": 0.1,
        "server_inference_s": 0.5, "server_encode_s": 0.1, "step_s": 0.2, "prepare_s": 0.1, "decode_s": 0.1,
    }  # fmt: skip


def _run() -> dict:
    requests = [_sample(0, -1)]
    requests += [_sample(i, 0, latency=0.5 * i) for i in range(1, 5)]
    requests += [_sample(5, 1, "RESOURCE_EXHAUSTED"), _sample(6, 1, "DEADLINE_EXCEEDED"), _sample(7, 1)]
    workload = Workload.model_validate(
        {
            "name": "unit",
            "mix": [{"model": "svd"}],
            "load": {"concurrency": [1, 2]},
            "max_requests": 4,
            "max_duration_s": 10,
            "request_timeout_s": 5,
        }
    )
    return {
        "workload": workload.model_dump(mode="json"),
        "target": "127.0.0.1:1",
        "metrics_url": None,
        "started_at": "now",
        "duration_s": 9.0,
        "machine": {"device": "cpu", "cpu_count": 2},
        "phases": [
            {"index": 0, "mode": "closed", "level": 1.0, "started_s": 1.0, "ended_s": 5.0},
            {"index": 1, "mode": "closed", "level": 2.0, "started_s": 5.0, "ended_s": 9.0},
        ],
        "requests": requests,
        "metrics": [],
        "metrics_scrape_errors": 0,
        "metrics_last_error": "",
    }


def test_summary_accounts_for_every_request_once():
    summary = summarize_run(_run())
    assert (summary["requests"], summary["ok"], summary["warmup_requests"]) == (7, 5, 1)
    assert summary["errors"] == {"DEADLINE_EXCEEDED": 1, "RESOURCE_EXHAUSTED": 1}
    first, second = summary["phases"]
    assert (first["requests"], first["ok"], second["requests"], second["ok"]) == (4, 4, 3, 1)
    latency = first["latency_s"]
    assert latency["min"] <= latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"] == 2.0
    # 4 clips between the first send (t=1) and the last end (t=4 + 2): 4 clips in 5 s
    assert first["clips_per_hour"] == pytest.approx(4 / 5 * 3600)


def test_markdown_and_plots_render_without_metrics(tmp_path):
    run = _run()
    summary = summarize_run(run)
    text = markdown(run, summary)
    assert "RESOURCE_EXHAUSTED 1" in text and "No memory samples" in text
    for path in plot(run, summary, tmp_path):
        with Image.open(path) as image:
            image.verify()
            assert image.format == "PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(PLOTS)
