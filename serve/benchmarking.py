"""`videogen bench` and `videogen capacity`: thin CLI front ends of the `bench/` package.

`bench/` lives at the repository root, outside the installed packages: it is imported from the working
directory or from the checkout this package was installed from (editable installs), whichever has it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from serve.config import RayOptions
from serve.ports import DEFAULT_TARGET

DEFAULT_METRICS_PORT: int = RayOptions.model_fields["metrics_export_port"].default


def bench_module(name: str) -> ModuleType:
    """Import `bench.<name>`, putting the checkout that holds bench/ on sys.path if needed."""
    try:
        return importlib.import_module(f"bench.{name}")
    except ModuleNotFoundError as error:
        if error.name not in ("bench", f"bench.{name}"):
            raise
    for root in (Path.cwd(), Path(__file__).resolve().parent.parent):
        if (root / "bench" / "__init__.py").is_file():
            sys.path.insert(0, str(root))
            sys.modules.pop("bench", None)
            return importlib.import_module(f"bench.{name}")
    raise SystemExit("videogen: bench/ not found: run from the repository root (it is not installed)")


def _workload_path(value: str) -> Path:
    """A workload file, or the name of one shipped in bench/workloads/."""
    path = Path(value)
    if path.is_file():
        return path
    shipped = Path(bench_module("workload").WORKLOADS) / f"{value.removesuffix('.yaml')}.yaml"
    if shipped.is_file():
        return shipped
    raise SystemExit(f"videogen bench: no workload file {value!r} (nor {shipped})")


def _bench_with_aiperf(args: argparse.Namespace, workload: Any) -> int:
    """The workload's text-to-video entries through NVIDIA aiperf against the HTTP API."""
    import urllib.request

    with urllib.request.urlopen(f"{args.http_url}/v1/models", timeout=30) as response:
        tasks = {model["id"]: model["task"] for model in json.load(response)["data"]}
    from serve.weights import tiny_dir

    tokenizer = args.tokenizer or tiny_dir() / "cogvideox-5b" / "tokenizer"
    args.out.mkdir(parents=True, exist_ok=True)
    results = bench_module("aiperf_load").run_aiperf(
        args.http_url, workload, args.out, tasks, Path(tokenizer)
    )
    print(f"wrote {args.out}/aiperf-summary.json and aiperf's artifacts")
    for row in results:
        load = f"{row['mode']} {row['level']:g}"
        print(f"{row['entry']} at {load}: {row['requests']} requests, {row['errors']} errors")
    return 0 if results and not any(row.get("errors") for row in results) else 1


def cmd_bench(args: argparse.Namespace) -> int:
    """Run a workload against a running service and write the report."""
    workload = bench_module("workload").Workload.from_file(_workload_path(args.workload))
    if args.load_generator == "aiperf":
        return _bench_with_aiperf(args, workload)
    metrics_url = args.metrics_url
    if metrics_url is None and args.metrics_port:
        metrics_url = f"http://{args.target.rsplit(':', 1)[0]}:{args.metrics_port}/metrics"
    print(
        f"videogen bench: {workload.name} against {args.target} ({workload.load.mode} loop, levels "
        f"{workload.load.levels}); stops within {workload.bound_s:.0f} s after warm-up",
        file=sys.stderr,
    )
    import grpc

    try:
        run = bench_module("loadgen").run_workload(
            args.target, workload, metrics_url, progress=not args.quiet
        )
    except (ValueError, grpc.RpcError) as error:  # models not deployed, service unreachable
        detail = error.details() if isinstance(error, grpc.RpcError) else str(error)
        print(f"videogen bench: {detail}", file=sys.stderr)
        return 2
    summary = bench_module("report").write_report(run, args.out)
    print(f"wrote {args.out}/report.md, report.json and plots")
    rates = ", ".join(f"{phase['clips_per_hour']:.0f}" for phase in summary["phases"])
    print(
        f"{summary['requests']} requests: {summary['ok']} OK, errors {summary['errors'] or 'none'}; "
        f"clips/h per level: {rates}"
    )
    if args.profile_out:
        capacity = bench_module("capacity")
        entry = args.profile_entry or workload.mix[0].label
        path = capacity.write_profile(capacity.measured_profile(run, entry), args.profile_out)
        print(f"wrote the measured cost profile of {entry} to {path}")
    return 0 if summary["requests"] else 1


