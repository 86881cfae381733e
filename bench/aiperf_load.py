"""NVIDIA aiperf as an alternative load generator: its `video_generation` endpoint against the HTTP API.

aiperf (PyPI `aiperf`, the tool SGLang Diffusion's video API is benchmarked with) drives POST /v1/videos,
polls GET /v1/videos/{id} and downloads the content, and reads the video object's `inference_time_s`
and `peak_memory_mb`. It runs from a venv of its own (`scripts/aiperf.sh`): its pins (prometheus-client
0.23, pillow 12.3, ...) cannot share one with the service. Each text-to-video entry of a workload runs
at each load level (closed loop: --concurrency; open loop: --request-rate) with the workload's request
bound; i2v entries are skipped, since aiperf's endpoint sends a prompt only.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from bench.workload import MixEntry, Workload

REPO = Path(__file__).resolve().parent.parent
AIPERF = Path(os.environ.get("VIDEOGEN_AIPERF", REPO / "var" / "aiperf-venv" / "bin" / "aiperf"))
INSTALLER = REPO / "scripts" / "aiperf.sh"
EXPORT = "profile_export_aiperf.json"
STATISTICS = ("avg", "p50", "p90", "p99", "min", "max")
# aiperf counts the prompts' tokens with a Hugging Face tokenizer; offline it reads only a hub cache, so a
# local tokenizer directory is laid out as one (`tokenizer_cache`). Its "builtin" one downloads tiktoken data.
TOKENIZER_REPO = "videogen/tiny-t5-tokenizer"
SNAPSHOT = "0" * 40
# aiperf's summary metrics the report keeps -> its names for them (each with aiperf's unit).
METRICS = {
    "request_latency": "request_latency",
    "video_inference_time": "inference_time",
    "video_peak_memory": "peak_memory",
    "request_throughput": "request_throughput",
}


def ensure_installed() -> Path:
    """The aiperf executable, installed into its own venv by scripts/aiperf.sh when missing."""
    if not AIPERF.is_file():
        subprocess.run(["bash", str(INSTALLER)], check=True)
    return AIPERF


def t2v_entries(workload: Workload, tasks: dict[str, str]) -> list[MixEntry]:
    """The entries aiperf can send: models whose task takes a prompt alone (t2v, ti2v)."""
    return [entry for entry in workload.mix if tasks.get(entry.model) in ("t2v", "ti2v") and not entry.image]


def command(
    aiperf: Path, url: str, workload: Workload, entry: MixEntry, level: float, artifacts: Path, tokenizer: str
) -> list[str]:
    """The `aiperf profile` command line of one entry at one load level."""
    args = [
        str(aiperf),
        "profile",
        "--model",
        entry.model,
        "--url",
        url,
        "--endpoint-type",
        "video_generation",
        "--tokenizer",
        tokenizer,
        "--request-count",
        str(workload.max_requests),
        "--request-timeout-seconds",
        str(workload.request_timeout_s),
        "--benchmark-duration",
        str(workload.max_duration_s + workload.request_timeout_s),
        "--random-seed",
        str(workload.seed),
        "--download-video-content",
        "--output-artifact-dir",
        str(artifacts),
        "--ui-type",
        "none",
        "--no-server-metrics",  # the service's metrics are on Ray's port, not under the HTTP API's /metrics
    ]
    if workload.load.mode == "closed":
        args += ["--concurrency", str(int(level))]
    else:
        args += ["--request-rate", str(level)]
    extra: dict[str, Any] = {
        "size": f"{entry.width}x{entry.height}" if entry.width and entry.height else None,
        "num_frames": entry.num_frames,
        "num_inference_steps": entry.num_inference_steps,
        "guidance_scale": entry.guidance_scale,
        "negative_prompt": entry.negative_prompt or None,
    }
    for key, value in extra.items():
        if value is not None:
            args += ["--extra-inputs", f"{key}:{value}"]
    return args


def summarize(export: dict[str, Any]) -> dict[str, Any]:
    """What the report shows of aiperf's summary export: requests, errors, and latency, inference time and
    peak memory (read from the video objects) with their units and percentiles."""
    requests = int(export.get("request_count", {}).get("avg", 0))
    completed = int(export.get("completed_request_count", {}).get("avg", 0))
    summary: dict[str, Any] = {
        "requests": requests,
        "completed": completed,
        "errors": requests - completed + sum(int(e.get("count", 1)) for e in export.get("error_summary", [])),
    }
    for tag, name in METRICS.items():
        metric = export.get(tag)
        if isinstance(metric, dict):
            summary[name] = {key: metric[key] for key in ("unit", *STATISTICS) if key in metric}
    return summary


def tokenizer_cache(tokenizer_dir: Path, cache: Path) -> str:
    """Lay `tokenizer_dir` out as a Hugging Face hub cache under `cache`; returns the repo name to ask for."""
    repo = cache / f"models--{TOKENIZER_REPO.replace('/', '--')}"
    snapshot = repo / "snapshots" / SNAPSHOT
    shutil.rmtree(repo, ignore_errors=True)
    shutil.copytree(tokenizer_dir, snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(SNAPSHOT)
    return TOKENIZER_REPO


def run_aiperf(
    url: str, workload: Workload, out: Path, tasks: dict[str, str], tokenizer_dir: Path
) -> list[dict[str, Any]]:
    """Run every t2v entry of `workload` at every level through aiperf; write and return the summaries."""
    aiperf = ensure_installed()
    cache = out / "hf-cache"
    tokenizer = tokenizer_cache(tokenizer_dir, cache)
    results = []
    for entry in t2v_entries(workload, tasks):
        for level in workload.load.levels:
            artifacts = out / f"{entry.label}-{workload.load.mode}-{level:g}"
            argv = command(aiperf, url, workload, entry, level, artifacts, tokenizer)
            # aiperf runs in its own venv: none of this process's Python path (nor the tests' guard) applies.
            env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
            env |= {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}
            completed = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
            (artifacts / "aiperf.log").parent.mkdir(parents=True, exist_ok=True)
            (artifacts / "aiperf.log").write_text(completed.stdout + completed.stderr)
            if completed.returncode != 0:
                raise RuntimeError(f"aiperf exited {completed.returncode}: {completed.stderr[-2000:]}")
            export = json.loads(next(artifacts.rglob(EXPORT)).read_text())
            results.append(
                {"entry": entry.label, "model": entry.model, "mode": workload.load.mode, "level": level}
                | summarize(export)
            )
    shutil.rmtree(cache, ignore_errors=True)
    (out / "aiperf-summary.json").write_text(json.dumps(results, indent=2) + "\n")
    return results
