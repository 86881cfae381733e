"""Every metric of the service, in one place.

Exported through Ray's metrics agent, which serves them on each node's metrics export port with a
`ray_` prefix. `ray.serve.metrics` adds the `deployment`, `replica` and `application` labels inside
Serve replicas (the Router, the ModelServers); elsewhere (the job store actor) it adds none. Ray also
adds its own labels to every series: Component, NodeAddress, SessionName, Version, WorkerId.
Names follow Prometheus conventions (base units, counters end in `_total`).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from typing import Any, NamedTuple

# Video jobs take from well under a second (tiny models) to an hour (720p long clips).
LATENCY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600)
STEP_BUCKETS_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
LOAD_BUCKETS_S = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200)
# Ray stops exporting a worker's series once it has reported nothing for 120 s (RAY_WORKER_TIMEOUT_S):
# gauges that change rarely are set again this often, so an idle service keeps its series.
GAUGE_REFRESH_S = 5.0
MEMORY_SAMPLE_PERIOD_S = 5.0

PREFIX = "videogen_"
RAY_PREFIX = "ray_"  # what Ray's metrics agent puts in front of every application metric
SERVE_LABELS = ("deployment", "replica", "application")  # added by ray.serve.metrics in replicas
RAY_LABELS = ("Component", "NodeAddress", "SessionName", "Version", "WorkerId")  # added by Ray


class Kind(StrEnum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


@dataclass(frozen=True)
class MetricSpec:
    """One metric: its name (without prefixes), type, labels and meaning."""

    name: str
    kind: Kind
    description: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] = ()
    serve_labels: bool = True  # recorded inside Serve replicas, so Serve's labels are added

    @property
    def exported(self) -> str:
        """The metric family's name on Ray's export port (and in Prometheus)."""
        return RAY_PREFIX + PREFIX + self.name

    @property
    def series(self) -> tuple[str, ...]:
        """The series names Prometheus stores for this metric."""
        if self.kind is Kind.HISTOGRAM:
            return tuple(self.exported + suffix for suffix in ("_bucket", "_sum", "_count"))
        return (self.exported,)


REQUESTS = MetricSpec(
    "requests_total",
    Kind.COUNTER,
    "RPCs handled by a Router, by RPC, model and gRPC status code (OK, INVALID_ARGUMENT, ...).",
    ("rpc", "model", "code"),
)
REQUEST_LATENCY = MetricSpec(
    "request_latency_seconds",
    Kind.HISTOGRAM,
    "End-to-end latency of Generate (arrival to last byte) and of finished jobs (submit to stored video).",
    ("rpc", "model"),
    LATENCY_BUCKETS_S,
)
FIRST_PLAYABLE = MetricSpec(
    "first_playable_seconds",
    Kind.HISTOGRAM,
    "Long clips: time from a request's arrival until the first section of its video was playable "
    "(encoded and sent); request_latency_seconds is the time to the whole clip.",
    ("model",),
    LATENCY_BUCKETS_S,
)
QUEUE_WAIT = MetricSpec(
    "queue_wait_seconds",
    Kind.HISTOGRAM,
    "Time from a request's arrival until a model replica started it.",
    ("model",),
    LATENCY_BUCKETS_S,
)
IN_FLIGHT = MetricSpec(
    "requests_in_flight",
    Kind.GAUGE,
    "Requests a Router admitted and that have not finished, running or queued, by model (what admission "
    "control counts against the model's capacity).",
    ("model",),
)
QUEUED = MetricSpec(
    "requests_queued",
    Kind.GAUGE,
    "Generate calls a Router admitted that no model replica has started yet, by model (queued async jobs: "
    'jobs{state="queued"}).',
    ("model",),
)
QUOTA_REFUSALS = MetricSpec(
    "quota_refusals_total",
    Kind.COUNTER,
    "Requests refused RESOURCE_EXHAUSTED because the caller was at its own quota (max_concurrent_jobs), "
    "not because the service was full; requests_total counts them too.",
    ("rpc", "model"),
)
MODEL_LOAD = MetricSpec(
    "model_load_seconds",
    Kind.HISTOGRAM,
    "Time for a replica to load its pipeline (cold start).",
    ("model",),
    LOAD_BUCKETS_S,
)
COLD_START = MetricSpec(
    "cold_start_seconds",
    Kind.GAUGE,
    "Time from a replica's start until it could answer its first request.",
    ("model",),
)
STEP_TIME = MetricSpec(
    "denoising_step_seconds",
    Kind.HISTOGRAM,
    "Duration of one denoising step (the first one of a request includes prompt encoding and set-up).",
    ("model",),
    STEP_BUCKETS_S,
)
STAGE_TIME = MetricSpec(
    "stage_seconds",
    Kind.HISTOGRAM,
    "Seconds of one successful generation by stage: text_encode, denoise, vae_decode, video_encode.",
    ("model", "stage"),
    LATENCY_BUCKETS_S,
)
FRAMES = MetricSpec(
    "frames_generated_total",
    Kind.COUNTER,
    "Video frames generated (successful generations only).",
    ("model",),
)
VIDEO_SECONDS = MetricSpec(
    "video_seconds_generated_total",
    Kind.COUNTER,
    "Seconds of video generated (frames / fps).",
    ("model",),
)
TRANSFORMER_FORWARDS = MetricSpec(
    "transformer_forwards_total",
    Kind.COUNTER,
    "Transformer (or UNet) forwards of successful generations, by outcome: computed (all blocks ran) or "
    "skipped (the step cache ran only the first block). GPU time per clip follows computed.",
    ("model", "outcome"),
)
GENERATIONS = MetricSpec(
    "generations_total",
    Kind.COUNTER,
    "Generations finished by model replicas, by outcome (succeeded, failed, cancelled); clips = succeeded.",
    ("model", "outcome"),
)
JOBS = MetricSpec(
    "jobs",
    Kind.GAUGE,
    "Async jobs by model and state (queued, running, succeeded, failed, cancelled), as the job store holds "
    "them.",
    ("model", "state"),
    serve_labels=False,
)
# Memory: one metric per measure, for every process that holds a model's weights: a model replica (rank 0)
# or each rank actor of a multi-GPU replica (ranks carry no Serve labels). `device` is the GPU's UUID
# (GPU-...; DCGM's `UUID` label) or `cpu`, so a series joins with DCGM's and survives device renumbering.
MEMORY_LABELS = ("model", "rank", "device")
GPU_MEMORY_MEASURES = {
    "allocated": "bytes torch has allocated on the GPU for this process",
    "reserved": "bytes torch's caching allocator holds on the GPU for this process",
    "peak": "most bytes torch had allocated on the GPU since the last generation started",
    "used": "bytes in use on the whole GPU, every process (NVML)",
    "total": "the GPU's memory (NVML)",
}
GPU_MEMORY = {
    measure: MetricSpec(
        f"gpu_memory_{measure}_bytes",
        Kind.GAUGE,
        f"GPU memory: {meaning}. Sampled every 5 s and after each generation.",
        MEMORY_LABELS,
        serve_labels=False,
    )
    for measure, meaning in GPU_MEMORY_MEASURES.items()
}
RESIDENT_MEMORY = MetricSpec(
    "resident_memory_bytes",
    Kind.GAUGE,
    "Host memory resident in a model replica's (or rank's) process (device=cpu). Sampled every 5 s.",
    MEMORY_LABELS,
    serve_labels=False,
)
MEMORY_BY_MEASURE = {**GPU_MEMORY, "resident": RESIDENT_MEMORY}
MEMORY_SPECS = tuple(MEMORY_BY_MEASURE.values())
JOB_PEAK_MEMORY = MetricSpec(
    "last_job_peak_memory_bytes",
    Kind.GAUGE,
    "Peak device memory of the last generation of a replica (what one clip costs); device as above.",
    ("model", "device"),
)

SPECS: tuple[MetricSpec, ...] = (
    REQUESTS,
    REQUEST_LATENCY,
    FIRST_PLAYABLE,
    QUEUE_WAIT,
    IN_FLIGHT,
    QUEUED,
    QUOTA_REFUSALS,
    MODEL_LOAD,
    COLD_START,
    STEP_TIME,
    STAGE_TIME,
    FRAMES,
    VIDEO_SECONDS,
    TRANSFORMER_FORWARDS,
    GENERATIONS,
    JOBS,
    *MEMORY_SPECS,
    JOB_PEAK_MEMORY,
)


def _build(spec: MetricSpec) -> Any:
    # ray.serve.metrics adds deployment/replica/application inside a replica and nothing elsewhere.
    from ray.serve import metrics as m

    name = PREFIX + spec.name
    if spec.kind is Kind.COUNTER:
        return m.Counter(name, description=spec.description, tag_keys=spec.labels)
    if spec.kind is Kind.GAUGE:
        return m.Gauge(name, description=spec.description, tag_keys=spec.labels)
    return m.Histogram(
        name, description=spec.description, boundaries=list(spec.buckets), tag_keys=spec.labels
    )


class Metrics:
    """The metric objects; one instance per process (see `metrics()`), created inside the replica."""

    def __init__(self) -> None:
        self.requests = _build(REQUESTS)
        self.request_latency = _build(REQUEST_LATENCY)
        self.queue_wait = _build(QUEUE_WAIT)
        self.first_playable = _build(FIRST_PLAYABLE)
        self.in_flight = _build(IN_FLIGHT)
        self.queued = _build(QUEUED)
        self.quota_refusals = _build(QUOTA_REFUSALS)
        self.model_load = _build(MODEL_LOAD)
        self.cold_start = _build(COLD_START)
        self.step_time = _build(STEP_TIME)
        self.stage_time = _build(STAGE_TIME)
        self.frames = _build(FRAMES)
        self.video_seconds = _build(VIDEO_SECONDS)
        self.transformer_forwards = _build(TRANSFORMER_FORWARDS)
        self.generations = _build(GENERATIONS)
        self.jobs = _build(JOBS)
        self.memory = {spec.name: _build(spec) for spec in MEMORY_SPECS}
        self.job_peak_memory = _build(JOB_PEAK_MEMORY)


@cache
def metrics() -> Metrics:
    """This process's metrics (first call inside a replica, so Serve's labels are attached)."""
    return Metrics()


class MemorySample(NamedTuple):
    """One reading: which metric (MEMORY_SPECS), of which device (GPU UUID or cpu), in bytes."""

    spec: MetricSpec
    device: str
    value: float


def gpu_uuid(index: int) -> str:
    """`GPU-<uuid>` of torch's `cuda:index` (as nvidia-smi and DCGM name it)."""
    import torch

    uuid = str(torch.cuda.get_device_properties(index).uuid)
    return uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"


