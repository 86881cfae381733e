"""Cold start per model, side by side in one run: from a replica's start to its first request answerable.

Every model is deployed with `min_replicas: 0, max_replicas: 1` and a short idle time before scaling to
zero. In rounds, each model in turn (nothing else running) gets:
- one Generate (2 steps) while it has no replica: the summary's `queue_seconds` is what a request waits
  when the model has scaled to zero (the autoscaler's reaction, Ray's scheduling and worker start, imports,
  weights load and pipeline build, routing): "from zero";
- the replica's own measurement (ModelServer: constructor start -> ready), read back from ListModels'
  `expected_cold_start_seconds`, which reports it for models that scale to zero: "replica";
- the same request again on the running replica: "warm" (what is not cold start).
Models alternate within each round, so drift in the machine's load affects them alike.

Usage:
  python -m bench.cold_start [--rounds N] [--models a,b]     # tiny models on the CPU -> cold_start_tiny
  python -m bench.cold_start --config configs/production-gpu.yaml --name cold_start_h100   # on a GPU node
With --config the models keep their weights, resources and parallel degrees; only autoscaling is replaced.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from typing import Any

from bench.common import summarize, write
from bench.workload import conditioning_image
from serve.config import ROUTER_DEPLOYMENT
from serve.ports import free_port

APP = "videogen"
FROM_ZERO = {
    "min_replicas": 0,
    "max_replicas": 1,
    "upscale_delay_s": 0.0,
    "downscale_delay_s": 1.0,
    "downscale_to_zero_delay_s": 1.0,
    "metrics_interval_s": 0.5,
    "look_back_period_s": 1.0,
}


def serve_config(config_path: str | None, models: list[str] | None, results_dir: str) -> Any:
    """The service to measure: every model (or `models`) scaling from zero, on loopback ports."""
    from serve.catalog import CATALOG
    from serve.config import ServeConfig

    if config_path:
        data = ServeConfig.from_file(config_path).model_dump(mode="json", exclude_none=True)
    else:
        entries = [{"name": name, "weights": "tiny", "num_cpus": 0.5} for name in CATALOG]
        # Logical resources: the tiny replicas fit on a small machine.
        data = {"ray": {"num_cpus": 16, "num_gpus": 2}, "app": {"models": entries}}
    data["app"]["models"] = [
        {**entry, "autoscaling": FROM_ZERO}
        for entry in data["app"]["models"]
        if models is None or entry["name"] in models
    ]
    if not config_path:
        data["app"]["results_dir"] = results_dir  # with a config: its own, shared by every node
    data.update(grpc_port=free_port(), http_port=free_port(), app_name=APP)
    data.setdefault("ray", {})["metrics_export_port"] = free_port()
    return ServeConfig.model_validate(data)


def replicas(deployment: str | None = None) -> int:
    """Replicas in any state: of one deployment, or of every model deployment of the app."""
    from ray import serve

    deployments = serve.status().applications[APP].deployments
    return sum(
        sum(status.replica_states.values())
        for name, status in deployments.items()
        if name != ROUTER_DEPLOYMENT and (deployment is None or name == deployment)
    )


def wait_until(condition: Any, timeout_s: float, what: str) -> None:
    began = time.monotonic()
    while not condition():
        if time.monotonic() - began > timeout_s:
            raise TimeoutError(f"not within {timeout_s:.0f}s: {what}")
        time.sleep(0.2)


def measure(client: Any, model: Any, deadline_s: float) -> dict[str, float]:
    """One cold start of `model` (deployed, at zero replicas) and one warm request after it."""
    from serve.api import pb
    from serve.catalog import Task, get_spec

    image = conditioning_image(64, 64) if get_spec(model.name).task is Task.I2V else b""
    params = pb.GenerationParams(
        model=model.name, prompt="a red fox", image=image, seed=1, num_inference_steps=2
    )
    wait_until(lambda: replicas() == 0, 120, "every model at zero replicas")
    began = time.monotonic()
    cold = client.generate(params, timeout=deadline_s)
    cold_total = time.monotonic() - began
    replica = next(m.expected_cold_start_seconds for m in client.list_models() if m.name == model.name)
    began = time.monotonic()
    warm = client.generate(params, timeout=deadline_s)
    return {
        "from_zero_s": cold.summary.queue_seconds,
        "replica_s": replica,
        "cold_request_s": cold_total,
        "warm_request_s": time.monotonic() - began,
        "warm_queue_s": warm.summary.queue_seconds,
    }


def markdown(report: dict[str, Any]) -> str:
    load = report["load_average_1m"]
    lines = [
        f"# Cold start per model ({report['weights']} weights; one run, models alternating, "
        f"{report['rounds']} rounds)",
        "",
        "| model | replica (s) | from zero (s) | from zero - replica (s) | warm request (s) "
        "| cold request (s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, row in report["models"].items():
        replica, zero = row["replica_s"]["median"], row["from_zero_s"]["median"]
        lines.append(
            f"| {name} | {replica:.2f} | {zero:.2f} | {zero - replica:.2f} | "
            f"{row['warm_request_s']['median']:.2f} | {row['cold_request_s']['median']:.2f} |"
        )
    lines += [
        "",
        "Medians. *replica*: the ModelServer's own measurement, constructor start -> ready (weights load, "
        "pipeline build); exported as `videogen_cold_start_seconds` and stated by ListModels "
        "(`expected_cold_start_seconds`) for models with `min_replicas: 0`. *from zero*: what a request "
        "sent while the model had no replica waited before the replica started it (summary "
        "`queue_seconds`): the replica's cold start plus the autoscaler's reaction, Ray's worker start and "
        "imports. *warm request*: the same request on the running replica.",
        "",
        f"Machine: {load['cpu_count']} CPUs, 1-minute load average {load['start']:.1f} at the start and "
        f"{load['end']:.1f} at the end of the run ({report['run_seconds']:.0f} s); other work on a busy "
        "machine inflates every column alike.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", help="comma-separated names (default: every model of the config)")
    parser.add_argument("--config", help="a `videogen serve` config (default: every catalog model, tiny)")
    parser.add_argument("--name", default="cold_start_tiny", help="results file name in bench/results/")
    parser.add_argument("--deadline", type=float, default=900.0, help="seconds one request may take")
    args = parser.parse_args()

    from serve import service
    from serve.client import VideogenClient

    models = args.models.split(",") if args.models else None
    config = serve_config(args.config, models, tempfile.mkdtemp(prefix="videogen-cold-start-"))
    began, load_before = time.monotonic(), os.getloadavg()[0]
    service.start(config)
    samples: dict[str, list[dict[str, float]]] = {m.name: [] for m in config.app.models}
    try:
        with VideogenClient(f"127.0.0.1:{config.grpc_port}") as client:
            for round_ in range(args.rounds):
                for model in config.app.models:
                    samples[model.name].append(measure(client, model, args.deadline))
                    print(f"round {round_ + 1}: {model.name} {samples[model.name][-1]}", flush=True)
    finally:
        service.stop()
    weights = sorted({m.weights for m in config.app.models})
    report = {
        "weights": ", ".join(weights),
        "rounds": args.rounds,
        "run_seconds": time.monotonic() - began,
        # This machine is shared: its load shows how far the absolute numbers are inflated.
        "load_average_1m": {"start": load_before, "end": os.getloadavg()[0], "cpu_count": os.cpu_count()},
        "models": {
            name: {key: summarize([s[key] for s in rows]) for key in rows[0]}
            for name, rows in samples.items()
        },
        "samples": samples,
    }
    write(args.name, report, markdown(report))


if __name__ == "__main__":
    main()
