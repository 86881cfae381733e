"""The ingress deployment: the RPCs of videogen.v1.VideoGeneration, routing, jobs.

Served by Ray Serve's own gRPC proxy: each method is named after its RPC. Errors become gRPC
statuses in `_status`, in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator
from typing import Any

import grpc
from ray.exceptions import RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from ray.serve.handle import DeploymentHandle

from serve import wire
from serve.admission import Admission
from serve.api import pb
from serve.auth import Authenticator, Caller
from serve.catalog import get_spec
from serve.cold_start import expected_cold_start
from serve.config import AppConfig
from serve.engine import EncodedVideo, ProgressEvent
from serve.errors import InvalidArgument, NotFound, ResourceExhausted, VideogenError
from serve.jobs import JobRecord, job_store
from serve.metrics import metrics
from serve.request import GenerationRequest, build_request
from serve.results import ResultStore

log = logging.getLogger(__name__)

WATCH_POLL_S = 10.0
ENDED_CACHE_SIZE = 10_000
MAX_CHUNK_BYTES = 4 << 20


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
        # Ray's own text runs to many lines of actor details; its first line says what happened.
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        return grpc.StatusCode.UNAVAILABLE, f"model replica unavailable: {first_line}"
    log.exception("unexpected error", exc_info=error)
    return grpc.StatusCode.INTERNAL, f"{type(error).__name__}: {error}"


class RpcAborted(Exception):
    """Ends a streaming RPC whose status is already set: Serve's proxy applies it only on a raise."""


def _count(rpc: str, model: str, code: grpc.StatusCode) -> None:
    metrics().requests.inc(tags={"rpc": rpc, "model": model or "", "code": code.name})


def _fail(context: Any, error: BaseException, rpc: str, model: str = "") -> None:
    code, message = _status(error)
    _count(rpc, model, code)
    context.set_code(code)
    context.set_details(message)


def _abort_stream(context: Any, error: BaseException, rpc: str, model: str = "") -> RpcAborted:
    _fail(context, error, rpc, model)
    return RpcAborted(context.details())


def _own_actor() -> Any:
    """This replica's actor handle: the job store watches it while it holds queued jobs."""
    import ray

    try:
        return ray.get_runtime_context().current_actor
    except Exception:  # not in a Ray actor (unit tests)
        return None


