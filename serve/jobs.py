"""Jobs, kept outside any Router replica: the state machine, and the named detached Ray actor sharing it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from pathlib import Path
from typing import Any

from serve.config import JOB_MAX_ATTEMPTS, JOB_SWEEP_INTERVAL_S, JOB_TTL_S, JobStoreSettings, WebhookOptions
from serve.errors import InvalidArgument, NotFound, QuotaExceeded
from serve.events import GenerationSummary, Stage
from serve.job_records import (
    TERMINAL_STATES,
    WEBHOOK_DELIVERED,
    WEBHOOK_FAILED,
    WEBHOOK_PENDING,
    JobRecord,
    JobState,
    job_storage,
)
from serve.request import GenerationRequest
from serve.results import ResultStore, check_job_id

__all__ = ["TERMINAL_STATES", "JobBook", "JobRecord", "JobState", "JobStoreActor", "job_store"]

STORE_NAME = "videogen-job-store"
JOBS_SUBDIR = "jobs"  # under the results directory: the local storage's ended jobs
STORE_NAMESPACE = "videogen"
HOLDER_PING_TIMEOUT_S = 10.0
HEARTBEAT_SWEEPS = 3  # a job store whose heartbeat is this many sweep intervals old is gone
IDEMPOTENCY_KEY_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

log = logging.getLogger(__name__)


def check_idempotency_key(key: str) -> str:
    if key and not IDEMPOTENCY_KEY_PATTERN.fullmatch(key):
        raise InvalidArgument("idempotency_key", "must be 1-128 characters of [A-Za-z0-9._:-]")
    return key


class JobBook:
    """The job state machine over a JobStorage; the actor below shares it across replicas, tests use it
    directly. `directory`: where the local storage writes ended jobs; `redis_url`: keep them in Redis;
    `store`: this job store's name in the records (one per Ray cluster); `max_attempts`: runs a job gets
    when its replica, its Router or its whole cluster goes away under it."""

    def __init__(
        self,
        directory: str | Path | None = None,
        ttl_s: float = JOB_TTL_S,
        redis_url: str | None = None,
        store: str | None = None,
        max_attempts: int = JOB_MAX_ATTEMPTS,
    ) -> None:
        self.storage = job_storage(directory, redis_url)
        self.store = store or uuid.uuid4().hex
        self.max_attempts = max_attempts
        # Unfinished job -> the actor answerable for it: the Router that queued it, then the replica
        # running it. In memory only: the sweep fails a job whose holder died (see `orphan`).
        self.holders: dict[str, Any] = {}
        # Unfinished job -> the Router that dispatched it, which requeues or fails it if its replica dies.
        self.dispatchers: dict[str, Any] = {}
        self.ttl_s = ttl_s
        # Jobs that just ended with a webhook to deliver; the job store actor takes them (`deliveries`).
        self.webhooks_due: list[JobRecord] = []

    def _update(self, record: JobRecord, **changes: Any) -> JobRecord:
        was = record.state
        for name, value in changes.items():
            setattr(record, name, value)
        record.version += 1
        if record.ended:
            self.holders.pop(record.job_id, None)
            self.dispatchers.pop(record.job_id, None)
            if was not in TERMINAL_STATES and record.webhook_state == WEBHOOK_PENDING:
                self.webhooks_due.append(record.model_copy())
        self.storage.save(record, was)
        if record.ended and record.deleted:
            self.storage.delete(record)  # its caller deleted it while it ran
        return record

    def keyed(self, owner: str, idempotency_key: str) -> JobRecord | None:
        """The job `owner` created with `idempotency_key` (checked first), or None (none, or no key)."""
        check_idempotency_key(idempotency_key)
        existing = self.storage.key_holder(owner, idempotency_key) if idempotency_key else None
        return None if existing is None else self.storage.get(existing)

    def create(
        self,
        model: str,
        idempotency_key: str = "",
        owner: str = "",
        max_active: int | None = None,
        holder: Any = None,
        request: GenerationRequest | None = None,
        webhook_url: str = "",
    ) -> tuple[JobRecord, bool]:
        """A new QUEUED job, or the existing one with the same idempotency key (created=False).

        `max_active`: refuse (RESOURCE_EXHAUSTED) when `owner` already has that many unfinished jobs.
        `holder`: the actor that will hand the job to a replica (the sweep watches it).
        `request`: kept with the job, so that another Router can run it if this one goes away.
        `webhook_url`: where its outcome is POSTed once it ends (checked by the caller).
        """
        if (record := self.keyed(owner, idempotency_key)) is not None:
            return record, False
        if max_active is not None and self.active(owner) >= max_active:
            raise QuotaExceeded(
                f"caller {owner!r} is at its max_concurrent_jobs quota ({self.active(owner)} jobs "
                "unfinished, plus any Generate calls); retry when one ends"
            )
        asked = {}
        if request is not None:
            asked = request.model_dump(include={"prompt", "width", "height", "num_frames", "fps"})
        record = JobRecord(
            job_id=uuid.uuid4().hex,
            model=model,
            created_at=time.time(),
            idempotency_key=idempotency_key,
            owner=owner,
            store=self.store,
            webhook_url=webhook_url,
            webhook_state=WEBHOOK_PENDING if webhook_url else "",
            **asked,
        )
        stored = self.storage.create(record)
        if stored != record.job_id:  # another job store took the key first
            return self.get(stored), False
        if request is not None:
            self.storage.save_request(record.job_id, request.model_dump_json())
        if holder is not None:
            self.holders[record.job_id] = self.dispatchers[record.job_id] = holder
        return record, True

    def active(self, owner: str) -> int:
        """Unfinished (queued or running) jobs of `owner`."""
        return self.storage.active(owner)

    def get(self, job_id: str, owner: str | None = None) -> JobRecord:
        record = self.storage.get(check_job_id(job_id))
        if record is None or (owner is not None and record.owner != owner):
            raise NotFound(f"job {job_id} does not exist")
        return record

    def deliveries(self) -> list[JobRecord]:
        """The jobs that ended with a webhook to deliver since the last call (the sweep resumes those a
        previous job store process left pending: `storage.webhooks_pending`)."""
        due, self.webhooks_due = self.webhooks_due, []
        return due

    def webhook_attempted(self, job_id: str, attempts: int, error: str, state: str) -> None:
        """Record a webhook's attempts so far, its last error, and its state (pending while retried)."""
        record = self.storage.get(job_id)
        if record is not None:  # deleted meanwhile: nothing to record on
            self._update(record, webhook_attempts=attempts, webhook_error=error, webhook_state=state)

    def visible(self, job_id: str, owner: str | None = None) -> JobRecord:
        """The job as its caller may see it: NOT_FOUND once deleted, or when `owner` is not its owner."""
        record = self.get(job_id, owner)
        if record.deleted:
            raise NotFound(f"job {job_id} does not exist")
        return record

    def page(
        self, owner: str | None, after: str = "", limit: int = 20, newest_first: bool = True
    ) -> tuple[list[JobRecord], bool]:
        """Up to `limit` of `owner`'s jobs after the job `after`, in creation order (newest first unless
        told otherwise), and whether more follow."""
        ids = self.storage.job_ids(owner)
        if newest_first:
            ids.reverse()
        if after:
            if after not in ids:
                raise InvalidArgument("after", f"job {after} is not one of this caller's jobs")
            ids = ids[ids.index(after) + 1 :]
        records: list[JobRecord] = []
        for job_id in ids:
            record = self.storage.get(job_id)
            if record is None or record.deleted:
                continue
            if len(records) == limit:
                return records, True
            records.append(record)
        return records, False

    def delete(self, job_id: str, owner: str | None = None) -> JobRecord:
        """Forget a job: an ended one at once (the caller deletes its video), an unfinished one is
        cancelled and forgotten when it ends. Either way its caller no longer sees it."""
        record = self.visible(job_id, owner)
        if record.ended:
            self.storage.delete(record)
            return record
        self.cancel(job_id, owner)
        return self._update(self.get(job_id), deleted=True)

    def start(self, job_id: str, holder: Any = None) -> bool:
        """QUEUED -> RUNNING; False when the job was cancelled (or ended) before it started.

        `holder`: the replica running it, which the sweep watches from now on.
        """
        record = self.get(job_id)
        if record.state is not JobState.QUEUED:
            return False
        if holder is not None:
            self.holders[job_id] = holder
        self._update(
            record,
            state=JobState.RUNNING,
            stage=Stage.PREPARING,
            started_at=time.time(),
            attempts=record.attempts + 1,
        )
        return True

    def requeue(self, job_id: str, reason: str, max_attempts: int | None = None, holder: Any = None) -> bool:
        """Queue a job whose replica died again, unless it ended, was cancelled or used its attempts.

        Returns whether it was queued again (the caller dispatches it). A job that used its attempts is
        failed here with `reason` and the count.
        """
        record = self.get(job_id)
        if record.ended or record.cancel_requested:
            return False
        if self._fail_if_attempts_used(record, reason, max_attempts or self.max_attempts):
            return False
        if holder is not None:
            self.holders[job_id] = holder
        self._update(
            record, state=JobState.QUEUED, stage=Stage.QUEUED, step=0, section=0, elapsed_seconds=0.0
        )
        return True

    def _fail_if_attempts_used(self, record: JobRecord, reason: str, max_attempts: int) -> bool:
        """FAIL a job that has run `max_attempts` times, with `reason` and the count; True if it did."""
        if record.attempts < max_attempts:
            return False
        self.fail(record.job_id, "UNAVAILABLE", f"{reason} (attempt {record.attempts} of {max_attempts})")
        return True

    def _queue_for_any_router(self, record: JobRecord, reason: str) -> JobRecord:
        """Queue a job whose dispatcher is gone again, for any live Router to claim (`claim`); fail it
        instead when it was cancelled, used its attempts, or has no request kept to run it from."""
        if record.cancel_requested:
            return self.fail(record.job_id, "CANCELLED", "cancelled by the caller")
        if self.storage.request(record.job_id) is None:
            return self.fail(record.job_id, "UNAVAILABLE", f"{reason}; submit it again")
        if self._fail_if_attempts_used(record, reason, self.max_attempts):
            return self.get(record.job_id)
        self.holders.pop(record.job_id, None)
        self.dispatchers.pop(record.job_id, None)
        log.warning("job %s: %s; queued for another Router", record.job_id, reason)
        return self._update(
            record,
            state=JobState.QUEUED,
            stage=Stage.QUEUED,
            step=0,
            elapsed_seconds=0.0,
            store=self.store,
            awaiting_dispatch=True,
        )

    def claim(
        self, models: list[str], holder: Any, free: dict[str, int] | None = None
    ) -> list[tuple[JobRecord, GenerationRequest]]:
        """Jobs queued for any Router (`_queue_for_any_router`) of `models`, now `holder`'s to dispatch,
        at most `free[model]` of each model; with their requests."""
        free = dict(free) if free is not None else {model: 1 << 30 for model in models}
        claimed = []
        for record in self.storage.unfinished():
            if not record.awaiting_dispatch or record.store != self.store or free.get(record.model, 0) < 1:
                continue
            request = self.storage.request(record.job_id)
            if request is None:
                self.fail(record.job_id, "UNAVAILABLE", "its request was lost; submit it again")
                continue
            free[record.model] -= 1
            self.holders[record.job_id] = self.dispatchers[record.job_id] = holder
            claimed.append(
                (
                    self._update(record, awaiting_dispatch=False),
                    GenerationRequest.model_validate_json(request),
                )
            )
        return claimed

    def adopt(self) -> list[str]:
        """Take over the unfinished jobs of job stores whose heartbeat lapsed (a Ray cluster that was
        replaced or lost), queued again for this store's Routers; returns their ids."""
        adopted = []
        for record in self.storage.unfinished():
            if not record.store or record.store == self.store or self.storage.alive(record.store):
                continue
            reason = "the Ray cluster that held the job went away"
            if self._queue_for_any_router(record, reason).state is JobState.QUEUED:
                adopted.append(record.job_id)
        return adopted

    def progress(
        self,
        job_id: str,
        stage: Stage,
        step: int,
        total_steps: int,
        elapsed: float,
        section: int = 0,
        total_sections: int = 0,
    ) -> bool:
        """Record progress; returns True when the job should stop (cancel requested)."""
        record = self.get(job_id)
        if not record.ended:
            self._update(
                record,
                stage=stage,
                step=step,
                total_steps=total_steps,
                elapsed_seconds=elapsed,
                section=section,
                total_sections=total_sections,
            )
        return record.cancel_requested or record.ended

    def succeed(self, job_id: str, summary: GenerationSummary) -> JobRecord:
        record = self.get(job_id)
        if record.ended:
            return record
        return self._update(
            record, state=JobState.SUCCEEDED, stage=Stage.DONE, summary=summary, finished_at=time.time()
        )

    def fail(self, job_id: str, code: str, error: str) -> JobRecord:
        """Mark FAILED (or CANCELLED when the failure is the requested cancellation)."""
        record = self.get(job_id)
        if record.ended:
            return record
        state = JobState.CANCELLED if code == "CANCELLED" else JobState.FAILED
        return self._update(record, state=state, error_code=code, error=error, finished_at=time.time())

    def cancel(self, job_id: str, owner: str | None = None) -> JobRecord:
        """A queued job ends at once; a running one stops at its next step."""
        record = self.visible(job_id, owner)
        if record.ended:
            return record
        if record.state is JobState.QUEUED:
            return self._update(
                record,
                state=JobState.CANCELLED,
                error_code="CANCELLED",
                error="cancelled by the caller",
                cancel_requested=True,
                finished_at=time.time(),
            )
        return self._update(record, cancel_requested=True)

    def held(self) -> list[tuple[str, Any]]:
        """(job id, holder) of every unfinished job that has one."""
        held = []
        for job_id, holder in list(self.holders.items()):
            record = self.storage.get(job_id)
            if record is None or record.ended:
                self.holders.pop(job_id, None)  # ended elsewhere (another job store, an expiry)
            else:
                held.append((job_id, holder))
        return held

    def orphan(self, job_id: str, holder: Any) -> JobRecord:
        """A job whose holder died, unless it has since ended or moved to another holder: queued again
        for any Router (within its attempts), else failed with the reason."""
        record = self.get(job_id)
        if record.ended or self.holders.get(job_id) is not holder:
            return record
        if record.state is JobState.QUEUED:
            reason = "the Router that accepted the job stopped before a model replica took it"
        else:
            reason = f"the model replica running the job died (at {record.stage}, step {record.step})"
        return self._queue_for_any_router(record, reason)

    def counts(self) -> dict[str, int]:
        counts = {state.value: 0 for state in JobState}
        for (_, state), count in self.storage.counts_by_model().items():
            counts[state] += count
        return counts

    def counts_by_model(self) -> dict[tuple[str, str], int]:
        """(model, state) -> jobs, with every state of every model that has had a job (zeros too)."""
        return self.storage.counts_by_model()

    def expire(self, now: float | None = None) -> list[str]:
        """Forget ended jobs older than the TTL; returns their ids (the caller deletes their videos)."""
        expired = self.storage.ended_before((now or time.time()) - self.ttl_s)
        for record in expired:
            self.storage.delete(record)
            self.holders.pop(record.job_id, None)
            self.dispatchers.pop(record.job_id, None)
        return [record.job_id for record in expired]


