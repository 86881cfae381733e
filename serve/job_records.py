"""Job records and the two places they are kept: this process (ended ones on disk) or Redis.

`JobBook` (serve/jobs.py) runs the job state machine over a `JobStorage`. `LocalJobStorage` keeps records
in memory and writes ended ones to the results volume: the embedded default, which needs no server,
loses unfinished jobs with its process. `RedisJobStorage` keeps every record, idempotency key, per-owner
active set, count and expiry index in Redis, so jobs survive the job-store process, the Router and a
new Ray cluster pointed at the same Redis (production; KubeRay's GCS fault tolerance uses that Redis
too). Each change of a record is one MULTI/EXEC transaction.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel

from serve.events import GenerationSummary, Stage


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
WEBHOOK_PENDING, WEBHOOK_DELIVERED, WEBHOOK_FAILED = "pending", "delivered", "failed"


class JobRecord(BaseModel):
    """Everything GetJob reports about one job."""

    job_id: str
    model: str
    state: JobState = JobState.QUEUED
    stage: Stage = Stage.QUEUED
    step: int = 0
    total_steps: int = 0
    section: int = 0
    total_sections: int = 0
    elapsed_seconds: float = 0.0
    error: str = ""
    error_code: str = ""
    created_at: float
    started_at: float = 0.0
    finished_at: float = 0.0
    idempotency_key: str = ""
    owner: str = ""
    summary: GenerationSummary | None = None
    cancel_requested: bool = False
    attempts: int = 0  # runs started: a job whose replica died is queued again (job_max_attempts)
    store: str = ""  # the job store answerable while it is unfinished: one per Ray cluster
    awaiting_dispatch: bool = False  # queued again by its store for any Router to claim and run
    deleted: bool = False  # deleted by its caller while unfinished: forgotten once it ends
    # What was asked (the HTTP API's video object states it before there is a summary).
    prompt: str = ""
    width: int = 0
    height: int = 0
    num_frames: int = 0
    fps: int = 0
    # Where the outcome is POSTed (serve/webhooks.py) and how that went: pending until delivered or
    # failed; attempts made and the last attempt's error.
    webhook_url: str = ""
    webhook_state: str = ""
    webhook_attempts: int = 0
    webhook_error: str = ""
    version: int = 0

    @property
    def ended(self) -> bool:
        return self.state in TERMINAL_STATES


class JobStorage(Protocol):
    """Where JobBook keeps records; `save` is told the state a record had, to keep indexes and counts."""

    def get(self, job_id: str) -> JobRecord | None: ...

    def save(self, record: JobRecord, was: JobState | None) -> None: ...

    def key_holder(self, owner: str, key: str) -> str | None: ...

    def create(self, record: JobRecord) -> str:
        """Store a new record; with an idempotency key already held, store nothing and return the
        holder's job id (else the record's own)."""
        ...

    def active(self, owner: str) -> int: ...

    def counts_by_model(self) -> dict[tuple[str, str], int]: ...

    def ended_before(self, when: float) -> list[JobRecord]: ...

    def delete(self, record: JobRecord) -> None: ...

    def save_request(self, job_id: str, request: str) -> None:
        """Keep the job's request (JSON), so that any Router can run the job again."""
        ...

    def request(self, job_id: str) -> str | None: ...

    def unfinished(self) -> list[JobRecord]: ...

    def job_ids(self, owner: str | None) -> list[str]:
        """Ids of `owner`'s jobs (every job for None), oldest first."""
        ...

    def webhooks_pending(self) -> list[JobRecord]:
        """Ended jobs whose webhook is not delivered (nor given up) yet."""
        ...

    def beat(self, store: str, ttl_s: float) -> None:
        """The job store `store` is alive for the next `ttl_s` seconds."""
        ...

    def alive(self, store: str) -> bool: ...


def _zero_counts(models: Iterable[str]) -> dict[tuple[str, str], int]:
    return {(model, state.value): 0 for model in models for state in JobState}