def device_label(device: Any) -> str:
    """The `device` label of a torch device: the GPU's UUID, or `cpu`."""
    if getattr(device, "type", "cpu") != "cuda":
        return "cpu"
    import torch

    return gpu_uuid(device.index if device.index is not None else torch.cuda.current_device())


def memory_samples() -> list[MemorySample]:
    """Every memory measure of this process: each visible GPU's, then the host's resident bytes."""
    import torch

    samples: list[MemorySample] = []
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            device = gpu_uuid(index)
            samples += [
                MemorySample(GPU_MEMORY["allocated"], device, torch.cuda.memory_allocated(index)),
                MemorySample(GPU_MEMORY["reserved"], device, torch.cuda.memory_reserved(index)),
                MemorySample(GPU_MEMORY["peak"], device, torch.cuda.max_memory_allocated(index)),
            ]
            samples += _nvml(index, device)
    samples.append(MemorySample(RESIDENT_MEMORY, "cpu", _resident_bytes()))
    return samples


def _nvml(index: int, device: str) -> list[MemorySample]:
    """Whole-device used/total bytes (every process on the GPU), from NVML or else the CUDA driver."""
    try:
        import pynvml

        pynvml.nvmlInit()
        info = pynvml.nvmlDeviceGetMemoryInfo(_nvml_handle(pynvml, index))
        used, total = info.used, info.total
    except Exception:  # nvidia-ml-py is optional: the driver's cudaMemGetInfo says the same
        try:
            import torch

            free, total = torch.cuda.mem_get_info(index)
            used = total - free
        except Exception:
            return []
    return [MemorySample(GPU_MEMORY["used"], device, used), MemorySample(GPU_MEMORY["total"], device, total)]


