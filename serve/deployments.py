"""The model deployments and the one builder that turns configuration into a Serve application."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import ray
from PIL import Image
from ray import serve
from ray.serve import Application

from serve.admission import capacity
from serve.catalog import Task, get_spec
from serve.cold_start import record_cold_start
from serve.config import ROUTER_DEPLOYMENT, AppConfig, JobStoreSettings, ModelDeployment
from serve.engine import Engine
from serve.errors import Cancelled, error_status
from serve.events import (
    EncodedVideo,
    GenerationSummary,
    PieceCallback,
    ProgressCallback,
    ProgressEvent,
    Stage,
    StreamItem,
)
from serve.jobs import job_store
from serve.metrics import metrics, record_memory, sample_memory_forever
from serve.request import GenerationRequest, RequestFields, build_request
from serve.results import ResultStore

log = logging.getLogger(__name__)


def _make_engine(model: ModelDeployment) -> Any:
    spec = get_spec(model.name)
    if model.parallel is not None:
        from parallel.group import GroupTimeouts, ParallelEngine

        timeouts = GroupTimeouts(request_s=model.request_timeout_s)
        return ParallelEngine(
            spec, model.weights, model.memory, model.parallel, timeouts, compile=model.compile
        )
    return Engine(
        spec, model.weights, model.memory, num_threads=max(1, round(model.num_cpus)), compile=model.compile
    )


def warmup_request(model: ModelDeployment) -> GenerationRequest:
    """What a replica runs before it takes traffic: the default request, `compile.warmup_steps` steps."""
    spec = get_spec(model.name)
    limits = spec.limits_for(model.tiny)
    image = b""
    if spec.task is Task.I2V:
        buffer = io.BytesIO()
        Image.new("RGB", (limits.default_width, limits.default_height), (128, 128, 128)).save(buffer, "PNG")
        image = buffer.getvalue()
    steps = model.compile.warmup_steps if model.compile is not None else 1
    fields = RequestFields(model=model.name, prompt="warm-up", image=image, seed=0, num_inference_steps=steps)
    return build_request(spec, limits, fields, default_cache=model.default_cache())


class _Observer:
    """Per-request bookkeeping of a replica: step times and throughput into the metrics."""

    def __init__(self, model: str, forward: Any) -> None:
        self.model = model
        self.forward = forward
        self.last_step_at: float | None = None

    def __call__(self, event: ProgressEvent) -> None:
        if event.stage is Stage.DENOISING:
            now = time.perf_counter()
            if self.last_step_at is not None:
                metrics().step_time.observe(now - self.last_step_at, tags={"model": self.model})
            self.last_step_at = now
        elif event.stage is Stage.PREPARING:
            self.last_step_at = time.perf_counter()
        self.forward(event)


class ModelServer:
    """One replica of one model: loads its pipeline once, then runs requests one after another."""

    def __init__(
        self,
        model: ModelDeployment,
        results_dir: str,
        job_store_settings: JobStoreSettings | None = None,
    ) -> None:
        began = time.perf_counter()
        self.model = model
        self.tags = {"model": model.name}
        self.engine = _make_engine(model)
        # Every generation of this replica runs in this one thread (the pipeline runs one at a time):
        # CPU kernels keep per-thread state, and the same seed must give the same frames on any request.
        self.generator = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generate")
        self.engine.load()
        self.warmup_seconds = self._warm_up() if model.compile is not None else 0.0
        self.results = ResultStore(results_dir)
        self.jobs = job_store(str(self.results.root), job_store_settings)
        # The job store watches this actor while it runs a job: if the process dies, the job fails.
        self.actor = ray.get_runtime_context().current_actor
        metrics().model_load.observe(self.engine.load_seconds, tags=self.tags)
        cold_start_s = self.cold_start_s = time.perf_counter() - began
        metrics().cold_start.set(cold_start_s, tags=self.tags)
        # Kept beyond this replica: ListModels states it while the model is scaled to zero.
        record_cold_start(self.results.root, model, cold_start_s)
        # A multi-GPU replica's process holds no weights: its rank actors report their own memory.
        # Ray's exporter drops a gauge that is not set again: the cold start is set again each time.
        sample_memory_forever(
            model.name,
            memory=model.parallel is None,
            also=lambda: metrics().cold_start.set(self.cold_start_s, tags=self.tags),
        )

    def _warm_up(self) -> float:
        """Run the warm-up request in the generation thread (compiling there); returns its seconds."""
        start = time.perf_counter()
        self.generator.submit(self.engine.generate_video, warmup_request(self.model)).result()
        seconds = time.perf_counter() - start
        log.info("%s: warm-up (compile) took %.1fs", self.model.name, seconds)
        return seconds

    def info(self) -> dict[str, Any]:
        """Facts the Router reports in ListModels."""
        return {"load_seconds": self.engine.load_seconds, "warmup_seconds": self.warmup_seconds}

    async def _run(
        self,
        request: GenerationRequest,
        on_progress: ProgressCallback,
        cancel: threading.Event,
        on_piece: PieceCallback | None = None,
    ) -> EncodedVideo:
        """Generate in the executor; count the outcome. A cancelled caller stops it at the next step."""
        loop = asyncio.get_running_loop()
        observer = _Observer(self.model.name, on_progress)
        future = loop.run_in_executor(
            self.generator, self.engine.generate_video, request, observer, cancel, on_piece
        )
        try:
            video = await asyncio.shield(future)
        except asyncio.CancelledError:
            # The caller went away: stop at the next step and keep this replica busy until then,
            # so the next request finds the pipeline free.
            cancel.set()
            with contextlib.suppress(Exception):
                await future
            self._count("cancelled")
            raise
        except Cancelled:
            self._count("cancelled")
            raise
        except Exception:
            self._count("failed")
            raise
        self._count("succeeded")
        metrics().frames.inc(video.num_frames, tags=self.tags)
        metrics().video_seconds.inc(video.num_frames / request.fps, tags=self.tags)
        for stage, seconds in (
            ("text_encode", video.text_encode_seconds),
            ("denoise", video.denoise_seconds),
            ("vae_decode", video.vae_decode_seconds),
            ("video_encode", video.encode_seconds),
        ):
            metrics().stage_time.observe(seconds, tags={**self.tags, "stage": stage})
        skipped = video.transformer_forwards_skipped
        metrics().transformer_forwards.inc(
            video.transformer_forwards - skipped, tags={**self.tags, "outcome": "computed"}
        )
        if skipped:
            metrics().transformer_forwards.inc(skipped, tags={**self.tags, "outcome": "skipped"})
        metrics().job_peak_memory.set(
            video.peak_memory_bytes, tags={**self.tags, "device": self.engine.memory_device}
        )
        if self.model.parallel is None:
            record_memory(self.model.name)
        return video

    def _count(self, outcome: str) -> None:
        metrics().generations.inc(tags={**self.tags, "outcome": outcome})

    async def _stream(
        self,
        request: GenerationRequest,
        received_at: float,
        cancel: threading.Event,
        on_event: ProgressCallback | None = None,
    ) -> AsyncIterator[StreamItem]:
        """The one path of a request through this replica: progress, then the video, as stream items.

        Step events closer together than `progress_interval_s` are coalesced (stage changes and the last
        step always go out), and items go out at most once per interval: what is ready travels together,
        and the video goes with the last events. `on_event` sees every event in the engine's thread,
        where raising stops the run (a job's cancel). A long clip's pieces go out as soon as each is
        encoded, and its final item then carries the video without the bytes already sent.
        """
        queue_s = max(0.0, time.time() - received_at)
        metrics().queue_wait.observe(queue_s, tags=self.tags)
        loop = asyncio.get_running_loop()
        ready: list[ProgressEvent] = []
        wake = asyncio.Event()
        interval = self.model.progress_interval_s
        last_step_sent = 0.0

        def on_progress(event: ProgressEvent) -> None:
            nonlocal last_step_sent
            if on_event is not None:
                on_event(event)
            if event.stage is Stage.DENOISING and event.step < event.total_steps:
                now = time.monotonic()
                if now - last_step_sent < interval:
                    return
                last_step_sent = now
            loop.call_soon_threadsafe(_append_and_wake, event)

        def _append_and_wake(event: ProgressEvent) -> None:
            ready.append(event)
            wake.set()

        pieces: list[bytes] = []

        def on_piece(piece: bytes) -> None:  # in the encoder's thread
            loop.call_soon_threadsafe(_piece_and_wake, piece)

        def _piece_and_wake(piece: bytes) -> None:
            if not pieces and not sent_pieces:
                metrics().first_playable.observe(time.time() - received_at, tags=self.tags)
            pieces.append(piece)
            wake.set()

        sent_pieces = False
        task = asyncio.ensure_future(self._run(request, on_progress, cancel, on_piece))
        task.add_done_callback(lambda _: wake.set())
        first = True
        try:
            while True:
                await wake.wait()
                if not task.done() and interval > 0 and not pieces:
                    # Let more events gather: one hop per interval, however fast the steps.
                    await asyncio.wait({task}, timeout=interval)
                wake.clear()
                item = StreamItem(
                    events=list(ready), pieces=list(pieces), queue_seconds=queue_s if first else None
                )
                ready.clear()
                pieces.clear()
                sent_pieces = sent_pieces or bool(item.pieces)
                if task.done():
                    video = task.result()
                    item.video = video.without_data() if video.streamed else video
                    yield item
                    return
                if item.events or item.pieces:
                    yield item
                    first = False
        finally:
            if not task.done():
                cancel.set()
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    async def check_health(self) -> None:
        """Serve's health check, every few seconds: raising makes Serve replace this replica, and its
        deployment's status (what KubeRay's RayService status and the per-model grpc.health read) shows
        it meanwhile. A rank of a multi-GPU replica that died while idle is caught here, before a
        request meets it."""
        problem = await asyncio.to_thread(self.engine.health_problem)
        if problem is not None:
            log.error("%s: %s; asking Serve for a new replica", self.model.name, problem)
            raise RuntimeError(problem)

    async def generate(self, request: GenerationRequest, received_at: float) -> AsyncIterator[StreamItem]:
        """Generate: stream items of progress events, the last one with the encoded video."""
        async for item in self._stream(request, received_at, threading.Event()):
            yield item

    async def run_job(self, job_id: str, request: GenerationRequest, submitted_at: float) -> str:
        """Run one async job: state and progress go to the job store, the video to the result store."""
        if not await self.jobs.start.remote(job_id, holder=self.actor):
            return "skipped"
        started = time.time()
        cancel = threading.Event()
        store = self.jobs

        def record_progress(event: ProgressEvent) -> None:
            # In the engine's thread, once per event: the store's answer says whether to stop, so a
            # CancelJob takes effect at the very next step.
            update = (event.stage, event.step, event.total_steps, event.elapsed_seconds, event.section)
            if ray.get(store.progress.remote(job_id, *update, event.total_sections)):
                cancel.set()

        try:
            if self.engine.spec.progressive:
                self.results.start_growing(job_id)
            video: EncodedVideo | None = None
            async for item in self._stream(request, submitted_at, cancel, on_event=record_progress):
                for piece in item.pieces:
                    self.results.append_growing(job_id, piece)
                video = item.video or video
            assert video is not None, "a finished stream ends with the video"
            if video.streamed:
                self.results.finish_growing(job_id, video.mime_type, video.digest)
            else:
                self.results.put(job_id, video.data, video.mime_type)
            summary = GenerationSummary.of(request, video, started - submitted_at, time.time() - submitted_at)
            await self.jobs.succeed.remote(job_id, summary)
            metrics().request_latency.observe(
                time.time() - submitted_at, tags={**self.tags, "rpc": "SubmitJob"}
            )
            return "succeeded"
        except asyncio.CancelledError:
            # Serve cancelled the request (its Router went away, or this replica is being stopped past
            # its grace period): nobody else will record the outcome, so the job must not stay RUNNING.
            self.results.discard_growing(job_id)
            with contextlib.suppress(Exception):
                await asyncio.shield(
                    self.jobs.fail.remote(job_id, "UNAVAILABLE", "interrupted by a shutdown; submit it again")
                )
            raise
        except Exception as exc:
            code, message = error_status(exc)
            if code == "INTERNAL":
                log.exception("job %s failed", job_id)
            self.results.discard_growing(job_id)  # no part of a clip is served as if it were whole
            await self.jobs.fail.remote(job_id, code, message)
            return "cancelled" if code == "CANCELLED" else "failed"


def model_deployment_options(model: ModelDeployment) -> dict[str, Any]:
    """Serve options of one model's deployment."""
    options: dict[str, Any] = {
        "name": model.deployment_name,
        "max_ongoing_requests": model.max_ongoing_requests,
        # The Router admits exactly `capacity(model)` requests (serve/admission.py); Serve's own,
        # approximate limit is set no lower so that it never refuses one the Router admitted.
        "max_queued_requests": -1 if model.max_queued_requests < 0 else capacity(model),
        "autoscaling_config": model.autoscaling.to_serve(),
        "ray_actor_options": {"num_cpus": model.num_cpus, "num_gpus": model.num_gpus},
        "graceful_shutdown_timeout_s": model.request_timeout_s,
        "health_check_timeout_s": 60.0,
    }
    if model.node_labels and model.parallel is None:
        options["ray_actor_options"]["label_selector"] = model.node_labels
    if model.parallel is not None:
        from parallel.group import placement_bundles

        # The replica itself holds no GPU: one rank actor per bundle does.
        options["ray_actor_options"]["num_gpus"] = 0
        bundles = placement_bundles(model.parallel, model.num_cpus, model.num_gpus)
        options["placement_group_bundles"] = bundles
        options["placement_group_strategy"] = "STRICT_PACK"
        if model.node_labels:
            # Every bundle (the replica with rank 0, then one rank each) on a node of the model's pool.
            options["placement_group_bundle_label_selector"] = [model.node_labels] * len(bundles)
    return options


