"""Jobs never stay QUEUED or RUNNING behind a dead Router or replica; per-caller quotas are exact."""

from __future__ import annotations

import asyncio
import time

import pytest
from ray.exceptions import ActorDiedError

from serve.errors import NotFound, ResourceExhausted
from serve.events import Stage
from serve.jobs import JobBook, JobState, JobStoreActor, holder_is_dead
from tests.support import summary, tiny_request


class FakeHolder:
    """Stands in for a Router or replica actor handle: answers `__ray_ready__` as alive, dead or hung."""

    def __init__(self, state: str = "alive") -> None:
        self.state = state
        outer = self

        class _Ready:
            def remote(self):
                return outer._ready()

        self.__ray_ready__ = _Ready()

    async def _ready(self) -> bool:
        if self.state == "dead":
            raise ActorDiedError()
        if self.state == "hung":
            await asyncio.sleep(60)
        return True


def test_quota_counts_the_owners_unfinished_jobs_only():
    book = JobBook()
    first, _ = book.create("svd", owner="alice", max_active=2)
    book.create("svd", owner="alice", max_active=2)
    book.create("svd", owner="bob", max_active=2)
    with pytest.raises(ResourceExhausted, match="alice"):
        book.create("svd", owner="alice", max_active=2)
    book.fail(first.job_id, "INTERNAL", "boom")
    assert book.create("svd", owner="alice", max_active=2)[1] is True
    assert book.active("alice") == 2 and book.active("bob") == 1


def test_an_idempotent_retry_at_the_quota_returns_the_existing_job():
    book = JobBook()
    job, _ = book.create("svd", idempotency_key="k1", owner="alice", max_active=1)
    again, created = book.create("svd", idempotency_key="k1", owner="alice", max_active=1)
    assert (again.job_id, created) == (job.job_id, False)


def test_jobs_are_invisible_to_other_owners():
    book = JobBook()
    job, _ = book.create("svd", owner="alice")
    assert book.get(job.job_id, "alice").job_id == job.job_id
    assert book.get(job.job_id, None).job_id == job.job_id  # auth off: no scoping
    for call in (lambda: book.get(job.job_id, "bob"), lambda: book.cancel(job.job_id, "bob")):
        with pytest.raises(NotFound):
            call()
    assert book.get(job.job_id).state is JobState.QUEUED


def test_a_queued_job_whose_router_died_fails_with_a_reason():
    router = FakeHolder()
    book = JobBook()
    job, _ = book.create("svd", holder=router)
    record = book.orphan(job.job_id, router)
    assert record.state is JobState.FAILED and record.error_code == "UNAVAILABLE"
    assert "Router" in record.error and not book.held()


def test_a_running_job_whose_replica_died_fails_with_a_reason():
    router, replica = FakeHolder(), FakeHolder()
    book = JobBook()
    job, _ = book.create("svd", holder=router)
    book.start(job.job_id, holder=replica)
    book.progress(job.job_id, Stage.DENOISING, 3, 10, 1.0)
    # The Router handed the job on: its death no longer matters, the replica's does.
    assert book.orphan(job.job_id, router).state is JobState.RUNNING
    record = book.orphan(job.job_id, replica)
    assert record.state is JobState.FAILED and "replica" in record.error and "step 3" in record.error


def test_a_job_whose_router_died_is_queued_for_any_router_from_its_kept_request():
    router, replica, other_router = FakeHolder(), FakeHolder(), FakeHolder()
    book = JobBook(max_attempts=2)
    request = tiny_request("svd")
    job, _ = book.create("svd", holder=router, request=request)
    requeued = book.orphan(job.job_id, router)
    assert (requeued.state, requeued.awaiting_dispatch, requeued.attempts) == (JobState.QUEUED, True, 0)
    assert book.held() == []
    assert book.claim(["svd"], other_router) == [(book.get(job.job_id), request)]
    assert book.claim(["svd"], other_router) == []
    # The new Router's run dies with its replica while no Router is left: queued once more, then failed.
    book.start(job.job_id, holder=replica)
    assert book.orphan(job.job_id, replica).state is JobState.QUEUED
    book.claim(["svd"], other_router)
    book.start(job.job_id, holder=replica)
    final = book.orphan(job.job_id, replica)
    assert final.state is JobState.FAILED and final.error.endswith("(attempt 2 of 2)")


