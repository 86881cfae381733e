"""The ingress deployment: the RPCs of videogen.v1.VideoGeneration, routing, jobs.

Served by Ray Serve's own gRPC proxy: each method is named after its RPC. The scaffolding every RPC
shares (errors to gRPC statuses, the status count) lives in `unary_rpc` and `stream_rpc`, once.
Imports no torch: the types that cross from the model replicas come from `serve.events`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import grpc
from ray.serve.handle import DeploymentHandle

from serve import wire
from serve.admission import Admission
from serve.api import pb
from serve.auth import Authenticator, Caller
from serve.catalog import get_spec
from serve.cold_start import expected_cold_start
from serve.config import MAX_CHUNK_BYTES, AppConfig, ModelDeployment
from serve.errors import (
    Aborted,
    InvalidArgument,
    JobEnded,
    NotFound,
    QuotaExceeded,
    ResourceExhausted,
    error_status,
    is_quota_refusal,
    replica_died,
)
from serve.events import GenerationSummary, StreamItem
from serve.health import API_SERVICE, ModelHealth
from serve.job_records import JobState
from serve.jobs import JobRecord, job_store
from serve.metrics import GAUGE_REFRESH_S, metrics
from serve.request import GenerationRequest, RequestFields, build_request
from serve.results import PROGRESSIVE_MIME, ResultStore
from serve.webhooks import check_url

log = logging.getLogger(__name__)

WATCH_POLL_S = 10.0
FOLLOW_POLL_S = 0.2  # how often a viewer of a running long clip looks for its next section
ENDED_CACHE_SIZE = 10_000
# How long this replica answers for an ended job without asking the job store: ended jobs change only
# when deleted, which another Router replica may do.
ENDED_CACHE_TTL_S = 10.0


class RpcAborted(Exception):
    """Ends a streaming RPC whose status is already set: Serve's proxy applies it only on a raise."""


class Call:
    """One RPC being served: its name, and the model it concerns once known (for the status count)."""

    def __init__(self, rpc: str) -> None:
        self.rpc = rpc
        self.model = ""

    def count(self, code: grpc.StatusCode) -> None:
        metrics().requests.inc(tags={"rpc": self.rpc, "model": self.model, "code": code.name})

    def fail(self, context: Any, error: BaseException) -> str:
        """Set the status `error` maps to on the call (one mapping: serve.errors.error_status)."""
        code, message = error_status(error)
        if code == "INTERNAL":
            log.exception("unexpected error in %s", self.rpc, exc_info=error)
        self.count(grpc.StatusCode[code])
        if is_quota_refusal(error):
            metrics().quota_refusals.inc(tags={"rpc": self.rpc, "model": self.model})
        if context is not None:
            context.set_code(grpc.StatusCode[code])
            context.set_details(message)
        return message


UnaryHandler = Callable[[Any, Any, Any, Call], Awaitable[Any]]
StreamHandler = Callable[[Any, Any, Any, Call], AsyncIterator[Any]]


def unary_rpc(empty: Callable[[], Any]) -> Callable[[UnaryHandler], Any]:
    """An RPC answered once: a raised error becomes its status and `empty()` the reply; counted either way."""

    def decorate(handler: UnaryHandler) -> Any:
        async def method(self: Any, request: Any, grpc_context: Any = None) -> Any:
            call = Call(handler.__name__)
            try:
                reply = await handler(self, request, grpc_context, call)
            except Exception as error:
                call.fail(grpc_context, error)
                return empty()
            call.count(grpc.StatusCode.OK)
            return reply

        method.__name__ = method.__qualname__ = handler.__name__
        method.__doc__ = handler.__doc__
        return method

    return decorate


