"""The job state machine over both storages (this process, and a real Redis on loopback): transitions,
idempotency, cancellation, persistence, expiry."""

from __future__ import annotations

import pytest

from serve.errors import InvalidArgument, NotFound
from serve.events import Stage
from serve.jobs import JobBook, JobState
from tests.support import png, summary, tiny_request


@pytest.fixture(params=["local", "redis"])
def new_book(request, tmp_path):
    """A factory of JobBooks over one storage: this process (ended jobs in tmp_path) or a fresh Redis db."""
    redis_url = None
    if request.param == "redis":
        import redis

        redis_url = request.getfixturevalue("redis_server").url
        redis.Redis.from_url(redis_url).flushdb()

    def make(ttl_s: float = 86400.0) -> JobBook:
        return JobBook(tmp_path, ttl_s, redis_url)

    make.storage = request.param
    return make


def test_job_runs_from_queued_to_succeeded(new_book):
    book = new_book()
    record, created = book.create("svd")
    assert created and record.state is JobState.QUEUED
    assert book.start(record.job_id)
    assert book.progress(record.job_id, Stage.DENOISING, 1, 4, 0.5) is False
    book.succeed(record.job_id, summary(video_bytes=10))
    final = book.get(record.job_id)
    assert final.state is JobState.SUCCEEDED and final.step == 1 and final.summary == summary(video_bytes=10)


def test_same_idempotency_key_returns_the_existing_job(new_book):
    book = new_book()
    first, _ = book.create("svd", "order-17")
    again, created = book.create("svd", "order-17")
    assert not created and again.job_id == first.job_id
    assert book.create("svd", "order-18")[0].job_id != first.job_id


def test_idempotency_keys_are_scoped_by_owner(new_book):
    book = new_book()
    assert book.create("svd", "k", owner="a")[0].job_id != book.create("svd", "k", owner="b")[0].job_id


def test_a_key_finds_its_owners_job_alone(new_book):
    book = new_book()
    job, _ = book.create("svd", "k", owner="a")
    assert book.keyed("a", "k").job_id == job.job_id
    assert book.keyed("b", "k") is None and book.keyed("a", "other") is None and book.keyed("a", "") is None


def test_invalid_idempotency_key_is_rejected(new_book):
    with pytest.raises(InvalidArgument, match="idempotency_key"):
        new_book().create("svd", "../../etc/passwd")


def test_cancelling_a_queued_job_ends_it_and_it_never_starts(new_book):
    book = new_book()
    record, _ = book.create("svd")
    assert book.cancel(record.job_id).state is JobState.CANCELLED
    assert book.start(record.job_id) is False


def test_cancelling_a_running_job_asks_it_to_stop_at_the_next_step(new_book):
    book = new_book()
    record, _ = book.create("svd")
    book.start(record.job_id)
    assert book.cancel(record.job_id).state is JobState.RUNNING
    assert book.progress(record.job_id, Stage.DENOISING, 2, 4, 1.0) is True
    assert book.fail(record.job_id, "CANCELLED", "cancelled after step 2").state is JobState.CANCELLED


def test_ended_jobs_do_not_change_again(new_book):
    book = new_book()
    record, _ = book.create("svd")
    book.start(record.job_id)
    book.fail(record.job_id, "INTERNAL", "boom")
    assert book.succeed(record.job_id, summary()).state is JobState.FAILED


def test_unknown_and_malformed_job_ids(new_book):
    book = new_book()
    with pytest.raises(NotFound):
        book.get("0" * 32)
    with pytest.raises(InvalidArgument, match="job_id"):
        book.get("../x")


def test_other_owners_cannot_see_a_job(new_book):
    book = new_book()
    record, _ = book.create("svd", owner="alice")
    with pytest.raises(NotFound):
        book.get(record.job_id, owner="mallory")


def test_ended_jobs_survive_a_restart_of_the_store(new_book):
    book = new_book()
    record, _ = book.create("svd", "key-1")
    book.start(record.job_id)
    book.succeed(record.job_id, summary(video_bytes=3))
    reopened = new_book()
    assert reopened.get(record.job_id).state is JobState.SUCCEEDED
    assert reopened.create("svd", "key-1")[0].job_id == record.job_id