async def holder_is_dead(holder: Any, timeout_s: float = HOLDER_PING_TIMEOUT_S) -> bool:
    """True only when Ray says the actor died; a slow or unreachable one counts as alive."""
    from ray.exceptions import ActorDiedError

    try:
        await asyncio.wait_for(holder.__ray_ready__.remote(), timeout_s)
    except ActorDiedError:
        return True
    except Exception:
        return False
    return False


class JobStoreActor:
    """Async Ray actor around JobBook; `wait` lets WatchJob long-poll for the next change.

    A sweep every `sweep_interval_s` fails unfinished jobs whose holder died: a job queued in a Router
    that stopped, or running on a replica whose process was killed while its Router was gone too
    (with the Router alive, its `_dispatch` records the failure at once).
    """

    def __init__(
        self,
        results_dir: str,
        ttl_s: float = JOB_TTL_S,
        sweep_interval_s: float = JOB_SWEEP_INTERVAL_S,
        redis_url: str | None = None,
        max_attempts: int = JOB_MAX_ATTEMPTS,
        store: str | None = None,
        webhooks: WebhookOptions | None = None,
    ) -> None:
        self.results = ResultStore(results_dir)
        self.webhooks = webhooks or WebhookOptions()
        self.delivering: dict[str, asyncio.Task] = {}
        # The actor's id names the store: Ray keeps it across restarts of this actor, and a new
        # cluster's store has another.
        self.book = JobBook(
            self.results.root / JOBS_SUBDIR, ttl_s, redis_url, store or _own_actor_id(), max_attempts
        )
        self.changed = asyncio.Condition()
        self.sweep_interval_s = sweep_interval_s
        self.sweeper: asyncio.Task | None = None
        self._beat()

    def _beat(self) -> None:
        self.book.storage.beat(self.book.store, HEARTBEAT_SWEEPS * self.sweep_interval_s)

    def _ensure_sweeper(self) -> None:
        if self.sweeper is None or self.sweeper.done():
            self.sweeper = asyncio.ensure_future(self._sweep_forever())

    async def _sweep_forever(self) -> None:
        from serve.metrics import GAUGE_REFRESH_S

        last_sweep = time.monotonic()
        while True:
            await asyncio.sleep(min(self.sweep_interval_s, GAUGE_REFRESH_S))
            with contextlib.suppress(Exception):  # a storage outage is retried next time
                self._beat()
            # Set the job gauges again even when nothing changed: Ray drops series left unset.
            self._export_counts()
            if time.monotonic() - last_sweep < self.sweep_interval_s:
                continue
            last_sweep = time.monotonic()
            try:
                await self.sweep()
            except Exception:  # never let one bad sweep stop the next
                logging.getLogger(__name__).exception("job sweep failed")

    async def sweep(self) -> list[str]:
        """Queue again (for any Router) or fail the unfinished jobs whose holder died, and adopt those of
        job stores that are gone; returns their ids. Forget the expired ended jobs and their videos."""
        for job_id in self.book.expire():
            self.results.delete(job_id)
        held = self.book.held()
        dead = await asyncio.gather(*(holder_is_dead(holder) for _, holder in held))
        moved = []
        for (job_id, holder), is_dead in zip(held, dead, strict=True):
            if not is_dead:
                continue
            dispatcher = self.book.dispatchers.get(job_id)
            if dispatcher not in (None, holder) and not await holder_is_dead(dispatcher):
                continue  # its Router saw the replica die: it runs the job again or fails it
            self.book.orphan(job_id, holder)
            moved.append(job_id)
        moved += self.book.adopt()
        for record in self.book.storage.webhooks_pending():
            if record.store == self.store or not self.book.storage.alive(record.store):
                self._start_delivery(record)  # one a previous process of this store left unfinished
        if moved:
            await self._notify()
            self._export_counts()
        return moved

    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    # The JobBook's methods as the actor's own: reads answer at once; a change wakes the watchers and,
    # when it moves a job between states, updates the job gauges. Errors reach the caller as themselves.

    async def _changed(self, states_changed: bool = True) -> None:
        self._ensure_sweeper()
        for record in self.book.deliveries():
            self._start_delivery(record)
        await self._notify()
        if states_changed:
            self._export_counts()

    def _start_delivery(self, record: JobRecord) -> None:
        if record.job_id in self.delivering:
            return
        task = asyncio.ensure_future(self._deliver(record))
        self.delivering[record.job_id] = task
        task.add_done_callback(lambda _: self.delivering.pop(record.job_id, None))

    async def _deliver(self, record: JobRecord) -> None:
        """POST an ended job's webhook (serve/webhooks.py), recording each attempt on the job."""
        from serve import webhooks

        async def attempted(attempts: int, error: str) -> None:
            self.book.webhook_attempted(record.job_id, attempts, error, WEBHOOK_PENDING)
            await self._notify()

        message_id, body = webhooks.message(record, self.book.ttl_s)
        delivered, attempts, error = await webhooks.deliver(
            record.webhook_url, message_id, body, self.webhooks, attempted
        )
        if not delivered:
            log.warning("job %s: webhook not delivered after %d attempts: %s", record.job_id, attempts, error)
        state = WEBHOOK_DELIVERED if delivered else WEBHOOK_FAILED
        self.book.webhook_attempted(record.job_id, attempts, error, state)
        await self._notify()

    async def create(
        self,
        model: str,
        idempotency_key: str = "",
        owner: str = "",
        max_active: int | None = None,
        holder: Any = None,
        request: GenerationRequest | None = None,
        webhook_url: str = "",
    ) -> tuple[JobRecord, bool]:
        created = self.book.create(model, idempotency_key, owner, max_active, holder, request, webhook_url)
        await self._changed()
        return created

    async def keyed(self, owner: str, idempotency_key: str) -> JobRecord | None:
        return self.book.keyed(owner, idempotency_key)

    async def claim(
        self, models: list[str], holder: Any, free: dict[str, int] | None = None
    ) -> list[tuple[JobRecord, GenerationRequest]]:
        claimed = self.book.claim(models, holder, free)
        await self._changed(states_changed=False)
        return claimed

    async def get(self, job_id: str, owner: str | None = None) -> JobRecord:
        self._ensure_sweeper()
        return self.book.visible(job_id, owner)

    async def page(
        self, owner: str | None, after: str = "", limit: int = 20, newest_first: bool = True
    ) -> tuple[list[JobRecord], bool]:
        return self.book.page(owner, after, limit, newest_first)

    async def delete(self, job_id: str, owner: str | None = None) -> JobRecord:
        record = self.book.delete(job_id, owner)
        if record.ended:
            self.results.delete(job_id)
        await self._changed()
        return record

    async def active(self, owner: str) -> int:
        return self.book.active(owner)

    async def counts(self) -> dict[str, int]:
        return self.book.counts()

    async def start(self, job_id: str, holder: Any = None) -> bool:
        started = self.book.start(job_id, holder)
        await self._changed()
        return started

    async def progress(
        self,
        job_id: str,
        stage: Stage,
        step: int,
        total_steps: int,
        elapsed: float,
        section: int = 0,
        total_sections: int = 0,
    ) -> bool:
        stop = self.book.progress(job_id, stage, step, total_steps, elapsed, section, total_sections)
        await self._changed(states_changed=False)
        return stop

    async def succeed(self, job_id: str, summary: GenerationSummary) -> JobRecord:
        record = self.book.succeed(job_id, summary)
        if record.deleted:
            self.results.delete(job_id)  # deleted by its caller while it ran
        await self._changed()
        return record

    async def fail(self, job_id: str, code: str, error: str) -> JobRecord:
        record = self.book.fail(job_id, code, error)
        await self._changed()
        return record

    async def requeue(
        self, job_id: str, reason: str, max_attempts: int | None = None, holder: Any = None
    ) -> bool:
        queued = self.book.requeue(job_id, reason, max_attempts, holder)
        await self._changed()
        return queued

    async def cancel(self, job_id: str, owner: str | None = None) -> JobRecord:
        record = self.book.cancel(job_id, owner)
        await self._changed()
        return record

    def _export_counts(self) -> None:
        from serve.metrics import metrics

        for (model, state), count in self.book.counts_by_model().items():
            metrics().jobs.set(count, tags={"model": model, "state": state})

    async def wait(
        self, job_id: str, after_version: int, timeout_s: float, owner: str | None = None
    ) -> JobRecord:
        """The job once its version passes `after_version`, or as it is after `timeout_s`."""
        async with self.changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self.changed.wait_for(lambda: self.book.visible(job_id, owner).version > after_version),
                    timeout_s,
                )
        return self.book.visible(job_id, owner)


