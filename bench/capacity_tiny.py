"""The tiny CPU capacity run: every `*-tiny.yaml` workload against an in-process service, for real.

Starts the service (as `videogen serve` does) with the models the tiny workloads use, one replica each on
tiny random-weight checkpoints, runs each workload through the load generator, writes its report to
`bench/results/capacity-tiny/<workload>/`, and derives the measured tiny CPU cost profiles
(`bench/profiles/*-tiny-cpu.yaml`) from the lowest load level.

Usage: python -m bench.capacity_tiny [--out DIR] [--workload NAME ...]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from bench.capacity import PROFILES, CostProfile, format_plan, measured_profile, plan, write_profile
from bench.common import RESULTS
from bench.loadgen import run_workload
from bench.report import write_report
from bench.workload import WORKLOADS, Workload
from serve.ports import free_port

# workload -> (mix entry, profile file) of the measured tiny profiles
PROFILED = {
    "hunyuan-720p-129f-tiny": ("hunyuan-tiny-112x64-17f", "hunyuanvideo-tiny-cpu.yaml"),
    "cogvideox-720x480-49f-tiny": ("cogvideox-tiny-48x32-17f", "cogvideox-5b-tiny-cpu.yaml"),
}


def service_config(models: list[str], results_dir: str):
    from serve.config import ServeConfig

    return ServeConfig.model_validate(
        {
            "grpc_port": free_port(),
            "http_port": free_port(),
            "ray": {"num_cpus": 16, "metrics_export_port": free_port()},
            "app": {
                "results_dir": results_dir,
                "models": [
                    {"name": name, "weights": "tiny", "num_cpus": 0.5, "max_queued_requests": 16}
                    for name in models
                ],
            },
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=RESULTS / "capacity-tiny")
    parser.add_argument("--workload", action="append", help="only these tiny workloads (names)")
    args = parser.parse_args()
    names = args.workload or sorted(p.stem for p in WORKLOADS.glob("*-tiny.yaml"))
    workloads = [Workload.from_file(WORKLOADS / f"{name}.yaml") for name in names]
    models = sorted({entry.model for w in workloads for entry in w.mix})

    # Ray exports custom metrics every few seconds by default; tiny runs last seconds.
    os.environ.setdefault("RAY_metrics_report_interval_ms", "1000")
    from serve import service

    config = service_config(models, tempfile.mkdtemp(prefix="videogen-capacity-"))
    began = time.perf_counter()
    service.start(config)
    print(f"service up in {time.perf_counter() - began:.1f} s: {', '.join(models)}", flush=True)
    target = f"127.0.0.1:{config.grpc_port}"
    metrics_url = f"http://127.0.0.1:{config.ray.metrics_export_port}/metrics"
    index = [
        "# Capacity benchmark, tiny models on this machine's CPU",
        "",
        "`python -m bench.capacity_tiny`: one replica per model, tiny random-weight checkpoints, on a 2-core "
        "machine shared with other work. The numbers show that the load generator, the report and the "
        "planner work end to end through the real service; they say nothing about full-size models.",
        "",
    ]
    try:
        for workload in workloads:
            run = run_workload(target, workload, metrics_url)
            summary = write_report(run, args.out / workload.name)
            index.append(
                f"- [{workload.name}]({workload.name}/report.md): {summary['requests']} requests, "
                f"{summary['ok']} OK, errors {summary['errors'] or 'none'}; {run['duration_s']:.1f} s"
            )
            if workload.name in PROFILED:
                entry, filename = PROFILED[workload.name]
                profile = measured_profile(run, entry)
                write_profile(profile, PROFILES / filename)
                index.append(f"  - measured profile: bench/profiles/{filename}")
    finally:
        service.stop()
    hunyuan = CostProfile.from_file(PROFILES / "hunyuanvideo-tiny-cpu.yaml")
    index += [
        "",
        "## The planner on the measured tiny profile",
        "",
        "A check that the measured numbers flow through the planner (tiny clips on a CPU, not a forecast):",
        "",
        format_plan(plan(hunyuan, clips_per_hour=3600, slo_seconds=5)),
    ]
    (args.out / "README.md").write_text("\n".join(index) + "\n")
    print("\n".join(index))


if __name__ == "__main__":
    main()