def cmd_capacity(args: argparse.Namespace) -> int:
    """Plan GPUs and replicas for a clip rate and a latency SLO from a cost profile."""
    capacity = bench_module("capacity")
    profile = capacity.CostProfile.from_file(args.profile)
    rate = args.clips_per_hour if args.clips_per_hour is not None else args.arrival_rate_per_s * 3600
    result = capacity.plan(
        profile,
        clips_per_hour=rate,
        slo_seconds=args.slo_seconds,
        percentile=args.percentile,
        steps=args.steps,
        arrival_scv=args.arrival_scv,
        service_scv=args.service_scv,
        max_utilisation=args.max_utilisation,
    )
    print(json.dumps(result.model_dump(mode="json"), indent=2) if args.json else capacity.format_plan(result))
    return 0 if result.best is not None else 1


def add_bench_commands(commands: Any) -> None:
    """Register `videogen bench` and `videogen capacity` on the CLI's subparsers."""
    bench = commands.add_parser("bench", help="load-test a running service with a workload; write a report")
    bench.add_argument("--target", default=DEFAULT_TARGET, help="HOST:PORT of the gRPC endpoint")
    bench.add_argument("--workload", required=True, help="workload YAML, or a name in bench/workloads/")
    bench.add_argument("--out", type=Path, required=True, help="directory for report.json/.md and plots")
    bench.add_argument(
        "--metrics-port",
        type=int,
        default=DEFAULT_METRICS_PORT,
        help="Ray's metrics export port on the target host (0: do not scrape)",
    )
    bench.add_argument("--metrics-url", help="full metrics URL (overrides --metrics-port)")
    bench.add_argument("--profile-out", type=Path, help="also write a measured cost profile (YAML) here")
    bench.add_argument("--profile-entry", help="mix entry the profile is measured from (default: first)")
    bench.add_argument("--quiet", action="store_true", help="no progress bar")
    bench.add_argument(
        "--load-generator",
        choices=["videogen", "aiperf"],
        default="videogen",
        help="videogen: this project's gRPC load generator (report, plots, profiles); aiperf: NVIDIA aiperf "
        "against the HTTP API (--http-url), text-to-video entries only",
    )
    bench.add_argument("--http-url", default="http://127.0.0.1:8000", help="the HTTP API, for aiperf")
    bench.add_argument(
        "--tokenizer",
        help="aiperf: tokenizer directory to count prompt tokens with (default: a tiny checkpoint's)",
    )
    bench.set_defaults(run=cmd_bench)

    cap = commands.add_parser("capacity", help="GPUs and replicas needed for a clip rate and a latency SLO")
    cap.add_argument("--profile", type=Path, required=True, help="cost profile YAML (bench/profiles/)")
    rate = cap.add_mutually_exclusive_group(required=True)
    rate.add_argument("--clips-per-hour", type=float, help="target throughput = arrival rate")
    rate.add_argument("--arrival-rate-per-s", type=float, help="arrival rate in clips per second")
    cap.add_argument("--slo-seconds", type=float, required=True, help="end-to-end latency SLO")
    cap.add_argument("--percentile", type=float, default=95.0, help="percentile the SLO applies to")
    cap.add_argument("--steps", type=int, help="denoising steps (default: the profile's)")
    cap.add_argument("--service-scv", type=float, default=1.0, help="Cs^2 of service times (1: M/M/c)")
    cap.add_argument(
        "--arrival-scv", type=float, default=1.0, help="Ca^2 of inter-arrival times (1: Poisson)"
    )
    cap.add_argument("--max-utilisation", type=float, default=1.0, help="keep utilisation at or below this")
    cap.add_argument("--json", action="store_true", help="print the plan as JSON")
    cap.set_defaults(run=cmd_capacity)
