"""Serving overhead, side by side in one run: gRPC + Ray Serve vs the direct in-process call.

For one tiny model it measures, interleaved:
- direct: `Engine.generate_video` in this process (pipeline + MP4 encoding);
- served: `Generate` over gRPC on loopback through Serve's proxy, the Router and the model replica;
at a few steps (added latency in ms) and at enough steps that the direct call takes >= 1 s (ratio).
Then FetchVideo of a 50 MB video (MB/s on loopback) and GetJob requests/s from concurrent clients.

Usage: python -m bench.serving_overhead [--repeats N] [--long-repeats N]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench import serve_floor
from bench.common import percentile, summarize, write
from serve.ports import free_port

MODEL = "hunyuanvideo"
VIDEO_MB = 50
# The long case: a larger clip, so that the direct call reaches >= 1 s within the step limit.
LONG_SIZE = {"height": 128, "width": 128, "num_frames": 17}


def _config(results_dir: str):
    from serve.config import ServeConfig

    return ServeConfig.model_validate(
        {
            "grpc_port": free_port(),
            "http_port": free_port(),
            "ray": {"num_cpus": 8, "metrics_export_port": free_port()},
            "app": {
                "results_dir": results_dir,
                "models": [{"name": MODEL, "weights": "tiny", "num_cpus": 0.5, "max_queued_requests": 64}],
            },
        }
    )


def _steps_for_one_second(engine, spec) -> int:
    """Denoising steps at which the direct call takes about 1.2 s (per-step time from 2 vs 12 steps)."""
    from serve.request import RequestFields, build_request

    def seconds(steps: int) -> float:
        fields = RequestFields(model=MODEL, prompt="fox", seed=1, num_inference_steps=steps, **LONG_SIZE)
        request = build_request(spec, spec.tiny_limits, fields)
        engine.generate_video(request)
        start = time.perf_counter()
        engine.generate_video(request)
        return time.perf_counter() - start

    base, more = seconds(2), seconds(12)
    per_step = max((more - base) / 10, 1e-4)
    limit = spec.tiny_limits.num_inference_steps.max
    return min(limit, max(4, int(2 + (1.2 - base) / per_step)))


def interleaved(samplers: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Seconds of each sampler, `repeats` times, the order rotating every round so none runs warmer."""
    names = list(samplers)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(samplers[name]())
    return samples


def timed(call: Callable[[], object]) -> Callable[[], float]:
    def sample() -> float:
        start = time.perf_counter()
        call()
        return time.perf_counter() - start

    return sample


def fetch_throughput(client, results_dir: str) -> dict:
    """A 50 MB video stored as a finished job, fetched in 4 MiB chunks."""
    import ray

    from serve.events import GenerationSummary
    from serve.jobs import job_store
    from serve.results import ResultStore

    store = job_store(str(Path(results_dir).resolve()))
    record, _ = ray.get(store.create.remote(MODEL))
    ray.get(store.start.remote(record.job_id))
    data = os.urandom(VIDEO_MB * 1024 * 1024)
    ResultStore(results_dir).put(record.job_id, data, "video/mp4")
    # A stand-in summary for random bytes: only what FetchVideo reads (the MIME type) matters here.
    summary = GenerationSummary(
        model=MODEL, seed=0, num_frames=0, fps=1, height=0, width=0, num_inference_steps=0,
        video_bytes=len(data), mime_type="video/mp4", sha256=hashlib.sha256(data).hexdigest(),
        queue_seconds=0, inference_seconds=0, encode_seconds=0, total_seconds=0,
    )  # fmt: skip
    ray.get(store.succeed.remote(record.job_id, summary))
    client.fetch(record.job_id, chunk_bytes=4 << 20)  # warm-up
    rates = []
    for _ in range(5):
        start = time.perf_counter()
        received = client.fetch(record.job_id, chunk_bytes=4 << 20)
        rates.append(len(received) / (time.perf_counter() - start) / 1e6)
        assert received == data
    return {"video_mb": VIDEO_MB, "mb_per_s": summarize(rates), "job_id": record.job_id}


