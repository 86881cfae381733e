"""aiperf as a load generator: the command lines a workload becomes (aiperf itself runs in the bench)."""

from __future__ import annotations

from pathlib import Path

from bench.aiperf_load import command, t2v_entries
from bench.workload import WORKLOADS, Workload

TASKS = {"hunyuanvideo": "t2v", "cogvideox-5b": "t2v", "cogvideox-5b-i2v": "i2v", "svd-xt": "i2v"}


def option(argv: list[str], name: str) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == name]


def test_only_text_to_video_entries_go_to_aiperf():
    workload = Workload.from_file(WORKLOADS / "production-mix-tiny.yaml")
    assert [entry.model for entry in t2v_entries(workload, TASKS)] == ["hunyuanvideo", "cogvideox-5b"]


def test_an_open_loop_entry_becomes_a_bounded_request_rate_profile_of_the_video_endpoint():
    workload = Workload.from_file(WORKLOADS / "production-mix-tiny.yaml")
    entry = workload.mix[0]
    argv = command(Path("aiperf"), "http://127.0.0.1:8000", workload, entry, 2.0, Path("out"), "tok")
    assert option(argv, "--endpoint-type") == ["video_generation"] and option(argv, "--model") == [
        entry.model
    ]
    assert option(argv, "--request-rate") == ["2.0"] and not option(argv, "--concurrency")
    assert option(argv, "--request-count") == [str(workload.max_requests)]
    assert sorted(option(argv, "--extra-inputs")) == sorted(
        [f"size:{entry.width}x{entry.height}", f"num_frames:{entry.num_frames}", "num_inference_steps:4"]
    )


def test_a_closed_loop_level_is_aiperfs_concurrency():
    workload = Workload.from_file(WORKLOADS / "cogvideox-720x480-49f-tiny.yaml")
    assert workload.load.mode == "closed"
    argv = command(Path("aiperf"), "http://x", workload, workload.mix[0], 2.0, Path("o"), "t")
    assert option(argv, "--concurrency") == ["2"] and not option(argv, "--request-rate")


def test_the_summary_keeps_requests_errors_and_the_video_objects_figures_with_their_units():
    from bench.aiperf_load import summarize

    # The shape of aiperf 0.13's profile_export_aiperf.json (values from bench/results/aiperf-tiny).
    export = {
        "request_count": {"unit": "requests", "avg": 10.0},
        "completed_request_count": {"unit": "requests", "avg": 9.0},
        "request_latency": {"unit": "ms", "avg": 302.6, "p50": 269.2, "p99": 396.4, "p1": 250.6},
        "video_inference_time": {"unit": "ms", "avg": 150.1, "p50": 147.6},
        "video_peak_memory": {"unit": "MB", "avg": 673.3},
        "error_summary": [],
    }
    summary = summarize(export)
    assert (summary["requests"], summary["completed"], summary["errors"]) == (10, 9, 1)
    assert summary["request_latency"] == {"unit": "ms", "avg": 302.6, "p50": 269.2, "p99": 396.4}
    assert summary["inference_time"]["unit"] == "ms" and summary["peak_memory"] == {
        "unit": "MB",
        "avg": 673.3,
    }