def stream_rpc(handler: StreamHandler) -> Any:
    """A server-streaming RPC: a raised error ends the stream with its status; counted either way."""

    async def method(self: Any, request: Any, grpc_context: Any = None) -> AsyncIterator:
        call = Call(handler.__name__)
        try:
            async for reply in handler(self, request, grpc_context, call):
                yield reply
        except asyncio.CancelledError:
            call.count(grpc.StatusCode.CANCELLED)
            raise
        except Exception as error:
            raise RpcAborted(call.fail(grpc_context, error)) from None
        call.count(grpc.StatusCode.OK)

    method.__name__ = method.__qualname__ = handler.__name__
    method.__doc__ = handler.__doc__
    return method


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
        self.jobs = job_store(str(self.results.root), config.job_store_settings)
        self.auth = Authenticator(config.auth)
        # Open Generate calls per caller in this replica: they count against max_concurrent_jobs.
        self.streams: Counter[str] = Counter()
        self.actor = _own_actor()
        self.pending: set[asyncio.Task] = set()
        self.admission = Admission(config.models)
        self.health = ModelHealth()
        self.queued: Counter[str] = Counter()  # admitted Generate calls no replica has started yet
        # Ended jobs never change again: answer GetJob/FetchVideo for them without the job store.
        self.ended: OrderedDict[str, tuple[float, JobRecord]] = OrderedDict()
        threading.Thread(target=self._refresh_gauges, daemon=True, name="gauge-refresh").start()
        # Serve constructs replicas on their event loop; built elsewhere (a test), nothing is claimed.
        with contextlib.suppress(RuntimeError):
            self.claimer = asyncio.get_running_loop().create_task(self._claim_forever())

    def _refresh_gauges(self) -> None:
        """Set every model's in-flight and queued gauges again and again: Ray drops series left unset."""
        while True:
            for model in self.admission.limits:
                with contextlib.suppress(Exception):
                    self._set_in_flight(model)
            time.sleep(GAUGE_REFRESH_S)

    def _request(self, fields: RequestFields) -> GenerationRequest:
        """The caller's fields checked against the deployed model's limits (one rule set, both APIs)."""
        deployment = self.deployment(fields.model)
        spec = get_spec(deployment.name)
        return build_request(
            spec,
            spec.limits_for(deployment.tiny),
            fields,
            max_video_pixels=deployment.video_pixel_budget(),
            default_cache=deployment.default_cache(),
        )

    def deployment(self, model: str) -> ModelDeployment:
        """The deployed model named `model`: INVALID_ARGUMENT when unnamed, NOT_FOUND when not deployed."""
        if not model:
            raise InvalidArgument("model", f"is required; deployed: {', '.join(sorted(self.models))}")
        deployment = self.config.model(model)
        if deployment is None:
            raise NotFound(f"model {model!r} is not deployed; deployed: {', '.join(sorted(self.models))}")
        return deployment

    def _caller(self, grpc_context: Any) -> Caller:
        """Who is calling (UNAUTHENTICATED without a valid key when auth is on)."""
        metadata = grpc_context.invocation_metadata() if grpc_context is not None else []
        return self.auth.authenticate(metadata)

    def __serve_build_asgi_app__(self) -> Any:
        """Serve's HTTP ingress of this replica: the OpenAI-compatible videos API (serve/http_api.py)."""
        from serve.http_api import build_http_app

        return build_http_app(self)

    @contextlib.asynccontextmanager
    async def _generate_quota(self, caller: Caller) -> AsyncIterator[None]:
        """Count a Generate call against the caller's quota, together with its unfinished jobs."""
        self.streams[caller.name] += 1
        try:
            limit = caller.max_concurrent_jobs
            if limit is not None:
                position = self.streams[caller.name]
                active = await self.jobs.active.remote(caller.name)
                if position + active > limit:
                    raise QuotaExceeded(
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
        metrics().queued.set(self.queued[model], tags={"model": model})

    @contextlib.contextmanager
    def _waiting(self, model: str) -> Iterator[Callable[[], None]]:
        """Count a Generate call as queued until the returned `started()` is called (or it ends)."""
        waiting = True

        def started() -> None:
            nonlocal waiting
            if waiting:
                waiting = False
                self.queued[model] -= 1
                self._set_in_flight(model)

        self.queued[model] += 1
        try:
            yield started
        finally:
            started()

    async def find_job(self, job_id: str, caller: Caller) -> JobRecord:
        """The caller's job; another caller's is NOT_FOUND, as if it did not exist."""
        cached = self.ended.get(job_id)
        if cached is None or time.monotonic() - cached[0] > ENDED_CACHE_TTL_S:
            record = await self.jobs.get.remote(job_id, caller.scope)
            if record.ended:
                self.ended[job_id] = (time.monotonic(), record)
                while len(self.ended) > ENDED_CACHE_SIZE:
                    self.ended.popitem(last=False)
            return record
        record = cached[1]
        if caller.scope is not None and record.owner != caller.scope:
            raise NotFound(f"job {job_id} does not exist")
        return record

    async def delete_job(self, job_id: str, caller: Caller) -> JobRecord:
        """Forget the caller's job and its video (a running one is cancelled first)."""
        record = await self.jobs.delete.remote(job_id, caller.scope)
        self.ended.pop(job_id, None)
        return record

    async def list_jobs(
        self, caller: Caller, after: str, limit: int, newest_first: bool
    ) -> tuple[list[JobRecord], bool]:
        """A page of the caller's jobs (every job when authentication is off) and whether more follow."""
        return await self.jobs.page.remote(caller.scope, after, limit, newest_first)

    @unary_rpc(pb.ListModelsResponse)
    async def ListModels(self, request: pb.ListModelsRequest, grpc_context: Any, call: Call) -> Any:
        self._caller(grpc_context)
        models = [
            wire.model_info(get_spec(m.name), m, expected_cold_start(self.results.root, m))
            for m in self.config.models
        ]
        return pb.ListModelsResponse(models=models)

    @stream_rpc
    async def Generate(self, request: pb.GenerateRequest, grpc_context: Any, call: Call) -> AsyncIterator:
        received = time.time()
        call.model = request.params.model
        caller = self._caller(grpc_context)
        generation = self._request(wire.request_fields(request.params))
        try:
            async with self._generate_quota(caller):
                with self.admission.slot(generation.model), self._waiting(generation.model) as started:
                    self._set_in_flight(generation.model)
                    async for response in self._generate(generation, received, started):
                        yield response
        finally:
            self._set_in_flight(generation.model)
        metrics().request_latency.observe(
            time.time() - received, tags={"rpc": "Generate", "model": generation.model}
        )

    async def _generate(
        self, generation: GenerationRequest, received: float, started: Callable[[], None]
    ) -> AsyncIterator[pb.GenerateResponse]:
        yield pb.GenerateResponse(progress=pb.Progress(stage=pb.STAGE_QUEUED))
        stream = self.models[generation.model].options(stream=True).generate.remote(generation, received)
        queue_s = 0.0
        sent = 0  # bytes of a long clip sent while it was made
        item: StreamItem
        async for item in stream:
            started()  # a replica sends its first item once it has started the request
            if item.queue_seconds is not None:
                queue_s = item.queue_seconds
            for event in item.events:
                yield pb.GenerateResponse(progress=wire.progress(event))
            for piece in item.pieces:
                yield pb.GenerateResponse(
                    chunk=pb.VideoChunk(data=piece, offset=sent, mime_type=PROGRESSIVE_MIME)
                )
                sent += len(piece)
            video = item.video
            if video is None:
                continue
            chunk_bytes = self.config.router.chunk_bytes
            for offset in range(0, len(video.data), chunk_bytes):  # none for a streamed long clip
                chunk = pb.VideoChunk(
                    data=video.data[offset : offset + chunk_bytes],
                    offset=offset,
                    total_bytes=len(video.data),
                    mime_type=video.mime_type,
                )
                yield pb.GenerateResponse(chunk=chunk)
            summary = GenerationSummary.of(generation, video, queue_s, time.time() - received)
            yield pb.GenerateResponse(summary=wire.summary(summary))

    @unary_rpc(pb.Job)
    async def SubmitJob(self, request: pb.SubmitJobRequest, grpc_context: Any, call: Call) -> Any:
        call.model = request.params.model
        caller = self._caller(grpc_context)
        fields = wire.request_fields(request.params)
        return wire.job(await self.submit(caller, fields, request.idempotency_key, request.webhook_url))

    async def submit(
        self, caller: Caller, fields: RequestFields, idempotency_key: str = "", webhook_url: str = ""
    ) -> JobRecord:
        """Check, admit and queue a job (SubmitJob and HTTP's create); the same key gives the same job."""
        generation = self._request(fields)
        if webhook_url:  # may resolve the host name: off the event loop
            await asyncio.to_thread(check_url, webhook_url, self.config.webhooks)
        model = generation.model
        try:
            self.admission.acquire(model)
        except ResourceExhausted:
            # A retry of a job already accepted adds no work: it gets that job back even at capacity.
            if idempotency_key and (record := await self.jobs.keyed.remote(caller.name, idempotency_key)):
                return record
            raise
        try:
            record, created = await self.jobs.create.remote(
                model,
                idempotency_key,
                owner=caller.name,
                max_active=self._job_quota(caller),
                holder=self.actor,
                request=generation,
                webhook_url=webhook_url,
            )
        except BaseException:
            self.admission.release(model)
            raise
        if not created:
            self.admission.release(model)
        else:
            self._start_dispatch(record.job_id, generation, time.time())
        self._set_in_flight(model)
        return record

    def _start_dispatch(self, job_id: str, generation: GenerationRequest, submitted_at: float) -> None:
        """Dispatch in the background; the model's admission slot is already held."""
        task = asyncio.ensure_future(self._dispatch(job_id, generation, submitted_at))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def _claim_forever(self) -> None:
        """Every sweep interval, take the jobs that the job store queued again for any Router (their
        Router or their whole Ray cluster went away) and dispatch them, within admission."""
        while True:
            await asyncio.sleep(self.config.job_sweep_interval_s)
            try:
                free = {model: self.admission.free(model) for model in self.models}
                claimed = await self.jobs.claim.remote(sorted(self.models), self.actor, free)
            except Exception:  # the job store restarting: try again next time
                log.warning("claiming queued jobs failed", exc_info=True)
                continue
            for record, generation in claimed:
                log.info("job %s: dispatching it again (attempt %d ran)", record.job_id, record.attempts)
                self.admission.take(record.model)
                self._start_dispatch(record.job_id, generation, record.created_at)
                self._set_in_flight(record.model)

    async def _dispatch(self, job_id: str, generation: GenerationRequest, submitted_at: float) -> None:
        """Hand a job to its model; the replica records progress and the outcome itself.

        When the replica dies under the job, Serve sends it to another replica, up to job_max_attempts
        runs; the video is stored once under the job's id, by whichever run finishes.
        """
        try:
            while True:
                try:
                    await self.models[generation.model].run_job.remote(job_id, generation, submitted_at)
                    return
                except Exception as error:
                    code, message = error_status(error)
                    if replica_died(error) and await self.jobs.requeue.remote(
                        job_id, message, holder=self.actor
                    ):
                        log.warning("job %s: %s; running it again", job_id, message)
                        continue
                    # Backpressure, or the replica died for the last time: not left QUEUED/RUNNING.
                    await self.jobs.fail.remote(job_id, code, message)
                    return
        finally:
            self.admission.release(generation.model)
            self._set_in_flight(generation.model)

    @unary_rpc(pb.Job)
    async def GetJob(self, request: pb.GetJobRequest, grpc_context: Any, call: Call) -> Any:
        record = await self.find_job(request.job_id, self._caller(grpc_context))
        call.model = record.model
        return wire.job(record)

    @stream_rpc
    async def WatchJob(self, request: pb.WatchJobRequest, grpc_context: Any, call: Call) -> AsyncIterator:
        caller = self._caller(grpc_context)
        record = await self.find_job(request.job_id, caller)
        call.model = record.model
        yield wire.job(record)
        while not record.ended:
            record = await self.jobs.wait.remote(request.job_id, record.version, WATCH_POLL_S, caller.scope)
            yield wire.job(record)

    @unary_rpc(pb.Job)
    async def CancelJob(self, request: pb.CancelJobRequest, grpc_context: Any, call: Call) -> Any:
        record = await self.jobs.cancel.remote(request.job_id, self._caller(grpc_context).scope)
        call.model = record.model
        return wire.job(record)

    @stream_rpc
    async def FetchVideo(self, request: pb.FetchVideoRequest, grpc_context: Any, call: Call) -> AsyncIterator:
        caller = self._caller(grpc_context)
        if not 0 <= request.chunk_bytes <= MAX_CHUNK_BYTES:
            raise InvalidArgument("chunk_bytes", f"{request.chunk_bytes} is outside [0, {MAX_CHUNK_BYTES}]")
        record = await self.find_job(request.job_id, caller)
        call.model = record.model
        chunk_bytes = request.chunk_bytes or self.config.router.chunk_bytes
        async for offset, total, data, mime_type in self.video_chunks(record, chunk_bytes):
            yield pb.VideoChunk(data=data, offset=offset, total_bytes=total, mime_type=mime_type)

    async def video_chunks(
        self, record: JobRecord, chunk_bytes: int
    ) -> AsyncIterator[tuple[int, int, bytes, str]]:
        """(offset, total size or 0 while growing, data, MIME type) of a job's video: a finished job's file;
        a running long clip's bytes so far, then each new section until the job ends (FetchVideo, HTTP).

        Ends normally only with the whole file: a job that fails or is cancelled meanwhile raises its
        error (what was sent is not a whole clip); one that starts over raises Aborted.
        """
        job_id = record.job_id
        if record.summary is None and (record.ended or not get_spec(record.model).progressive):
            raise NotFound(f"job {job_id} has no video: it is {record.state.value}")
        if record.summary is not None:
            for offset, total, data in self.results.chunks(job_id, chunk_bytes):
                yield offset, total, data, record.summary.mime_type
            return
        offset = 0
        while True:
            data = await asyncio.to_thread(self.results.read_growing, job_id, offset, chunk_bytes)
            if data:
                yield offset, 0, data, PROGRESSIVE_MIME
                offset += len(data)
                continue
            record = await self.jobs.get.remote(job_id)
            if record.state is JobState.SUCCEEDED:
                break
            if record.ended:
                raise JobEnded(
                    record.error_code or "INTERNAL",
                    f"job {job_id} ended {record.state.value} before its video was whole: {record.error}",
                )
            await asyncio.sleep(FOLLOW_POLL_S)
        total = record.summary.video_bytes
        while offset < total:  # the rest, from the finished file (the same bytes, renamed)
            data = await asyncio.to_thread(self.results.read_finished, job_id, offset, chunk_bytes)
            if not data:
                raise Aborted(f"job {job_id}: its video is shorter than its summary says; fetch it again")
            yield offset, total, data, record.summary.mime_type
            offset += len(data)

    async def __del__(self) -> None:
        """Serve calls this once the Router's RPCs have drained: let the jobs it queued reach a replica.

        Bounded by the deployment's graceful shutdown timeout; jobs still queued when Serve stops the
        process are failed by the job store's sweep.
        """
        if self.pending:
            await asyncio.gather(*list(self.pending), return_exceptions=True)

    async def Check(self, request: Any, grpc_context: Any = None) -> Any:
        """grpc.health.v1 Check. Service "" or videogen.v1.VideoGeneration: SERVING while this Router
        runs. Service = a model's name: SERVING when the model has a running replica or scales from
        zero, NOT_SERVING otherwise; an unknown name is NOT_FOUND, as the health protocol says."""
        from grpc_health.v1 import health_pb2

        status = health_pb2.HealthCheckResponse
        if request.service in ("", API_SERVICE):
            return status(status=status.SERVING)
        model = self.config.model(request.service)
        if model is None:
            if grpc_context is not None:
                grpc_context.set_code(grpc.StatusCode.NOT_FOUND)
                grpc_context.set_details(
                    f"unknown service {request.service!r}: ask for {API_SERVICE!r} or a deployed model "
                    f"({', '.join(sorted(self.models))})"
                )
            return status(status=status.SERVICE_UNKNOWN)
        serving = await self.health.serving(model)
        return status(status=status.SERVING if serving else status.NOT_SERVING)