def get_job_rate(target: str, job_id: str, clients: int = 8, per_client: int = 400) -> dict:
    from serve.client import VideogenClient

    def run(_: int) -> int:
        with VideogenClient(target) as client:
            for _ in range(per_client):
                client.get_job(job_id)
        return per_client

    with VideogenClient(target) as client:
        client.get_job(job_id)
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        total = sum(pool.map(run, range(clients)))
    elapsed = time.perf_counter() - start
    return {"clients": clients, "requests": total, "seconds": elapsed, "requests_per_s": total / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--repeats", type=int, default=200, help="pairs of the short case (>= 200 for a p99 of its own)"
    )
    parser.add_argument("--long-repeats", type=int, default=20, help="pairs of the >= 1 s case")
    parser.add_argument("--long-steps", type=int, default=0, help="steps of the >= 1 s case (auto if 0)")
    args = parser.parse_args()

    import tempfile

    from serve import service
    from serve.api import pb
    from serve.catalog import get_spec
    from serve.client import VideogenClient
    from serve.engine import Engine
    from serve.request import RequestFields, build_request

    results_dir = tempfile.mkdtemp(prefix="videogen-bench-")
    config = _config(results_dir)
    service.start(config)
    target = f"127.0.0.1:{config.grpc_port}"
    spec = get_spec(MODEL)
    # The same engine settings as the replica (num_cpus 0.5 -> one torch thread), so that both
    # sides do the same work and only the serving path differs.
    engine = Engine(spec, "tiny", num_threads=1)
    engine.load()
    report: dict = {"model": MODEL}
    try:
        with VideogenClient(target) as client:
            cases = {"short": 2, "long": args.long_steps or _steps_for_one_second(engine, spec)}
            for name, steps in cases.items():
                size = LONG_SIZE if name == "long" else {}
                fields = RequestFields(
                    model=MODEL, prompt="a red fox", seed=1, num_inference_steps=steps, **size
                )
                request = build_request(spec, spec.tiny_limits, fields)
                params = pb.GenerationParams(
                    model=MODEL, prompt="a red fox", seed=1, num_inference_steps=steps, **size
                )
                warm = client.generate(params, timeout=600)
                samplers = {
                    "direct": timed(lambda request=request: engine.generate_video(request)),
                    "served": timed(lambda params=params: client.generate(params, timeout=600)),
                }
                if name == "short":
                    # Serve's own floor for the same wire shape: as many progress events, as many bytes.
                    events: list = []
                    client.generate(params, on_progress=events.append, timeout=600)
                    floor_app = serve_floor.deploy(len(events) - 1, len(warm.data))
                    floor_client = VideogenClient(target, application=floor_app)
                    floor_client.generate(params, timeout=60)
                    samplers["floor"] = timed(
                        lambda params=params, floor=floor_client: floor.generate(params, timeout=60)
                    )
                repeats = args.repeats if name == "short" else args.long_repeats
                samples = interleaved(samplers, repeats)
                direct, served = samples["direct"], samples["served"]
                added = [s - d for s, d in zip(served, direct, strict=True)]
                report[name] = {
                    "steps": steps,
                    "samples": repeats,
                    "direct_s": summarize(direct),
                    "served_s": summarize(served),
                    "added_ms": {"p50": percentile(added, 50) * 1000, "p99": percentile(added, 99) * 1000},
                    "ratio_median": summarize(served)["median"] / summarize(direct)["median"],
                }
                if "floor" in samples:
                    report[name]["floor_ms"] = {
                        "p50": percentile(samples["floor"], 50) * 1000,
                        "p99": percentile(samples["floor"], 99) * 1000,
                    }
            report["fetch"] = fetch_throughput(client, results_dir)
            report["get_job"] = get_job_rate(target, report["fetch"]["job_id"])
    finally:
        service.stop()
    short, long_ = report["short"], report["long"]
    markdown = "\n".join(
        [
            f"# Serving overhead ({MODEL}, tiny, CPU; one run, interleaved)",
            "",
            "| case | steps | samples | direct p50 (s) | served p50 (s) | added p50 (ms) | added p99 (ms) "
            "| ratio |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
            *[
                f"| {name} | {c['steps']} | {c['samples']} | {c['direct_s']['p50']:.3f} | "
                f"{c['served_s']['p50']:.3f} | {c['added_ms']['p50']:.1f} | {c['added_ms']['p99']:.1f} | "
                f"{c['ratio_median']:.3f} |"
                for name, c in (("short", short), ("long (direct >= 1 s)", long_))
            ],
            "",
            "Floor, in the same run: a bare Serve Generate round trip with the same two hops and wire "
            "shape (bench/serve_floor.py: no validation, jobs or model) took "
            f"p50 {short['floor_ms']['p50']:.1f} ms, p99 {short['floor_ms']['p99']:.1f} ms.",
            "",
            f"FetchVideo of {VIDEO_MB} MB on loopback: "
            f"{report['fetch']['mb_per_s']['median']:.0f} MB/s (median of 5).",
            f"GetJob: {report['get_job']['requests_per_s']:.0f} requests/s "
            f"({report['get_job']['clients']} concurrent clients, {report['get_job']['requests']} requests).",
            "",
            "Targets: added p50 <= 15 ms, p99 <= 50 ms; ratio <= 1.05 where direct >= 1 s; "
            ">= 200 MB/s; >= 300 GetJob/s.",
        ]
    )
    write("serving_overhead", report, markdown + "\n")


if __name__ == "__main__":
    main()