def test_a_job_asked_to_stop_is_cancelled_not_run_again_when_its_replica_dies():
    replica = FakeHolder()
    book = JobBook()
    job, _ = book.create("svd", request=tiny_request("svd"))
    book.start(job.job_id, holder=replica)
    book.cancel(job.job_id)
    assert book.orphan(job.job_id, replica).state is JobState.CANCELLED


def test_an_ended_job_is_never_orphaned():
    replica = FakeHolder()
    book = JobBook()
    job, _ = book.create("svd")
    book.start(job.job_id, holder=replica)
    book.succeed(job.job_id, summary())
    assert book.held() == []
    assert book.orphan(job.job_id, replica).state is JobState.SUCCEEDED


def test_holder_is_dead_only_when_ray_says_the_actor_died():
    async def check() -> list[bool]:
        return [
            await holder_is_dead(FakeHolder("alive")),
            await holder_is_dead(FakeHolder("dead")),
            await holder_is_dead(FakeHolder("hung"), timeout_s=0.05),
        ]

    assert asyncio.run(check()) == [False, True, False]


def test_the_store_sweep_fails_exactly_the_jobs_of_dead_holders(tmp_path):
    async def scenario() -> tuple[list[str], dict[str, JobState]]:
        store = JobStoreActor(str(tmp_path), ttl_s=3600, sweep_interval_s=3600)
        alive, dead, dead_router = FakeHolder(), FakeHolder("dead"), FakeHolder("dead")
        queued_alive, _ = await store.create("svd", holder=alive)
        queued_dead, _ = await store.create("svd", holder=dead)
        # Replica and Router dead: nobody else will end it.
        running_dead, _ = await store.create("svd", holder=dead_router)
        await store.start(running_dead.job_id, holder=dead)
        # Replica dead, its Router alive: the Router runs it again or fails it, not the sweep.
        router_handles, _ = await store.create("svd", holder=alive)
        await store.start(router_handles.job_id, holder=dead)
        failed = await store.sweep()
        ids = (queued_alive.job_id, queued_dead.job_id, running_dead.job_id, router_handles.job_id)
        states = {job_id: store.book.get(job_id).state for job_id in ids}
        store.sweeper.cancel()
        return failed, states | {"ids": ids}

    failed, states = asyncio.run(scenario())
    queued_alive, queued_dead, running_dead, router_handles = states.pop("ids")
    assert sorted(failed) == sorted([queued_dead, running_dead])
    assert states[queued_alive] is JobState.QUEUED and states[router_handles] is JobState.RUNNING
    assert states[queued_dead] is states[running_dead] is JobState.FAILED


def test_the_sweep_expires_ended_jobs_past_the_ttl_and_deletes_their_videos(tmp_path, redis_server):
    from serve.results import ResultStore

    async def scenario(redis_url: str | None) -> tuple[bool, bool, bool]:
        store = JobStoreActor(str(tmp_path), ttl_s=0.2, sweep_interval_s=3600, redis_url=redis_url)
        old, _ = await store.create("svd")
        await store.start(old.job_id)
        await store.succeed(old.job_id, summary())
        ResultStore(tmp_path).put(old.job_id, b"video", "video/mp4")
        time.sleep(0.3)
        young, _ = await store.create("svd")  # unfinished: never expires
        await store.sweep()
        store.sweeper.cancel()
        gone = not (tmp_path / f"{old.job_id}.mp4").exists()
        try:
            await store.get(old.job_id)
            forgotten = False
        except NotFound:
            forgotten = True
        return forgotten, gone, (await store.get(young.job_id)).state is JobState.QUEUED

    assert asyncio.run(scenario(None)) == (True, True, True)
    assert asyncio.run(scenario(redis_server.url)) == (True, True, True)
