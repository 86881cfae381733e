"""The ingress deployment: the RPCs of videogen.v1.VideoGeneration, routing, jobs.

Served by Ray Serve's own gRPC proxy: each method is named after its RPC. Errors become gRPC
statuses in `_status`, in one place.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
from ray.exceptions import RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from ray.serve.handle import DeploymentHandle

from serve import wire
from serve.api import pb
from serve.catalog import get_spec
from serve.config import AppConfig
from serve.engine import EncodedVideo, ProgressEvent
from serve.errors import InvalidArgument, NotFound, VideogenError
from serve.jobs import job_store
from serve.request import GenerationRequest, build_request
from serve.results import ResultStore

log = logging.getLogger(__name__)

WATCH_POLL_S = 10.0


def _status(error: BaseException) -> tuple[grpc.StatusCode, str]:
    """The gRPC status and message for an exception raised while serving."""
    if isinstance(error, RayTaskError):
        cause = error.as_instanceof_cause()
        if isinstance(cause, VideogenError | BackPressureError):
            error = cause
    if isinstance(error, VideogenError):
        return grpc.StatusCode[error.code], error.message
    if isinstance(error, BackPressureError):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, f"too many requests queued for this model: {error}"
    if isinstance(error, DeploymentUnavailableError | RayActorError):
        return grpc.StatusCode.UNAVAILABLE, f"model replica unavailable: {error}"
    log.exception("unexpected error", exc_info=error)
    return grpc.StatusCode.INTERNAL, f"{type(error).__name__}: {error}"


class RpcAborted(Exception):
    """Ends a streaming RPC whose status is already set: Serve's proxy applies it only on a raise."""


def _fail(context: Any, error: BaseException) -> None:
    code, message = _status(error)
    context.set_code(code)
    context.set_details(message)


def _abort_stream(context: Any, error: BaseException) -> RpcAborted:
    _fail(context, error)
    return RpcAborted(context.details())


class Router:
    """Validates requests against the catalog and routes them to the model deployments."""

    def __init__(self, config: AppConfig, models: dict[str, DeploymentHandle]) -> None:
        self.config = config
        self.models = models
        self.results = ResultStore(config.results_dir)
        self.jobs = job_store(str(self.results.root / "jobs"), config.job_ttl_s)
        self.pending: set[asyncio.Task] = set()

    def _request(self, params: pb.GenerationParams) -> GenerationRequest:
        if not params.model:
            raise InvalidArgument("model", f"is required; deployed: {', '.join(sorted(self.models))}")
        deployment = self.config.model(params.model)
        if deployment is None:
            raise NotFound(
                f"model {params.model!r} is not deployed; deployed: {', '.join(sorted(self.models))}"
            )
        spec = get_spec(deployment.name)
        return build_request(spec, spec.limits_for(deployment.tiny), wire.request_fields(params))

    async def ListModels(
        self, request: pb.ListModelsRequest, grpc_context: Any = None
    ) -> pb.ListModelsResponse:
        models = [wire.model_info(get_spec(m.name), m, 0.0) for m in self.config.models]
        return pb.ListModelsResponse(models=models)

    async def Generate(
        self, request: pb.GenerateRequest, grpc_context: Any = None
    ) -> AsyncIterator[pb.GenerateResponse]:
        received = time.time()
        try:
            generation = self._request(request.params)
            yield pb.GenerateResponse(progress=wire.progress(queued=True))
            stream = self.models[generation.model].options(stream=True).generate.remote(generation)
            queue_s = None
            async for event in stream:
                if queue_s is None:
                    queue_s = time.time() - received
                if isinstance(event, ProgressEvent):
                    yield pb.GenerateResponse(progress=wire.progress(event))
                    continue
                video: EncodedVideo = event
                for offset in range(0, len(video.data), self.config.router.chunk_bytes):
                    data = video.data[offset : offset + self.config.router.chunk_bytes]
                    yield pb.GenerateResponse(
                        chunk=pb.VideoChunk(
                            data=data, offset=offset, total_bytes=len(video.data), mime_type=video.mime_type
                        )
                    )
                summary = wire.summary_dict(generation, video, queue_s or 0.0, time.time() - received)
                yield pb.GenerateResponse(summary=wire.summary(summary))
        except asyncio.CancelledError:
            raise
        except Exception as error:
            raise _abort_stream(grpc_context, error) from None

    async def SubmitJob(self, request: pb.SubmitJobRequest, grpc_context: Any = None) -> pb.Job:
        try:
            generation = self._request(request.params)
            record, created = await self.jobs.call.remote("create", generation.model, request.idempotency_key)
            if created:
                task = asyncio.ensure_future(self._dispatch(record.job_id, generation, time.time()))
                self.pending.add(task)
                task.add_done_callback(self.pending.discard)
            return wire.job(record)
        except Exception as error:
            _fail(grpc_context, error)
            return pb.Job()

    async def _dispatch(self, job_id: str, generation: GenerationRequest, submitted_at: float) -> None:
        """Hand a job to its model; the replica records progress and the outcome itself."""
        try:
            await self.models[generation.model].run_job.remote(job_id, generation, submitted_at)
        except Exception as error:
            # Backpressure, or the replica died mid-job: the job must not stay QUEUED/RUNNING.
            code, message = _status(error)
            await self.jobs.call.remote("fail", job_id, code.name, message)

    async def GetJob(self, request: pb.GetJobRequest, grpc_context: Any = None) -> pb.Job:
        try:
            return wire.job(await self.jobs.call.remote("get", request.job_id))
        except Exception as error:
            _fail(grpc_context, error)
            return pb.Job()

    async def WatchJob(self, request: pb.WatchJobRequest, grpc_context: Any = None) -> AsyncIterator[pb.Job]:
        try:
            record = await self.jobs.call.remote("get", request.job_id)
            yield wire.job(record)
            while not record.ended:
                record = await self.jobs.wait.remote(request.job_id, record.version, WATCH_POLL_S)
                yield wire.job(record)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            raise _abort_stream(grpc_context, error) from None

    async def CancelJob(self, request: pb.CancelJobRequest, grpc_context: Any = None) -> pb.Job:
        try:
            return wire.job(await self.jobs.call.remote("cancel", request.job_id))
        except Exception as error:
            _fail(grpc_context, error)
            return pb.Job()

    async def FetchVideo(
        self, request: pb.FetchVideoRequest, grpc_context: Any = None
    ) -> AsyncIterator[pb.VideoChunk]:
        try:
            record = await self.jobs.call.remote("get", request.job_id)
            if record.summary is None:
                raise NotFound(f"job {request.job_id} has no video: it is {record.state.value}")
            if not 0 <= request.chunk_bytes <= 4 << 20:
                raise InvalidArgument("chunk_bytes", f"{request.chunk_bytes} is outside [0, {4 << 20}]")
            chunk_bytes = request.chunk_bytes or self.config.router.chunk_bytes
            mime_type = record.summary["mime_type"]
            for offset, total, data in self.results.chunks(request.job_id, chunk_bytes):
                yield pb.VideoChunk(data=data, offset=offset, total_bytes=total, mime_type=mime_type)
        except Exception as error:
            raise _abort_stream(grpc_context, error) from None

    async def Check(self, request: Any, grpc_context: Any = None) -> Any:
        """grpc.health.v1 Check: SERVING while this Router replica runs."""
        from grpc_health.v1 import health_pb2

        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)