def _own_actor_id() -> str:
    import ray

    actor_id = ray.get_runtime_context().get_actor_id() if ray.is_initialized() else None
    return actor_id or uuid.uuid4().hex


def job_store(results_dir: str, settings: JobStoreSettings | None = None) -> Any:
    """The job store of this results directory, created on first use; it outlives Router replicas.

    `settings` (AppConfig.job_store_settings): TTL, sweep, attempts, Redis and the node labels it must
    run on, applied by whichever caller creates it.
    """
    import hashlib

    import ray

    settings = settings or JobStoreSettings()
    # Restarted whenever it dies; a call in flight then is sent again to the new process (its records
    # are in Redis, or lost with it for the local storage). A retried `create` may leave one extra
    # QUEUED record without a holder, which nobody dispatches and the caller never sees.
    actor_cls = ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=3, max_concurrency=1000)(
        JobStoreActor
    )
    node_labels = settings.options.node_labels
    placement = {"label_selector": node_labels} if node_labels else {}
    return actor_cls.options(
        name=f"{STORE_NAME}-{hashlib.sha1(results_dir.encode()).hexdigest()[:10]}",
        namespace=STORE_NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
        **placement,
    ).remote(
        results_dir,
        settings.ttl_s,
        settings.sweep_interval_s,
        settings.options.redis_url,
        settings.max_attempts,
        webhooks=settings.webhooks,
    )