def test_expired_jobs_are_forgotten_with_their_key_and_counts(new_book, tmp_path):
    book = new_book(ttl_s=10)
    record, _ = book.create("svd", "key-9")
    book.start(record.job_id)
    book.fail(record.job_id, "INTERNAL", "x")
    assert book.expire(now=record.created_at + 5) == []
    assert book.expire(now=book.get(record.job_id).finished_at + 11) == [record.job_id]
    with pytest.raises(NotFound):
        book.get(record.job_id)
    assert book.counts()["failed"] == 0
    assert book.create("svd", "key-9")[1]  # the key is free again
    assert not list(tmp_path.glob("*.json"))


def test_unfinished_jobs_and_keys_survive_a_new_store_only_in_redis(new_book):
    book = new_book()
    record, _ = book.create("svd", "key-2", owner="alice")
    book.start(record.job_id)
    book.progress(record.job_id, Stage.DENOISING, 3, 8, 2.0)
    reopened = new_book()  # the job store restarted, or a new Ray cluster on the same Redis
    if new_book.storage == "local":
        with pytest.raises(NotFound):  # the local storage keeps only ended jobs on disk
            reopened.get(record.job_id)
        return
    found = reopened.get(record.job_id)
    assert (found.state, found.step) == (JobState.RUNNING, 3)
    assert reopened.create("svd", "key-2", owner="alice") == (found, False)
    assert reopened.active("alice") == 1
    reopened.succeed(record.job_id, summary())
    assert book.get(record.job_id).state is JobState.SUCCEEDED and book.active("alice") == 0


def test_two_stores_on_one_redis_give_one_job_per_idempotency_key(redis_server, tmp_path):
    import redis

    redis.Redis.from_url(redis_server.url).flushdb()
    old, new = JobBook(tmp_path, redis_url=redis_server.url), JobBook(tmp_path, redis_url=redis_server.url)
    first, created = old.create("svd", "nightly", owner="bob")
    again, created_again = new.create("svd", "nightly", owner="bob")
    assert created and not created_again and again.job_id == first.job_id
    assert new.counts_by_model()[("svd", "queued")] == 1


def test_an_owner_at_its_quota_is_refused_as_a_quota_refusal_even_through_ray(new_book):
    from ray.exceptions import RayTaskError

    from serve.errors import QuotaExceeded, ResourceExhausted, error_status, is_quota_refusal

    book = new_book()
    book.create("svd", owner="alice", max_active=1)
    with pytest.raises(QuotaExceeded) as refused:
        book.create("svd", owner="alice", max_active=1)
    assert error_status(refused.value)[0] == "RESOURCE_EXHAUSTED"
    # As the Router sees it: raised in the job store actor, wrapped by Ray.
    wrapped = RayTaskError("create", "traceback", refused.value)
    assert is_quota_refusal(refused.value) and is_quota_refusal(wrapped)
    assert not is_quota_refusal(ResourceExhausted("model 'svd' is at capacity"))


def test_job_counts_are_by_model_and_state_with_zeros_for_a_model_seen(new_book):
    book = new_book()
    record, _ = book.create("svd")
    book.start(record.job_id)
    book.create("animatediff")
    counts = book.counts_by_model()
    assert counts[("svd", "running")] == 1 and counts[("svd", "queued")] == 0
    assert counts[("animatediff", "queued")] == 1
    assert {model for model, _ in counts} == {"svd", "animatediff"}


def test_a_job_whose_replica_died_runs_again_until_its_attempts_are_used(new_book):
    book = new_book()
    record, _ = book.create("svd")
    book.start(record.job_id)
    book.progress(record.job_id, Stage.DENOISING, 5, 8, 1.0)
    assert book.requeue(record.job_id, "model replica unavailable: died", max_attempts=2)
    again = book.get(record.job_id)
    assert (again.state, again.step, again.attempts) == (JobState.QUEUED, 0, 1)
    assert book.start(record.job_id) and book.get(record.job_id).attempts == 2
    # The second death is the last: failed with the reason and the count.
    assert not book.requeue(record.job_id, "model replica unavailable: died", max_attempts=2)
    final = book.get(record.job_id)
    assert final.state is JobState.FAILED and final.error.endswith("(attempt 2 of 2)")


def test_a_cancelled_or_ended_job_is_not_run_again(new_book):
    book = new_book()
    cancelled, _ = book.create("svd")
    book.start(cancelled.job_id)
    book.cancel(cancelled.job_id)
    assert not book.requeue(cancelled.job_id, "died", max_attempts=3)
    done, _ = book.create("svd")
    book.start(done.job_id)
    book.succeed(done.job_id, summary())
    assert not book.requeue(done.job_id, "died", max_attempts=3)
    assert book.get(done.job_id).state is JobState.SUCCEEDED