def _nvml_handle(pynvml: Any, index: int) -> Any:
    """NVML's handle of torch's `cuda:index`: NVML ignores CUDA_VISIBLE_DEVICES, which Ray sets."""
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if index >= len(visible):
        return pynvml.nvmlDeviceGetHandleByIndex(index)
    entry = visible[index]
    if entry.startswith(("GPU-", "MIG-")):
        return pynvml.nvmlDeviceGetHandleByUUID(entry)
    return pynvml.nvmlDeviceGetHandleByIndex(int(entry))


def _resident_bytes() -> float:
    with open(f"/proc/{os.getpid()}/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def record_memory(model: str, rank: int = 0) -> None:
    """Set this process's memory gauges for `model` (rank: of a multi-GPU replica; 0 otherwise)."""
    for sample in memory_samples():
        metrics().memory[sample.spec.name].set(
            sample.value, tags={"model": model, "rank": str(rank), "device": sample.device}
        )


def sample_memory_forever(
    model: str, rank: int = 0, memory: bool = True, also: Callable[[], None] | None = None
) -> threading.Thread:
    """A daemon thread that records this process's memory (unless `memory` is False) and runs `also`
    every MEMORY_SAMPLE_PERIOD_S; set once now as well."""

    def sample() -> None:
        if memory:
            record_memory(model, rank)
        if also is not None:
            also()

    def forever() -> None:
        while True:
            time.sleep(MEMORY_SAMPLE_PERIOD_S)
            with contextlib.suppress(Exception):  # a failed sample must not end the sampling
                sample()

    sample()
    thread = threading.Thread(target=forever, daemon=True, name="memory-metrics")
    thread.start()
    return thread