class Router:
    """Validates requests against the catalog and routes them to the model deployments."""

    def __init__(self, config: AppConfig, models: dict[str, DeploymentHandle]) -> None:
        self.config = config
        self.models = models
        self.results = ResultStore(config.results_dir)
        self.jobs = job_store(str(self.results.root / "jobs"), config.job_ttl_s, config.job_sweep_interval_s)
        self.auth = Authenticator(config.auth)
        # Open Generate calls per caller in this replica: they count against max_concurrent_jobs.
        self.streams: Counter[str] = Counter()
        self.actor = _own_actor()
        self.pending: set[asyncio.Task] = set()
        self.admission = Admission(config.models)
        # Ended jobs never change again: answer GetJob/FetchVideo for them without the job store.
        self.ended: OrderedDict[str, JobRecord] = OrderedDict()

    def _request(self, params: pb.GenerationParams) -> GenerationRequest:
        if not params.model:
            raise InvalidArgument("model", f"is required; deployed: {', '.join(sorted(self.models))}")
        deployment = self.config.model(params.model)
        if deployment is None:
            raise NotFound(
                f"model {params.model!r} is not deployed; deployed: {', '.join(sorted(self.models))}"
            )
        spec = get_spec(deployment.name)
        return build_request(
            spec,
            spec.limits_for(deployment.tiny),
            wire.request_fields(params),
            max_video_pixels=deployment.video_pixel_budget(),
        )

    def _caller(self, grpc_context: Any) -> Caller:
        """Who is calling (UNAUTHENTICATED without a valid key when auth is on)."""
        metadata = grpc_context.invocation_metadata() if grpc_context is not None else []
        return self.auth.authenticate(metadata)

    @contextlib.asynccontextmanager
    async def _generate_quota(self, caller: Caller) -> AsyncIterator[None]:
        """Count a Generate call against the caller's quota, together with its unfinished jobs."""
        self.streams[caller.name] += 1
        try:
            limit = caller.max_concurrent_jobs
            if limit is not None:
                position = self.streams[caller.name]
                active = await self.jobs.call.remote("active", caller.name)
                if position + active > limit:
                    raise ResourceExhausted(
                        f"caller {caller.name!r} is at its max_concurrent_jobs quota ({limit}): "
                        f"{active} jobs unfinished, {position - 1} Generate calls open; retry when one ends"
                    )
            yield
        finally:
            self.streams[caller.name] -= 1

    def _job_quota(self, caller: Caller) -> int | None:
        """Unfinished jobs the caller may hold, less its open Generate calls here (None: no quota)."""
        limit = caller.max_concurrent_jobs
        return None if limit is None else limit - self.streams[caller.name]

    def _set_in_flight(self, model: str) -> None:
        metrics().in_flight.set(self.admission.in_flight[model], tags={"model": model})

    async def _job(self, job_id: str, caller: Caller) -> JobRecord:
        """The caller's job; another caller's is NOT_FOUND, as if it did not exist."""
        record = self.ended.get(job_id)
        if record is None:
            record = await self.jobs.call.remote("get", job_id, caller.scope)
            if record.ended:
                self.ended[job_id] = record
                while len(self.ended) > ENDED_CACHE_SIZE:
                    self.ended.popitem(last=False)
        elif caller.scope is not None and record.owner != caller.scope:
            raise NotFound(f"job {job_id} does not exist")
        return record

    async def ListModels(
        self, request: pb.ListModelsRequest, grpc_context: Any = None
    ) -> pb.ListModelsResponse:
        try:
            self._caller(grpc_context)
        except VideogenError as error:
            _fail(grpc_context, error, "ListModels")
            return pb.ListModelsResponse()
        models = [
            wire.model_info(get_spec(m.name), m, expected_cold_start(self.results.root, m))
            for m in self.config.models
        ]
        _count("ListModels", "", grpc.StatusCode.OK)
        return pb.ListModelsResponse(models=models)

    async def Generate(
        self, request: pb.GenerateRequest, grpc_context: Any = None
    ) -> AsyncIterator[pb.GenerateResponse]:
        received = time.time()
        model = request.params.model
        try:
            caller = self._caller(grpc_context)
            generation = self._request(request.params)
            async with self._generate_quota(caller):
                with self.admission.slot(model):
                    self._set_in_flight(model)
                    async for response in self._generate(generation, received):
                        yield response
            _count("Generate", model, grpc.StatusCode.OK)
            metrics().request_latency.observe(
                time.time() - received, tags={"rpc": "Generate", "model": model}
            )
        except asyncio.CancelledError:
            _count("Generate", model, grpc.StatusCode.CANCELLED)
            raise
        except Exception as error:
            raise _abort_stream(grpc_context, error, "Generate", model) from None
        finally:
            if model in self.admission.limits:
                self._set_in_flight(model)

    async def _generate(
        self, generation: GenerationRequest, received: float
    ) -> AsyncIterator[pb.GenerateResponse]:
        yield pb.GenerateResponse(progress=wire.progress(queued=True))
        stream = self.models[generation.model].options(stream=True).generate.remote(generation, received)
        queue_s = None
        async for event in stream:
            if queue_s is None:
                queue_s = time.time() - received
            if isinstance(event, ProgressEvent):
                yield pb.GenerateResponse(progress=wire.progress(event))
                continue
            video: EncodedVideo = event
            chunk_bytes = self.config.router.chunk_bytes
            for offset in range(0, len(video.data), chunk_bytes):
                chunk = pb.VideoChunk(
                    data=video.data[offset : offset + chunk_bytes],
                    offset=offset,
                    total_bytes=len(video.data),
                    mime_type=video.mime_type,
                )
                yield pb.GenerateResponse(chunk=chunk)
            summary = wire.summary_dict(generation, video, queue_s or 0.0, time.time() - received)
            yield pb.GenerateResponse(summary=wire.summary(summary))

    async def SubmitJob(self, request: pb.SubmitJobRequest, grpc_context: Any = None) -> pb.Job:
        model = request.params.model
        try:
            caller = self._caller(grpc_context)
            generation = self._request(request.params)
            self.admission.acquire(model)
            try:
                record, created = await self.jobs.call.remote(
                    "create",
                    model,
                    request.idempotency_key,
                    owner=caller.name,
                    max_active=self._job_quota(caller),
                    holder=self.actor,
                )
            except BaseException:
                self.admission.release(model)
                raise
            if not created:
                self.admission.release(model)
            else:
                task = asyncio.ensure_future(self._dispatch(record.job_id, generation, time.time()))
                self.pending.add(task)
                task.add_done_callback(self.pending.discard)
            self._set_in_flight(model)
            _count("SubmitJob", model, grpc.StatusCode.OK)
            return wire.job(record)
        except Exception as error:
            _fail(grpc_context, error, "SubmitJob", model)
            return pb.Job()

    async def _dispatch(self, job_id: str, generation: GenerationRequest, submitted_at: float) -> None:
        """Hand a job to its model; the replica records progress and the outcome itself."""
        try:
            await self.models[generation.model].run_job.remote(job_id, generation, submitted_at)
        except Exception as error:
            # Backpressure, or the replica died mid-job: the job must not stay QUEUED/RUNNING.
            code, message = _status(error)
            await self.jobs.call.remote("fail", job_id, code.name, message)
        finally:
            self.admission.release(generation.model)
            self._set_in_flight(generation.model)

    async def GetJob(self, request: pb.GetJobRequest, grpc_context: Any = None) -> pb.Job:
        try:
            record = await self._job(request.job_id, self._caller(grpc_context))
            _count("GetJob", record.model, grpc.StatusCode.OK)
            return wire.job(record)
        except Exception as error:
            _fail(grpc_context, error, "GetJob")
            return pb.Job()

    async def WatchJob(self, request: pb.WatchJobRequest, grpc_context: Any = None) -> AsyncIterator[pb.Job]:
        try:
            caller = self._caller(grpc_context)
            record = await self._job(request.job_id, caller)
            yield wire.job(record)
            while not record.ended:
                record = await self.jobs.wait.remote(
                    request.job_id, record.version, WATCH_POLL_S, caller.scope
                )
                yield wire.job(record)
            _count("WatchJob", record.model, grpc.StatusCode.OK)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            raise _abort_stream(grpc_context, error, "WatchJob") from None

    async def CancelJob(self, request: pb.CancelJobRequest, grpc_context: Any = None) -> pb.Job:
        try:
            caller = self._caller(grpc_context)
            record = await self.jobs.call.remote("cancel", request.job_id, caller.scope)
            _count("CancelJob", record.model, grpc.StatusCode.OK)
            return wire.job(record)
        except Exception as error:
            _fail(grpc_context, error, "CancelJob")
            return pb.Job()

    async def FetchVideo(
        self, request: pb.FetchVideoRequest, grpc_context: Any = None
    ) -> AsyncIterator[pb.VideoChunk]:
        try:
            caller = self._caller(grpc_context)
            if not 0 <= request.chunk_bytes <= MAX_CHUNK_BYTES:
                raise InvalidArgument(
                    "chunk_bytes", f"{request.chunk_bytes} is outside [0, {MAX_CHUNK_BYTES}]"
                )
            record = await self._job(request.job_id, caller)
            if record.summary is None:
                raise NotFound(f"job {request.job_id} has no video: it is {record.state.value}")
            chunk_bytes = request.chunk_bytes or self.config.router.chunk_bytes
            mime_type = record.summary["mime_type"]
            for offset, total, data in self.results.chunks(request.job_id, chunk_bytes):
                yield pb.VideoChunk(data=data, offset=offset, total_bytes=total, mime_type=mime_type)
            _count("FetchVideo", record.model, grpc.StatusCode.OK)
        except Exception as error:
            raise _abort_stream(grpc_context, error, "FetchVideo") from None

    async def __del__(self) -> None:
        """Serve calls this once the Router's RPCs have drained: let the jobs it queued reach a replica.

        Bounded by the deployment's graceful shutdown timeout; jobs still queued when Serve stops the
        process are failed by the job store's sweep.
        """
        if self.pending:
            await asyncio.gather(*list(self.pending), return_exceptions=True)

    async def Check(self, request: Any, grpc_context: Any = None) -> Any:
        """grpc.health.v1 Check: SERVING while this Router replica runs."""
        from grpc_health.v1 import health_pb2

        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)