class LocalJobStorage:
    """Records in this process; ended ones also as JSON files in `directory`, read back at start."""

    def __init__(self, directory: str | Path | None = None) -> None:
        self.jobs: dict[str, JobRecord] = {}
        self.by_key: dict[tuple[str, str], str] = {}
        self.requests: dict[str, str] = {}
        self.heartbeats: dict[str, float] = {}  # store -> monotonic deadline
        self.directory = Path(directory) if directory else None
        if self.directory:
            self.directory.mkdir(parents=True, exist_ok=True)
            for path in self.directory.glob("*.json"):
                self._remember(JobRecord.model_validate_json(path.read_text()))

    def _remember(self, record: JobRecord) -> None:
        self.jobs[record.job_id] = record
        if record.idempotency_key:
            self.by_key[(record.owner, record.idempotency_key)] = record.job_id

    def get(self, job_id: str) -> JobRecord | None:
        return self.jobs.get(job_id)

    def save(self, record: JobRecord, was: JobState | None) -> None:
        self.jobs[record.job_id] = record
        if record.ended and self.directory:
            tmp = self.directory / f".{record.job_id}.tmp"
            tmp.write_text(record.model_dump_json())
            tmp.replace(self.directory / f"{record.job_id}.json")

    def key_holder(self, owner: str, key: str) -> str | None:
        job_id = self.by_key.get((owner, key))
        return job_id if job_id in self.jobs else None

    def create(self, record: JobRecord) -> str:
        if record.idempotency_key and (held := self.key_holder(record.owner, record.idempotency_key)):
            return held
        self._remember(record)
        return record.job_id

    def active(self, owner: str) -> int:
        return sum(1 for r in self.jobs.values() if r.owner == owner and not r.ended)

    def counts_by_model(self) -> dict[tuple[str, str], int]:
        counts = _zero_counts({r.model for r in self.jobs.values()})
        for record in self.jobs.values():
            counts[(record.model, record.state.value)] += 1
        return counts

    def ended_before(self, when: float) -> list[JobRecord]:
        return [r for r in self.jobs.values() if r.ended and r.finished_at < when]

    def delete(self, record: JobRecord) -> None:
        self.jobs.pop(record.job_id, None)
        self.requests.pop(record.job_id, None)
        self.by_key.pop((record.owner, record.idempotency_key), None)
        if self.directory:
            (self.directory / f"{record.job_id}.json").unlink(missing_ok=True)

    def save_request(self, job_id: str, request: str) -> None:
        self.requests[job_id] = request

    def request(self, job_id: str) -> str | None:
        return self.requests.get(job_id)

    def unfinished(self) -> list[JobRecord]:
        return [record for record in self.jobs.values() if not record.ended]

    def job_ids(self, owner: str | None) -> list[str]:
        records = sorted(self.jobs.values(), key=lambda r: (r.created_at, r.job_id))
        return [r.job_id for r in records if owner is None or r.owner == owner]

    def webhooks_pending(self) -> list[JobRecord]:
        return [r for r in self.jobs.values() if r.ended and r.webhook_state == WEBHOOK_PENDING]

    def beat(self, store: str, ttl_s: float) -> None:
        self.heartbeats[store] = time.monotonic() + ttl_s

    def alive(self, store: str) -> bool:
        return self.heartbeats.get(store, 0.0) > time.monotonic()


