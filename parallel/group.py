"""`ParallelEngine`: one Serve replica driving N rank actors, one per bundle of the replica's placement group.

The replica is created with `placement_bundles(...)` (STRICT_PACK): bundle 0 holds the replica's CPU and
rank 0's GPU, bundles 1..N-1 one GPU each. The engine starts one `RankActor` per bundle, lets them form a
torch.distributed group (parallel.worker) and fans every request out to all of them. Rank 0's progress
is polled and handed to `on_progress`; a cancel reaches every rank, and they stop after the same step. A
rank that dies, hangs or fails on its own fails the request with `Unavailable`; the group is torn down
and rebuilt on the next request. Every wait has a deadline (`GroupTimeouts`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from typing import Any

import ray
import torch
from pydantic import BaseModel, Field
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError
from ray.util.placement_group import PlacementGroup, get_current_placement_group, placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from parallel.config import TransformerGeometry, validate, validate_request
from parallel.fp8 import ParameterBytes
from serve.catalog import MemoryOptions, ModelSpec
from serve.compile import CompileOptions, compiled_graphs
from serve.config import ParallelOptions
from serve.engine import FloatFrames, denoisers
from serve.errors import Cancelled, InvalidArgument, Unavailable
from serve.events import EncodedVideo, PieceCallback, ProgressCallback, ProgressEvent
from serve.request import GenerationRequest
from serve.weights import TINY, resolve_weights

log = logging.getLogger(__name__)


RANK_NAMESPACE = "videogen-ranks"
RANK_NAME_PREFIX = "rank-"  # rank-<model>-<group id>-rank<i>: findable with ray.util.list_named_actors


class GroupTimeouts(BaseModel):
    """Deadlines of a rank group; nothing waits without one."""

    setup_s: float = Field(1800.0, gt=0, description="ranks joining the group and loading the weights")
    collective_s: float = Field(600.0, gt=0, description="one collective (a rank that stops answering)")
    request_s: float = Field(3600.0, gt=0, description="one whole generation")
    cancel_grace_s: float = Field(120.0, gt=0, description="ranks stopping after a cancel or a peer's error")
    poll_interval_s: float = Field(0.05, gt=0, description="how often rank 0's progress is collected")
    call_s: float = Field(30.0, gt=0, description="a small control call to a rank (progress, cancel)")


def placement_bundles(
    parallel: ParallelOptions, num_cpus: float, num_gpus: float = 1.0
) -> list[dict[str, float]]:
    """The replica's bundles: its CPUs plus rank 0's GPU, then one GPU per further rank (use STRICT_PACK)."""
    gpus = num_gpus if num_gpus > 0 else 1.0
    first = {"CPU": float(num_cpus), "GPU": gpus} if num_cpus > 0 else {"GPU": gpus}
    return [first] + [{"GPU": gpus} for _ in range(parallel.world_size - 1)]


@ray.remote(max_concurrency=4)
class RankActor:
    """A RankWorker in its own process; threaded so progress and cancel calls answer while a request runs."""

    def __init__(
        self,
        spec: ModelSpec,
        weights: str,
        memory: MemoryOptions | None,
        parallel: ParallelOptions,
        rank: int,
        collective_timeout_s: float,
        compile: CompileOptions | None = None,
    ) -> None:
        logging.basicConfig(level=logging.INFO)
        self.spec, self.weights, self.memory, self.parallel = spec, weights, memory, parallel
        self.compile = compile
        self.rank = rank
        self.collective_timeout_s = collective_timeout_s
        self.worker: Any = None
        # Per request (the driver's token): cancels may arrive before the request starts here,
        # and progress polls before it resets, so neither is keyed by arrival order.
        self.cancels: dict[str, threading.Event] = {}
        self.events: dict[str, list[ProgressEvent]] = {}

    def rendezvous(self) -> str:
        """The group's init method: a free port on this (rank 0's) node."""
        from serve.ports import free_port

        return f"tcp://{ray.util.get_node_ip_address()}:{free_port(host='')}"

    def setup(self, init_method: str) -> float:
        from parallel.worker import RankWorker
        from serve.metrics import sample_memory_forever

        self.worker = RankWorker(
            self.spec,
            self.weights,
            self.memory,
            self.parallel,
            self.rank,
            init_method,
            self.collective_timeout_s,
            self.compile,
        )
        seconds = self.worker.setup()
        # Each rank reports its own GPU (the replica's process holds none), labelled by rank and device.
        sample_memory_forever(self.spec.name, self.rank)
        return seconds

    def generate(self, request: GenerationRequest, token: str) -> EncodedVideo | None:
        cancel = self.cancels.setdefault(token, threading.Event())
        events = self.events.setdefault(token, []) if self.rank == 0 else None
        try:
            return self.worker.generate(request, cancel, None if events is None else events.append)
        finally:
            self.cancels.pop(token, None)

    def frames(self, request: GenerationRequest, token: str) -> FloatFrames | None:
        return self.worker.frames(request)

    def info(self) -> dict[str, Any]:
        """What this rank runs on: its device and the memory options its engine applied."""
        engine, last = self.worker.engine, self.worker.last_output
        return {
            "device": str(engine.device),
            "memory_device": engine.memory_device,
            "memory": engine.memory,
            "fp8": self.worker.fp8_report,
            "prompt_encodes": self.worker.prompt_encodes,
            "videos_encoded": self.worker.videos_encoded,
            "vae_split": self.worker.vae_split,
            "attention_backend": self.worker.attention_backend_used,
            "compiled_blocks": engine.compiled_blocks,
            "compiled_graphs": compiled_graphs(),
            "text_encoders": sorted(
                name
                for name, module in engine.pipe.components.items()
                if name.startswith("text_encoder") and module is not None
            ),
            "denoisers": [type(module).__name__ for module in denoisers(engine.pipe)],
            "last_stages": None if last is None else last.stages,
        }

    def progress(self, token: str, since: int, final: bool = False) -> list[ProgressEvent]:
        """Rank 0's progress events of request `token` from index `since` on (`final`: then forget them)."""
        events = self.events.pop(token, []) if final else self.events.get(token, [])
        return events[since:]

    def cancel(self, token: str) -> None:
        self.cancels.setdefault(token, threading.Event()).set()


