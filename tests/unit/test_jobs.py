"""The job state machine: transitions, idempotency, cancellation, persistence."""

from __future__ import annotations

import pytest

from serve.errors import InvalidArgument, NotFound
from serve.events import Stage
from serve.jobs import JobBook, JobState
from tests.support import summary


def test_job_runs_from_queued_to_succeeded():
    book = JobBook()
    record, created = book.create("svd")
    assert created and record.state is JobState.QUEUED
    assert book.start(record.job_id)
    assert book.progress(record.job_id, Stage.DENOISING, 1, 4, 0.5) is False
    book.succeed(record.job_id, summary(video_bytes=10))
    final = book.get(record.job_id)
    assert final.state is JobState.SUCCEEDED and final.step == 1 and final.summary == summary(video_bytes=10)


def test_same_idempotency_key_returns_the_existing_job():
    book = JobBook()
    first, _ = book.create("svd", "order-17")
    again, created = book.create("svd", "order-17")
    assert not created and again.job_id == first.job_id
    assert book.create("svd", "order-18")[0].job_id != first.job_id


def test_idempotency_keys_are_scoped_by_owner():
    book = JobBook()
    assert book.create("svd", "k", owner="a")[0].job_id != book.create("svd", "k", owner="b")[0].job_id


def test_invalid_idempotency_key_is_rejected():
    with pytest.raises(InvalidArgument, match="idempotency_key"):
        JobBook().create("svd", "../../etc/passwd")


def test_cancelling_a_queued_job_ends_it_and_it_never_starts():
    book = JobBook()
    record, _ = book.create("svd")
    assert book.cancel(record.job_id).state is JobState.CANCELLED
    assert book.start(record.job_id) is False


def test_cancelling_a_running_job_asks_it_to_stop_at_the_next_step():
    book = JobBook()
    record, _ = book.create("svd")
    book.start(record.job_id)
    assert book.cancel(record.job_id).state is JobState.RUNNING
    assert book.progress(record.job_id, Stage.DENOISING, 2, 4, 1.0) is True
    assert book.fail(record.job_id, "CANCELLED", "cancelled after step 2").state is JobState.CANCELLED


def test_ended_jobs_do_not_change_again():
    book = JobBook()
    record, _ = book.create("svd")
    book.start(record.job_id)
    book.fail(record.job_id, "INTERNAL", "boom")
    assert book.succeed(record.job_id, summary()).state is JobState.FAILED


def test_unknown_and_malformed_job_ids():
    book = JobBook()
    with pytest.raises(NotFound):
        book.get("0" * 32)
    with pytest.raises(InvalidArgument, match="job_id"):
        book.get("../x")


def test_other_owners_cannot_see_a_job():
    book = JobBook()
    record, _ = book.create("svd", owner="alice")
    with pytest.raises(NotFound):
        book.get(record.job_id, owner="mallory")


def test_ended_jobs_survive_a_restart_of_the_store(tmp_path):
    book = JobBook(tmp_path)
    record, _ = book.create("svd", "key-1")
    book.start(record.job_id)
    book.succeed(record.job_id, summary(video_bytes=3))
    reopened = JobBook(tmp_path)
    assert reopened.get(record.job_id).state is JobState.SUCCEEDED
    assert reopened.create("svd", "key-1")[0].job_id == record.job_id


def test_expired_jobs_are_forgotten(tmp_path):
    book = JobBook(tmp_path, ttl_s=10)
    record, _ = book.create("svd")
    book.start(record.job_id)
    book.fail(record.job_id, "INTERNAL", "x")
    assert book.expire(now=record.created_at + 5) == []
    assert book.expire(now=book.get(record.job_id).finished_at + 11) == [record.job_id]
    assert not list(tmp_path.glob("*.json"))


def test_an_owner_at_its_quota_is_refused_as_a_quota_refusal_even_through_ray():
    from ray.exceptions import RayTaskError

    from serve.errors import QuotaExceeded, ResourceExhausted, error_status, is_quota_refusal

    book = JobBook()
    book.create("svd", owner="alice", max_active=1)
    with pytest.raises(QuotaExceeded) as refused:
        book.create("svd", owner="alice", max_active=1)
    assert error_status(refused.value)[0] == "RESOURCE_EXHAUSTED"
    # As the Router sees it: raised in the job store actor, wrapped by Ray.
    wrapped = RayTaskError("create", "traceback", refused.value)
    assert is_quota_refusal(refused.value) and is_quota_refusal(wrapped)
    assert not is_quota_refusal(ResourceExhausted("model 'svd' is at capacity"))


def test_job_counts_are_by_model_and_state_with_zeros_for_a_model_seen():
    book = JobBook()
    record, _ = book.create("svd")
    book.start(record.job_id)
    book.create("animatediff")
    counts = book.counts_by_model()
    assert counts[("svd", "running")] == 1 and counts[("svd", "queued")] == 0
    assert counts[("animatediff", "queued")] == 1
    assert {model for model, _ in counts} == {"svd", "animatediff"}