class RedisJobStorage:
    """Records in Redis under `prefix`: one JSON value per job plus the indexes JobBook asks about."""

    def __init__(self, url: str, prefix: str = "videogen:jobs") -> None:
        import redis

        self.redis = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=10)
        self.prefix = prefix

    def _job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def _key(self, owner: str, key: str) -> str:
        return f"{self.prefix}:key:{owner}:{key}"

    def _active(self, owner: str) -> str:
        return f"{self.prefix}:active:{owner}"

    def _request(self, job_id: str) -> str:
        return f"{self.prefix}:request:{job_id}"

    def _owned(self, owner: str) -> str:
        return f"{self.prefix}:owned:{owner}"

    def _heartbeat(self, store: str) -> str:
        return f"{self.prefix}:store:{store}"

    @property
    def _unfinished(self) -> str:
        return f"{self.prefix}:unfinished"

    @property
    def _webhooks(self) -> str:
        return f"{self.prefix}:webhooks"

    @property
    def _created(self) -> str:
        return f"{self.prefix}:created"

    @property
    def _counts(self) -> str:
        return f"{self.prefix}:counts"

    @property
    def _ended(self) -> str:
        return f"{self.prefix}:ended"

    @staticmethod
    def _count_field(model: str, state: str) -> str:
        return f"{model}\x1f{state}"

    def get(self, job_id: str) -> JobRecord | None:
        data = self.redis.get(self._job(job_id))
        return None if data is None else JobRecord.model_validate_json(data)

    def save(self, record: JobRecord, was: JobState | None) -> None:
        with self.redis.pipeline(transaction=True) as tx:
            self._write(tx, record, was)
            tx.execute()

    def _write(self, tx: Any, record: JobRecord, was: JobState | None) -> None:
        tx.set(self._job(record.job_id), record.model_dump_json())
        if was is not record.state:
            if was is not None:
                tx.hincrby(self._counts, self._count_field(record.model, was.value), -1)
            tx.hincrby(self._counts, self._count_field(record.model, record.state.value), 1)
        if record.ended:
            tx.srem(self._active(record.owner), record.job_id)
            tx.srem(self._unfinished, record.job_id)
            tx.delete(self._request(record.job_id))  # never run again
            tx.zadd(self._ended, {record.job_id: record.finished_at or time.time()})
            if record.webhook_state == WEBHOOK_PENDING:
                tx.sadd(self._webhooks, record.job_id)
            else:
                tx.srem(self._webhooks, record.job_id)
        else:
            tx.sadd(self._active(record.owner), record.job_id)
            tx.sadd(self._unfinished, record.job_id)

    def key_holder(self, owner: str, key: str) -> str | None:
        held = self.redis.get(self._key(owner, key))
        if held is None:
            return None
        job_id = held.decode()
        return job_id if self.redis.exists(self._job(job_id)) else None

    def create(self, record: JobRecord) -> str:
        if record.idempotency_key:
            # The key is taken atomically: two job stores (an old and a new cluster) cannot both win.
            key = self._key(record.owner, record.idempotency_key)
            if not self.redis.set(key, record.job_id, nx=True):
                holder = self.key_holder(record.owner, record.idempotency_key)
                if holder is not None:
                    return holder
                self.redis.set(key, record.job_id)  # the holder expired: the key is free again
        with self.redis.pipeline(transaction=True) as tx:
            self._write(tx, record, None)
            tx.zadd(self._created, {record.job_id: record.created_at})
            tx.zadd(self._owned(record.owner), {record.job_id: record.created_at})
            tx.execute()
        return record.job_id

    def active(self, owner: str) -> int:
        return int(self.redis.scard(self._active(owner)))

    def counts_by_model(self) -> dict[tuple[str, str], int]:
        raw = self.redis.hgetall(self._counts)
        counts = _zero_counts({field.decode().split("\x1f")[0] for field in raw})
        for field, value in raw.items():
            model, state = field.decode().split("\x1f")
            counts[(model, state)] = int(value)
        return counts

    def ended_before(self, when: float) -> list[JobRecord]:
        ids = [job_id.decode() for job_id in self.redis.zrangebyscore(self._ended, "-inf", f"({when}")]
        return [record for job_id in ids if (record := self.get(job_id)) is not None]

    def delete(self, record: JobRecord) -> None:
        with self.redis.pipeline(transaction=True) as tx:
            tx.delete(self._job(record.job_id))
            if record.idempotency_key:
                tx.delete(self._key(record.owner, record.idempotency_key))
            tx.srem(self._active(record.owner), record.job_id)
            tx.srem(self._unfinished, record.job_id)
            tx.delete(self._request(record.job_id))
            tx.zrem(self._ended, record.job_id)
            tx.zrem(self._created, record.job_id)
            tx.zrem(self._owned(record.owner), record.job_id)
            tx.srem(self._webhooks, record.job_id)
            tx.hincrby(self._counts, self._count_field(record.model, record.state.value), -1)
            tx.execute()

    def save_request(self, job_id: str, request: str) -> None:
        self.redis.set(self._request(job_id), request)

    def request(self, job_id: str) -> str | None:
        data = self.redis.get(self._request(job_id))
        return None if data is None else data.decode()

    def unfinished(self) -> list[JobRecord]:
        ids = sorted(job_id.decode() for job_id in self.redis.smembers(self._unfinished))
        return [record for job_id in ids if (record := self.get(job_id)) is not None and not record.ended]

    def job_ids(self, owner: str | None) -> list[str]:
        index = self._created if owner is None else self._owned(owner)
        return [job_id.decode() for job_id in self.redis.zrange(index, 0, -1)]

    def webhooks_pending(self) -> list[JobRecord]:
        ids = sorted(job_id.decode() for job_id in self.redis.smembers(self._webhooks))
        return [
            r for job_id in ids if (r := self.get(job_id)) is not None and r.webhook_state == WEBHOOK_PENDING
        ]

    def beat(self, store: str, ttl_s: float) -> None:
        self.redis.set(self._heartbeat(store), b"1", px=max(1, int(ttl_s * 1000)))

    def alive(self, store: str) -> bool:
        return bool(self.redis.exists(self._heartbeat(store)))


def job_storage(directory: str | Path | None, redis_url: str | None) -> JobStorage:
    """Redis when a URL is given, else this process with ended jobs in `directory`."""
    return RedisJobStorage(redis_url) if redis_url else LocalJobStorage(directory)
