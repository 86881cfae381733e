"""aiperf against the HTTP API of an in-process service on tiny checkpoints, for real.

Starts the service (as `videogen serve` does) with the models of the `production-mix-tiny` workload,
one replica each on tiny random-weight checkpoints, and runs its text-to-video entries through NVIDIA's
aiperf (`bench/aiperf_load.py`; installed into var/aiperf-venv on first use). Writes aiperf's artifacts,
`aiperf-summary.json` and a README to `bench/results/aiperf-tiny/`: request latency, and the
`inference_time_s` and `peak_memory_mb` aiperf read from the service's video objects.

Usage: python -m bench.aiperf_tiny [--out DIR] [--workload NAME]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from bench.aiperf_load import run_aiperf
from bench.capacity_tiny import service_config
from bench.common import RESULTS
from bench.workload import WORKLOADS, Workload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=RESULTS / "aiperf-tiny")
    parser.add_argument("--workload", default="production-mix-tiny")
    args = parser.parse_args()
    workload = Workload.from_file(WORKLOADS / f"{args.workload}.yaml")
    models = sorted({entry.model for entry in workload.mix})
    from serve import service
    from serve.catalog import get_spec
    from serve.weights import tiny_dir

    config = service_config(models, tempfile.mkdtemp(prefix="videogen-aiperf-"))
    service.start(config)
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    try:
        tasks = {name: get_spec(name).task.value for name in models}
        tokenizer = tiny_dir() / "cogvideox-5b" / "tokenizer"  # aiperf counts the prompts' tokens with it
        results = run_aiperf(f"http://127.0.0.1:{config.http_port}", workload, args.out, tasks, tokenizer)
    finally:
        service.stop()
    lines = [
        "# aiperf against the HTTP API, tiny models on this machine's CPU",
        "",
        "`python -m bench.aiperf_tiny`: NVIDIA aiperf's `video_generation` endpoint (create, poll,",
        f"download) against `/v1/videos`, workload `{workload.name}` (its text-to-video entries,",
        f"{workload.load.mode} loop), one replica per model on tiny random-weight checkpoints. The point is",
        "that aiperf runs unchanged with zero errors and reads `inference_time_s` and `peak_memory_mb` from",
        "the video objects; the numbers say nothing about full-size models.",
        "",
        "| entry | load | requests | errors | latency p50 | latency p99 | inference time avg "
        "| peak memory avg |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def figure(row: dict, name: str, statistic: str) -> str:
        metric = row.get(name, {})
        return f"{metric[statistic]:.0f} {metric['unit']}" if statistic in metric else "-"

    for row in results:
        lines.append(
            f"| {row['entry']} | {row['mode']} {row['level']:g} | {row['requests']} | {row['errors']} | "
            f"{figure(row, 'request_latency', 'p50')} | {figure(row, 'request_latency', 'p99')} | "
            f"{figure(row, 'inference_time', 'avg')} | {figure(row, 'peak_memory', 'avg')} |"
        )
    (args.out / "README.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
