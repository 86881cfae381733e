"""Load generator: drives the videogen gRPC API with a workload and records every request.

Closed loop: `c` clients each send the next request when their last one ends. Open loop: requests arrive
at a given rate whether or not earlier ones ended. Each load level is one phase; a phase sends at most
`max_requests`, starts none after `max_duration_s`, and every request carries a `request_timeout_s`
deadline, so a run ends within `Workload.bound_s` (plus warm-up) by itself.

Per request it records: queue wait (until the first progress event past QUEUED), time to the first
progress event, end-to-end latency (to the last byte), the outcome (gRPC code name) and, from the progress
events, the replica's time per denoising step, before the first step and after the last. Times count from
the intended send time (open loop: the arrival), so a client falling behind shows up in the latency.
Meanwhile it scrapes the service's metrics from Ray's Prometheus endpoint (frames generated, device memory
per replica).
"""

from __future__ import annotations

import contextlib
import itertools
import re
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import grpc

from bench.workload import MixEntry, Workload, conditioning_image
from serve import metrics as metric_specs

# The series sampled from Ray's metrics endpoint (serve/metrics.py, with Ray's `ray_` prefix).
FRAMES = metric_specs.FRAMES.exported
# Memory series -> the measure they record (allocated, ..., resident): one metric per measure.
MEMORY = {spec.exported: measure for measure, spec in metric_specs.MEMORY_BY_MEASURE.items()}
JOB_PEAK_MEMORY = metric_specs.JOB_PEAK_MEMORY.exported
SAMPLED = (FRAMES, *MEMORY, JOB_PEAK_MEMORY)
KEPT_LABELS = ("model", "rank", "device", "NodeAddress", "WorkerId")
WARMUP_PHASE = -1
# gRPC's own codes, plus outcomes only the client sees.
INCOMPLETE = "INCOMPLETE"  # the stream ended without a summary, or bytes/checksum mismatch
CLIENT_ERROR = "CLIENT_ERROR"  # an exception in the load generator itself


@dataclass
class RequestSample:
    """One request as the client saw it; times in seconds, relative to the run's start."""

    id: int
    phase: int
    level: float
    entry: str
    model: str
    api: str
    scheduled_s: float
    sent_s: float = 0.0
    latency_s: float = 0.0
    queue_wait_s: float | None = None
    first_progress_s: float | None = None
    first_playable_s: float | None = None  # Generate: the first video bytes (a long clip's first section)
    code: str = "UNKNOWN"
    error: str = ""
    num_frames: int = 0
    num_inference_steps: int = 0
    width: int = 0
    height: int = 0
    video_bytes: int = 0
    server_queue_s: float | None = None
    server_inference_s: float | None = None
    server_encode_s: float | None = None
    step_s: float | None = None
    prepare_s: float | None = None
    decode_s: float | None = None

    @property
    def ok(self) -> bool:
        return self.code == "OK"


@dataclass
class _Progress:
    """Progress events of one request: when they arrived and what the replica reported."""

    first_at: float | None = None
    running_at: float | None = None
    steps: dict[int, float] = field(default_factory=dict)  # step -> replica elapsed seconds
    done_elapsed: float | None = None

    def seen(self, now: float, stage: int, step: int, elapsed: float) -> None:
        from serve.api import pb

        if self.first_at is None:
            self.first_at = now
        if stage not in (pb.STAGE_QUEUED, pb.STAGE_UNSPECIFIED) and self.running_at is None:
            self.running_at = now
        if stage == pb.STAGE_DENOISING and step > 0:
            self.steps[step] = elapsed
        elif stage == pb.STAGE_DONE:
            self.done_elapsed = elapsed

    def stage_times(self) -> tuple[float | None, float | None, float | None]:
        """(seconds per step, before the first step, after the last step) from the replica's clock."""
        if len(self.steps) < 2:
            return None, None, None
        first, last = min(self.steps), max(self.steps)
        step_s = (self.steps[last] - self.steps[first]) / (last - first)
        prepare_s = max(0.0, self.steps[first] - first * step_s)
        decode_s = None if self.done_elapsed is None else max(0.0, self.done_elapsed - self.steps[last])
        return step_s, prepare_s, decode_s