def router_actor_options(config: AppConfig) -> dict[str, Any]:
    """Ray options of a Router replica."""
    options: dict[str, Any] = {"num_cpus": config.router.num_cpus}
    if config.router.node_labels:
        options["label_selector"] = config.router.node_labels
    return options


def build_app(config: AppConfig | dict) -> Application:
    """The Serve application: a Router ingress in front of one deployment per model.

    The one-argument builder that a Serve config file names (`import_path: serve.deployments:build_app`,
    its `args` being the AppConfig), as `serve run`, `serve deploy` and KubeRay's serveConfigV2 call it.
    """
    return build_app_with(config, ModelServer)


def build_app_with(config: AppConfig | dict, model_server_cls: type) -> Application:
    """`build_app` with another ModelServer class (fault tests deploy one that fakes OOM)."""
    from serve.router import Router

    if not isinstance(config, AppConfig):
        config = AppConfig.model_validate(config)
    model_server = serve.deployment(model_server_cls)
    models = {
        model.name: model_server.options(**model_deployment_options(model)).bind(
            model, config.results_dir, config.job_store_settings
        )
        for model in config.models
    }
    # The Router is also Serve's HTTP ingress: the app its replicas build over themselves.
    router = serve.deployment(serve.ingress()(Router)).options(
        name=ROUTER_DEPLOYMENT,
        num_replicas=config.router.num_replicas,
        max_ongoing_requests=config.router.max_ongoing_requests,
        ray_actor_options=router_actor_options(config),
        # A Generate stream lasts as long as its generation: let a stopping Router finish its streams.
        graceful_shutdown_timeout_s=max(model.request_timeout_s for model in config.models),
    )
    return router.bind(config, models)
