"""The model deployments and the one builder that turns configuration into a Serve application."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import ray
from ray import serve
from ray.serve import Application

from serve.catalog import get_spec
from serve.config import AppConfig, ModelDeployment
from serve.engine import EncodedVideo, Engine, ProgressEvent
from serve.errors import Cancelled, VideogenError
from serve.jobs import job_store
from serve.request import GenerationRequest
from serve.results import ResultStore

log = logging.getLogger(__name__)


def _make_engine(model: ModelDeployment) -> Any:
    spec = get_spec(model.name)
    if model.parallel is not None:
        from parallel.group import ParallelEngine

        return ParallelEngine(spec, model.weights, model.memory, model.parallel)
    return Engine(spec, model.weights, model.memory)


class ModelServer:
    """One replica of one model: loads its pipeline once, then runs requests one after another."""

    def __init__(self, model: ModelDeployment, results_dir: str, job_ttl_s: float) -> None:
        self.model = model
        self.engine = _make_engine(model)
        self.engine.load()
        self.results = ResultStore(results_dir)
        self.jobs = job_store(str(self.results.root / "jobs"), job_ttl_s)

    def info(self) -> dict[str, Any]:
        """Facts the Router reports in ListModels."""
        return {"load_seconds": self.engine.load_seconds}

    async def _run(
        self, request: GenerationRequest, on_progress: Any, cancel: threading.Event
    ) -> EncodedVideo:
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(None, self.engine.generate_video, request, on_progress, cancel)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            # The caller went away: stop at the next step and keep this replica busy until then,
            # so the next request finds the pipeline free.
            cancel.set()
            with contextlib.suppress(Exception):
                await future
            raise

    async def generate(self, request: GenerationRequest) -> AsyncIterator[ProgressEvent | EncodedVideo]:
        """Stream progress events, then the encoded video (Generate)."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[ProgressEvent] = asyncio.Queue()
        cancel = threading.Event()

        def on_progress(event: ProgressEvent) -> None:
            loop.call_soon_threadsafe(events.put_nowait, event)

        task = asyncio.ensure_future(self._run(request, on_progress, cancel))
        try:
            while not task.done() or not events.empty():
                getter = asyncio.ensure_future(events.get())
                await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    yield getter.result()
                else:
                    getter.cancel()
            yield task.result()
        finally:
            if not task.done():
                cancel.set()
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    async def run_job(self, job_id: str, request: GenerationRequest, submitted_at: float) -> str:
        """Run one async job: state and progress go to the job store, the video to the result store."""
        if not await self.jobs.call.remote("start", job_id):
            return "skipped"
        started = time.time()
        cancel = threading.Event()
        store = self.jobs

        def on_progress(event: ProgressEvent) -> None:
            # Runs in the engine's thread once per step; the answer says whether to stop.
            stop = ray.get(
                store.call.remote(
                    "progress",
                    job_id,
                    event.stage.value,
                    event.step,
                    event.total_steps,
                    event.elapsed_seconds,
                )
            )
            if stop:
                cancel.set()

        try:
            video = await self._run(request, on_progress, cancel)
            self.results.put(job_id, video.data, video.mime_type)
            from serve.wire import summary_dict

            summary = summary_dict(request, video, started - submitted_at, time.time() - submitted_at)
            await self.jobs.call.remote("succeed", job_id, summary)
            return "succeeded"
        except Cancelled as exc:
            await self.jobs.call.remote("fail", job_id, "CANCELLED", str(exc))
            return "cancelled"
        except VideogenError as exc:
            await self.jobs.call.remote("fail", job_id, exc.code, exc.message)
            return "failed"
        except Exception as exc:
            log.exception("job %s failed", job_id)
            await self.jobs.call.remote("fail", job_id, "INTERNAL", f"{type(exc).__name__}: {exc}")
            return "failed"


def model_deployment_options(model: ModelDeployment) -> dict[str, Any]:
    """Serve options of one model's deployment."""
    options: dict[str, Any] = {
        "name": model.deployment_name,
        "max_ongoing_requests": model.max_ongoing_requests,
        "max_queued_requests": model.max_queued_requests,
        "autoscaling_config": model.autoscaling.to_serve(),
        "ray_actor_options": {"num_cpus": model.num_cpus, "num_gpus": model.num_gpus},
        "graceful_shutdown_timeout_s": model.request_timeout_s,
        "health_check_timeout_s": 60.0,
    }
    if model.parallel is not None:
        from parallel.group import placement_bundles

        # The replica itself holds no GPU: one rank actor per bundle does.
        options["ray_actor_options"] = {"num_cpus": model.num_cpus, "num_gpus": 0}
        options["placement_group_bundles"] = placement_bundles(model.parallel, model.num_cpus, model.num_gpus)
        options["placement_group_strategy"] = "STRICT_PACK"
    return options


def build_app(config: AppConfig | dict) -> Application:
    """The Serve application: a Router ingress in front of one deployment per model."""
    from serve.router import Router

    if not isinstance(config, AppConfig):
        config = AppConfig.model_validate(config)
    model_server = serve.deployment(ModelServer)
    models = {
        model.name: model_server.options(**model_deployment_options(model)).bind(
            model, config.results_dir, config.job_ttl_s
        )
        for model in config.models
    }
    router = serve.deployment(Router).options(
        name="Router",
        num_replicas=config.router.num_replicas,
        max_ongoing_requests=config.router.max_ongoing_requests,
        ray_actor_options={"num_cpus": config.router.num_cpus},
    )
    return router.bind(config, models)