def _get_all(refs: list[Any], deadline: float) -> list[Any]:
    """Results of all `refs`, raising the first failure as soon as it happens (not after the others)."""
    pending, results = list(refs), {}
    while pending:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise GetTimeoutError(f"{len(pending)} of {len(refs)} calls still running at the deadline")
        done, pending = ray.wait(pending, num_returns=1, timeout=remaining)
        for ref in done:
            results[ref] = ray.get(ref)
    return [results[ref] for ref in refs]


def _cause(exc: BaseException) -> BaseException:
    """The exception a rank raised, without Ray's wrapper."""
    if isinstance(exc, RayTaskError) and exc.cause is not None:
        return exc.cause
    return exc


class ParallelEngine:
    """The Engine interface (`load`, `generate_video`, `load_seconds`, `device`) over N rank actors."""

    def __init__(
        self,
        spec: ModelSpec,
        weights: str = TINY,
        memory: MemoryOptions | None = None,
        parallel: ParallelOptions | None = None,
        timeouts: GroupTimeouts | None = None,
        gpus_per_rank: float = 1.0,
        compile: CompileOptions | None = None,
    ) -> None:
        """`gpus_per_rank` sizes the placement group the engine makes itself outside a Serve replica."""
        self.spec = spec
        self.compile = compile
        self.weights = weights
        self.memory = memory  # None: the engine's default (the catalog's; none for tiny weights)
        self.parallel = parallel or ParallelOptions()
        self.timeouts = timeouts or GroupTimeouts()
        self.gpus_per_rank = gpus_per_rank
        self.geometry: TransformerGeometry | None = None
        self.device = torch.device("cpu")  # rank 0's device, once loaded
        self.memory_device = "cpu"
        self.fp8_report: ParameterBytes | None = None
        self.ranks: list[Any] = []
        self.load_seconds = 0.0
        self._own_pg: PlacementGroup | None = None
        self._lock = threading.Lock()

    @property
    def tiny(self) -> bool:
        return self.weights == TINY

    @property
    def ready(self) -> bool:
        return bool(self.ranks)

    def load(self) -> float:
        """Start the rank actors and wait until all have joined the group and loaded; returns the seconds."""
        start = time.perf_counter()
        self._teardown()  # a group left from before is replaced, not leaked
        source = resolve_weights(self.spec, self.weights)
        self.geometry = TransformerGeometry.from_checkpoint(source.path)
        # A cfg=2 deployment commits to true-CFG requests; each request is checked in validate_request.
        validate(self.parallel, self.geometry, true_cfg=self.parallel.cfg_degree == 2)
        pg, gpus = self._placement()
        group = uuid.uuid4().hex[:8]
        self.ranks = [
            RankActor.options(
                name=f"{RANK_NAME_PREFIX}{self.spec.name}-{group}-rank{i}",
                namespace=RANK_NAMESPACE,
                num_cpus=0,
                num_gpus=gpus[i],
                scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=i),
            ).remote(
                self.spec,
                self.weights,
                self.memory,
                self.parallel,
                i,
                self.timeouts.collective_s,
                self.compile,
            )
            for i in range(self.parallel.world_size)
        ]
        try:
            deadline = time.monotonic() + self.timeouts.setup_s
            init_method = ray.get(self.ranks[0].rendezvous.remote(), timeout=self.timeouts.setup_s)
            _get_all([rank.setup.remote(init_method) for rank in self.ranks], deadline)
            info = ray.get(self.ranks[0].info.remote(), timeout=self.timeouts.call_s)
        except GetTimeoutError:
            self._teardown()
            raise Unavailable(
                f"{self.spec.name}: the {self.parallel.world_size} ranks did not load within "
                f"{self.timeouts.setup_s:.0f}s (are {self.parallel.world_size} GPUs free?)"
            ) from None
        except Exception as exc:
            self._teardown()
            raise Unavailable(f"{self.spec.name}: a rank failed to start: {_cause(exc)}") from None
        self.device, self.memory, self.fp8_report = torch.device(info["device"]), info["memory"], info["fp8"]
        self.memory_device = info["memory_device"]  # rank 0's GPU UUID (or cpu): the peak memory's device
        self.load_seconds = time.perf_counter() - start
        log.info("%s: %d ranks ready in %.1fs", self.spec.name, len(self.ranks), self.load_seconds)
        return self.load_seconds

    def _placement(self) -> tuple[PlacementGroup, list[float]]:
        """The replica's placement group (or one of our own outside Serve) and each bundle's GPUs."""
        pg = get_current_placement_group()
        if pg is None:
            pg = self._own_pg
        if pg is None:
            bundles = [{"GPU": self.gpus_per_rank} for _ in range(self.parallel.world_size)]
            pg = placement_group(bundles, strategy="STRICT_PACK")
            try:
                ray.get(pg.ready(), timeout=self.timeouts.setup_s)
            except GetTimeoutError:
                ray.util.remove_placement_group(pg)
                raise Unavailable(
                    f"{self.spec.name}: no {self.parallel.world_size} GPUs free on one node"
                ) from None
            self._own_pg = pg
        if len(pg.bundle_specs) < self.parallel.world_size:
            raise Unavailable(
                f"{self.spec.name}: the placement group has {len(pg.bundle_specs)} bundles for "
                f"{self.parallel.world_size} ranks; create the replica with parallel.group.placement_bundles"
            )
        return pg, [float(spec.get("GPU", 0.0)) for spec in pg.bundle_specs]

    def generate_video(
        self,
        request: GenerationRequest,
        on_progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
        on_piece: PieceCallback | None = None,
    ) -> EncodedVideo:
        """Run the request on every rank; rank 0's progress goes to `on_progress`, its video is returned.

        No long-clip model spans GPUs (none has an xDiT transformer), so nothing goes to `on_piece`: the
        video comes whole.
        """
        video = self._fan_out("generate", request, on_progress, cancel)
        if not isinstance(video, EncodedVideo):
            self._fail(f"{self.spec.name}: rank 0 returned no video")
        return video

    def frames(self, request: GenerationRequest, cancel: threading.Event | None = None) -> FloatFrames:
        """Rank 0's float frames in [0, 1], unencoded, and its forwards (parity checks, benchmarks)."""
        frames = self._fan_out("frames", request, None, cancel)
        if not isinstance(frames, FloatFrames):
            self._fail(f"{self.spec.name}: rank 0 returned no frames")
        return frames

    def _fan_out(
        self,
        method: str,
        request: GenerationRequest,
        on_progress: ProgressCallback | None,
        cancel: threading.Event | None,
    ) -> Any:
        if request.model != self.spec.name:
            raise InvalidArgument("model", f"this engine serves {self.spec.name!r}, not {request.model!r}")
        with self._lock:
            if not self.ranks:
                self.load()  # first request, or the group was torn down after a failure
            assert self.geometry is not None
            validate_request(self.parallel, self.geometry, request)
            if cancel is not None and cancel.is_set():
                raise Cancelled("cancelled before it started")
            return self._run(method, request, on_progress or (lambda event: None), cancel)

    def _run(
        self,
        method: str,
        request: GenerationRequest,
        on_progress: ProgressCallback,
        cancel: threading.Event | None,
    ) -> Any:
        token = uuid.uuid4().hex
        refs = [getattr(rank, method).remote(request, token) for rank in self.ranks]
        try:
            results, errors = self._wait(refs, token, on_progress, cancel)
        except BaseException:
            self._teardown()  # ranks may still be running this request: never leave them to the next
            raise
        if errors:
            self._raise_rank_error(errors)
        return results.get(0)

    def _wait(
        self, refs: list[Any], token: str, on_progress: ProgressCallback, cancel: threading.Event | None
    ) -> tuple[dict[int, Any], dict[int, BaseException]]:
        """Wait for every rank: forward progress, pass on a cancel, fail on a death or a deadline."""
        ranks = self.ranks
        index = {ref: i for i, ref in enumerate(refs)}
        results: dict[int, Any] = {}
        errors: dict[int, BaseException] = {}
        seen = 0
        deadline = time.monotonic() + self.timeouts.request_s
        stop_by: float | None = None  # set once the ranks were told to stop, or one of them failed
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=len(pending), timeout=self.timeouts.poll_interval_s)
            for ref in done:
                try:
                    results[index[ref]] = ray.get(ref)
                except RayActorError as exc:
                    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                    self._fail(f"rank {index[ref]} of {self.spec.name} died during the request ({reason})")
                except Exception as exc:
                    errors[index[ref]] = _cause(exc)
            seen = self._forward_progress(ranks[0], token, seen, on_progress)
            now = time.monotonic()
            if (errors or (cancel is not None and cancel.is_set())) and stop_by is None:
                for rank in ranks:
                    rank.cancel.remote(token)
                stop_by = now + self.timeouts.cancel_grace_s
            if pending and stop_by is not None and now > stop_by:
                self._fail(f"{self.spec.name}: ranks did not stop within {self.timeouts.cancel_grace_s:.0f}s")
            if pending and now > deadline:
                self._fail(f"{self.spec.name}: the generation ran past {self.timeouts.request_s:.0f}s")
        self._forward_progress(ranks[0], token, seen, on_progress, final=True)
        return results, errors

    def _forward_progress(
        self, rank0: Any, token: str, seen: int, on_progress: ProgressCallback, final: bool = False
    ) -> int:
        try:
            events = ray.get(rank0.progress.remote(token, seen, final), timeout=self.timeouts.call_s)
        except RayActorError:
            return seen  # the generate call reports the death
        except GetTimeoutError:
            return seen
        for event in events:
            on_progress(event)
        return seen + len(events)

    def _raise_rank_error(self, errors: dict[int, BaseException]) -> None:
        """Errors every rank agrees on keep the group; anything else tears it down."""
        first = errors[min(errors)]
        agreed = len(errors) == len(self.ranks) and all(type(e) is type(first) for e in errors.values())
        if agreed and isinstance(first, Cancelled | InvalidArgument):
            raise first
        self._teardown()
        if isinstance(first, Cancelled):
            raise first
        raise Unavailable(
            f"{self.spec.name}: rank {min(errors)} failed ({type(first).__name__}: {first}); "
            "the rank group is rebuilt on the next request"
        ) from first

    def health_problem(self) -> str | None:
        """Why this replica cannot serve, or None: a rank Ray reports dead, or silent for `call_s`, while
        the group is idle. A busy group meets its dead ranks in the request itself, and a group torn
        down after a failure is rebuilt by the next request: neither is a problem here."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            for i, rank in enumerate(self.ranks):
                try:
                    ray.get(rank.__ray_ready__.remote(), timeout=self.timeouts.call_s)
                except GetTimeoutError:
                    return f"rank {i} of {self.spec.name} did not answer within {self.timeouts.call_s:.0f}s"
                except RayActorError as exc:
                    return f"rank {i} of {self.spec.name} died: {_cause(exc)}"
            return None
        finally:
            self._lock.release()

    def _fail(self, message: str) -> None:
        self._teardown()
        raise Unavailable(f"{message}; the rank group is rebuilt on the next request")

    def _teardown(self) -> None:
        for rank in self.ranks:
            with contextlib.suppress(Exception):  # already gone
                ray.kill(rank, no_restart=True)
        self.ranks = []

    def shutdown(self) -> None:
        """Stop the rank actors and release a placement group this engine made itself."""
        with self._lock:
            self._teardown()
            if self._own_pg is not None:
                ray.util.remove_placement_group(self._own_pg)
                self._own_pg = None