def test_a_new_cluster_adopts_the_jobs_of_a_job_store_that_is_gone_and_runs_them_from_their_request(
    redis_server, tmp_path
):
    import time

    import redis

    redis.Redis.from_url(redis_server.url).flushdb()
    old = JobBook(tmp_path, redis_url=redis_server.url, store="old-cluster")
    old.storage.beat(old.store, 0.5)
    request = tiny_request("svd", image=png(), seed=11)
    record, _ = old.create("svd", "upgrade-1", owner="alice", request=request)
    old.start(record.job_id)
    old.progress(record.job_id, Stage.DENOISING, 3, 8, 2.0)
    used_up, _ = old.create("svd", request=request)
    old.start(used_up.job_id)
    old.requeue(used_up.job_id, "died", max_attempts=2)
    old.start(used_up.job_id)  # its second run, when the cluster went

    new = JobBook(tmp_path, redis_url=redis_server.url, store="new-cluster", max_attempts=2)
    assert new.adopt() == [] and new.claim(["svd"], holder="router") == []  # the old store is alive
    time.sleep(0.6)  # its heartbeat lapses: the old cluster is gone
    assert new.adopt() == [record.job_id]
    adopted = new.get(record.job_id)
    assert (adopted.state, adopted.step, adopted.store, adopted.attempts) == (
        JobState.QUEUED,
        0,
        "new-cluster",
        1,
    )
    failed = new.get(used_up.job_id)
    assert failed.state is JobState.FAILED and failed.error.endswith("(attempt 2 of 2)")
    assert new.claim(["animatediff"], holder="router") == []  # a Router without the model
    assert new.claim(["svd"], holder="router", free={"svd": 0}) == []  # nor one at capacity
    [(claimed, claimed_request)] = new.claim(["svd"], holder="router")
    assert claimed.job_id == record.job_id and claimed_request == request
    assert new.claim(["svd"], holder="router") == []  # claimed once
    assert new.start(record.job_id) and new.get(record.job_id).attempts == 2
    new.succeed(record.job_id, summary())
    assert old.create("svd", "upgrade-1", owner="alice")[0].state is JobState.SUCCEEDED
    assert new.storage.request(record.job_id) is None  # an ended job keeps no request


def test_pages_list_an_owners_jobs_in_creation_order_either_way(new_book):
    book = new_book()
    mine = [book.create("svd", owner="alice")[0].job_id for _ in range(5)]
    book.create("svd", owner="bob")
    page, more = book.page("alice", limit=2, newest_first=True)
    assert [r.job_id for r in page] == mine[::-1][:2] and more
    page, more = book.page("alice", after=mine[1], limit=10, newest_first=False)
    assert [r.job_id for r in page] == mine[2:] and not more
    assert len(book.page(None, limit=100)[0]) == 6  # authentication off: every job
    with pytest.raises(InvalidArgument, match="after"):
        book.page("bob", after=mine[0])


def test_deleting_an_ended_job_forgets_it_and_its_key(new_book):
    book = new_book()
    record, _ = book.create("svd", "key-1", owner="alice")
    book.start(record.job_id)
    book.succeed(record.job_id, summary(video_bytes=10))
    with pytest.raises(NotFound):
        book.delete(record.job_id, owner="bob")
    assert book.delete(record.job_id, owner="alice").ended
    with pytest.raises(NotFound):
        book.get(record.job_id)
    assert book.page("alice")[0] == [] and book.counts()["succeeded"] == 0
    assert book.create("svd", "key-1", owner="alice")[1]  # the key is free again


def test_deleting_a_running_job_cancels_it_and_forgets_it_when_it_stops(new_book):
    book = new_book()
    record, _ = book.create("svd", owner="alice")
    book.start(record.job_id)
    book.delete(record.job_id, owner="alice")
    with pytest.raises(NotFound):
        book.visible(record.job_id)
    assert book.page("alice")[0] == []
    assert book.progress(record.job_id, Stage.DENOISING, 2, 4, 1.0) is True  # the replica stops
    book.fail(record.job_id, "CANCELLED", "cancelled by the caller")
    with pytest.raises(NotFound):
        book.get(record.job_id)


def test_a_job_remembers_what_was_asked(new_book):
    book = new_book()
    request = tiny_request("svd", image=png())
    record, _ = book.create("svd", request=request)
    again = book.get(record.job_id)
    assert (again.width, again.height, again.num_frames, again.fps) == (
        request.width,
        request.height,
        request.num_frames,
        request.fps,
    )