_LINE = re.compile(r"^(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str, names: tuple[str, ...] = SAMPLED) -> list[dict[str, Any]]:
    """The samples of `names` in Prometheus text format, with the labels in KEPT_LABELS."""
    rows = []
    for line in text.splitlines():
        if not line.startswith(names):
            continue
        match = _LINE.match(line)
        if not match or match["name"] not in names:
            continue
        labels = dict(_LABEL.findall(match["labels"] or ""))
        rows.append(
            {
                "name": match["name"],
                "labels": {key: labels[key] for key in KEPT_LABELS if key in labels},
                "value": float(match["value"]),
            }
        )
    return rows


def replica_key(labels: dict[str, str]) -> str:
    """A readable replica id: model@node/worker (Ray tags every series with its worker)."""
    worker = labels.get("WorkerId", "")[:8]
    return f"{labels.get('model', '?')}@{labels.get('NodeAddress', '?')}/{worker}"


class MetricsSampler:
    """Scrapes the service's metrics endpoint every `interval_s` on a background thread."""

    def __init__(self, url: str, interval_s: float, clock: Any) -> None:
        self.url = url
        self.interval_s = interval_s
        self.clock = clock
        self.samples: list[dict[str, Any]] = []
        self.errors = 0
        self.last_error = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="metrics-sampler", daemon=True)

    def scrape(self) -> None:
        try:
            with urllib.request.urlopen(self.url, timeout=max(1.0, self.interval_s)) as response:
                text = response.read().decode("utf-8", "replace")
        except OSError as error:
            self.errors += 1
            self.last_error = f"{type(error).__name__}: {error}"
            return
        t = self.clock()
        self.samples += [{"t": t, **row} for row in parse_metrics(text)]

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.scrape()

    def start(self) -> None:
        self.scrape()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.scrape()


class LoadGenerator:
    """Runs one workload against one target; `run()` returns the record the report is built from."""

    def __init__(
        self,
        target: str,
        workload: Workload,
        metrics_url: str | None = None,
        progress: bool = True,
        api_key: str | None = None,
    ) -> None:
        from serve.client import VideogenClient

        self.target = target
        self.workload = workload
        self.metrics_url = metrics_url
        self.show_progress = progress
        self.client = VideogenClient(target, api_key=api_key)
        self.rng = workload.picker()
        self.lock = threading.Lock()
        self.samples: list[RequestSample] = []
        self.t0 = time.monotonic()
        self.models: dict[str, Any] = {}
        self.bar: Any = None
        self.ids = itertools.count()

    def clock(self) -> float:
        return time.monotonic() - self.t0

    # -- requests ---------------------------------------------------------------------------------
    def _params(self, entry: MixEntry, seed: int) -> Any:
        from serve.api import pb

        info = self.models[entry.model]
        fields: dict[str, Any] = {
            "model": entry.model,
            "prompt": entry.prompt,
            "negative_prompt": entry.negative_prompt,
            "seed": entry.seed if entry.seed is not None else seed,
            "output_format": pb.OUTPUT_FORMAT_GIF if entry.output_format == "gif" else pb.OUTPUT_FORMAT_MP4,
        }
        for name in ("width", "height", "num_frames", "fps", "num_inference_steps", "guidance_scale"):
            if getattr(entry, name) is not None:
                fields[name] = getattr(entry, name)
        if entry.image if entry.image is not None else info.task == pb.TASK_I2V:
            width = entry.image_width or entry.width or info.default_width
            height = entry.image_height or entry.height or info.default_height
            fields["image"] = conditioning_image(width, height)
        return pb.GenerationParams(**fields)

    def _next(self) -> tuple[MixEntry, int]:
        with self.lock:
            return self.workload.choose(self.rng), self.rng.randrange(2**31)

    def _one(
        self,
        sample: RequestSample,
        entry: MixEntry,
        seed: int,
        scheduled: float,
        timeout_s: float | None = None,
    ) -> RequestSample:
        """Send one request (deadline `timeout_s`, default the workload's) and fill in `sample`; never
        raises."""
        sample.sent_s = self.clock()
        deadline = scheduled + (timeout_s or self.workload.request_timeout_s)
        try:
            params = self._params(entry, seed)
            if self.workload.api == "generate":
                self._generate(sample, params, scheduled, deadline)
            else:
                self._job(sample, params, scheduled, deadline)
        except grpc.RpcError as error:
            sample.code = error.code().name if error.code() else "UNKNOWN"
            sample.error = (error.details() or "")[:300]
        except Exception as error:
            from serve.client import IncompleteVideo

            sample.code = INCOMPLETE if isinstance(error, IncompleteVideo) else CLIENT_ERROR
            sample.error = f"{type(error).__name__}: {error}"[:300]
        sample.latency_s = self.clock() - scheduled
        with self.lock:
            self.samples.append(sample)
            if self.bar is not None:
                self.bar.update(1)
                errors = sum(1 for s in self.samples if not s.ok)
                self.bar.set_postfix(phase=sample.phase, level=f"{sample.level:g}", errors=errors)
        return sample

    def _remaining(self, deadline: float) -> float:
        return max(0.001, deadline - self.clock())

    def _finish(self, sample: RequestSample, summary: Any, received: int) -> None:
        sample.code = "OK"
        sample.num_frames = summary.num_frames
        sample.num_inference_steps = summary.num_inference_steps
        sample.width, sample.height = summary.width, summary.height
        sample.video_bytes = received
        sample.server_queue_s = summary.queue_seconds
        sample.server_inference_s = summary.inference_seconds
        sample.server_encode_s = summary.encode_seconds

    def _generate(self, sample: RequestSample, params: Any, scheduled: float, deadline: float) -> None:
        progress = _Progress()

        def on_progress(event: Any) -> None:
            progress.seen(self.clock(), event.stage, event.step, event.elapsed_seconds)

        def on_chunk(chunk: Any) -> None:
            if sample.first_playable_s is None:
                sample.first_playable_s = self.clock() - scheduled

        video = self.client.generate(
            params, on_progress=on_progress, timeout=self._remaining(deadline), on_chunk=on_chunk
        )
        self._finish(sample, video.summary, len(video.data))
        self._progress_times(sample, progress, scheduled)

    def _job(self, sample: RequestSample, params: Any, scheduled: float, deadline: float) -> None:
        from serve.api import pb

        job = self.client.submit(params, timeout=self._remaining(deadline))
        progress = _Progress()
        try:
            for update in self.client.watch(job.job_id, timeout=self._remaining(deadline)):
                stage = update.progress.stage
                if update.state != pb.JOB_STATE_QUEUED and stage in (pb.STAGE_QUEUED, pb.STAGE_UNSPECIFIED):
                    stage = pb.STAGE_PREPARING  # running, or ended before a progress event was seen
                progress.seen(self.clock(), stage, update.progress.step, update.progress.elapsed_seconds)
                job = update
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                self._cancel(job.job_id)
            raise
        self._progress_times(sample, progress, scheduled)
        if job.state == pb.JOB_STATE_SUCCEEDED:
            received = job.summary.video_bytes
            if self.workload.fetch_video:
                received = len(self.client.fetch(job.job_id, timeout=self._remaining(deadline)))
            self._finish(sample, job.summary, received)
            sample.step_s = sample.prepare_s = sample.decode_s = None  # too few events to time steps
        elif job.state == pb.JOB_STATE_CANCELLED:
            sample.code, sample.error = "CANCELLED", job.error[:300]
        else:
            sample.code, sample.error = job.error_code or "UNKNOWN", job.error[:300]

    def _cancel(self, job_id: str) -> None:
        """Leave no load behind: a job whose deadline passed is cancelled (best effort)."""
        with contextlib.suppress(grpc.RpcError):
            self.client.cancel(job_id, timeout=5)

    @staticmethod
    def _progress_times(sample: RequestSample, progress: _Progress, scheduled: float) -> None:
        if progress.first_at is not None:
            sample.first_progress_s = progress.first_at - scheduled
        if progress.running_at is not None:
            sample.queue_wait_s = progress.running_at - scheduled
        sample.step_s, sample.prepare_s, sample.decode_s = progress.stage_times()

    def _sample(self, phase: int, level: float, entry: MixEntry, scheduled: float) -> RequestSample:
        with self.lock:
            index = next(self.ids)
        return RequestSample(
            id=index,
            phase=phase,
            level=level,
            entry=entry.label,
            model=entry.model,
            api=self.workload.api,
            scheduled_s=scheduled,
        )

    # -- phases -----------------------------------------------------------------------------------
    def _closed_phase(self, phase: int, concurrency: int) -> None:
        start = self.clock()
        stop_at = start + self.workload.max_duration_s
        counter = {"sent": 0}

        def client_loop() -> None:
            while True:
                with self.lock:
                    if counter["sent"] >= self.workload.max_requests or self.clock() >= stop_at:
                        return
                    counter["sent"] += 1
                entry, seed = self._next()
                scheduled = self.clock()
                sample = self._sample(phase, float(concurrency), entry, scheduled)
                self._one(sample, entry, seed, scheduled)

        threads = [threading.Thread(target=client_loop, name=f"client-{i}") for i in range(concurrency)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _open_phase(self, phase: int, rate: float) -> None:
        start = self.clock()
        arrivals = self.workload.picker()
        arrivals.seed(f"{self.workload.seed}-arrivals-{phase}")
        at = 0.0
        with ThreadPoolExecutor(self.workload.load.max_in_flight, thread_name_prefix="arrival") as pool:
            for _ in range(self.workload.max_requests):
                at += arrivals.expovariate(rate) if self.workload.load.arrival == "poisson" else 1.0 / rate
                if at > self.workload.max_duration_s:
                    break
                time.sleep(max(0.0, start + at - self.clock()))
                entry, seed = self._next()
                scheduled = start + at
                sample = self._sample(phase, rate, entry, scheduled)
                pool.submit(self._one, sample, entry, seed, scheduled)

    def _warmup(self) -> None:
        """Warm-up requests, model by model. The first one to a model that scaled to zero waits for its
        replica to start: its deadline adds twice the cold start ListModels expects (the last one
        measured, or the configured estimate), so that a busy machine's slower start still fits."""
        for entry in self.workload.mix:
            cold_start_s = self.models[entry.model].expected_cold_start_seconds
            for _ in range(self.workload.warmup_requests):
                scheduled = self.clock()
                sample = self._sample(WARMUP_PHASE, 0.0, entry, scheduled)
                timeout_s = self.workload.request_timeout_s + 2 * cold_start_s
                self._one(sample, entry, self.rng.randrange(2**31), scheduled, timeout_s)

    def _discover(self) -> None:
        deployed = {info.name: info for info in self.client.list_models(timeout=30)}
        missing = sorted({entry.model for entry in self.workload.mix} - set(deployed))
        if missing:
            raise ValueError(
                f"workload {self.workload.name!r} uses models not deployed at {self.target}: "
                f"{', '.join(missing)}; deployed: {', '.join(sorted(deployed))}"
            )
        self.models = deployed

    def run(self) -> dict[str, Any]:
        """Warm up, run every phase, and return the record of the run (see bench.report)."""
        from tqdm import tqdm

        from serve.api import pb

        self._discover()
        started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        sampler = None
        if self.metrics_url:
            sampler = MetricsSampler(self.metrics_url, self.workload.metrics_interval_s, self.clock)
            sampler.start()
        load = self.workload.load
        warmup = len(self.workload.mix) * self.workload.warmup_requests
        total = len(load.levels) * self.workload.max_requests + warmup
        phases: list[dict[str, Any]] = []
        self.bar = tqdm(total=total, desc=self.workload.name, unit="req", disable=not self.show_progress)
        try:
            self._warmup()
            for index, level in enumerate(load.levels):
                began = self.clock()
                if load.mode == "closed":
                    self._closed_phase(index, int(level))
                else:
                    self._open_phase(index, level)
                phases.append(
                    {
                        "index": index,
                        "mode": load.mode,
                        "level": level,
                        "started_s": began,
                        "ended_s": self.clock(),
                    }
                )
        finally:
            self.bar.close()
            self.bar = None
            if sampler is not None:
                sampler.stop()
            self.client.close()
        deployed = {
            name: {
                "task": pb.Task.Name(info.task),
                "default_width": info.default_width,
                "default_height": info.default_height,
                "default_num_frames": info.default_num_frames,
                "default_num_inference_steps": info.default_num_inference_steps,
                "gpus_per_replica": info.gpus_per_replica,
            }
            for name, info in self.models.items()
            if name in {entry.model for entry in self.workload.mix}
        }
        return {
            "workload": self.workload.model_dump(mode="json"),
            "target": self.target,
            "metrics_url": self.metrics_url,
            "started_at": started_at,
            "duration_s": self.clock(),
            "deployed": deployed,
            "phases": phases,
            "requests": [asdict(s) for s in sorted(self.samples, key=lambda s: (s.scheduled_s, s.id))],
            "metrics": sampler.samples if sampler else [],
            "metrics_scrape_errors": sampler.errors if sampler else 0,
            "metrics_last_error": sampler.last_error if sampler else "",
        }


def run_workload(
    target: str, workload: Workload, metrics_url: str | None = None, progress: bool = True
) -> dict[str, Any]:
    """Run `workload` against `target` (HOST:PORT) and return the run record."""
    return LoadGenerator(target, workload, metrics_url, progress).run()
