"""Faults on a real cluster: OOM, deadlines, a replica or Router killed mid-job, graceful shutdown.

A separate Serve application ("faults") so that killing its processes never disturbs the shared one.
Its model replica is FaultyModelServer (tests/integration/fakes.py), a test fake: the real tiny
pipeline, whose scheduler raises torch.OutOfMemoryError (prompt "FAKE-OOM") or takes 0.2 s a step
(prompt "FAKE-SLOW", so that long requests are long on any machine) when asked.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from serve.api import pb
from serve.client import VideogenClient
from serve.config import AppConfig
from tests.integration.cluster import job_record, kill_replica, replica_names, wait_until
from tests.integration.fakes import FAKE_OOM_MARKER, FAKE_SLOW_MARKER, FAKE_SLOW_STEP_S

pytestmark = pytest.mark.integration

APP = "faults"
MODEL = "hunyuanvideo"
DEPLOYMENT = "Model_hunyuanvideo"
LONG_STEPS = 150  # x FAKE_SLOW_STEP_S = 30 s of work
RESTART_TIMEOUT_S = 120


@dataclass
class Faults:
    target: str
    results_dir: Path

    def client(self) -> VideogenClient:
        return VideogenClient(self.target, application=APP)


@pytest.fixture(scope="module")
def faults(service, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Faults]:
    from ray import serve

    from serve.deployments import build_app_with
    from tests.integration.fakes import FaultyModelServer

    results_dir = tmp_path_factory.mktemp("faults-results")
    config = AppConfig.model_validate(
        {
            "models": [
                {
                    "name": MODEL,
                    "weights": "tiny",
                    "num_cpus": 0.1,
                    "max_queued_requests": 4,
                    "request_timeout_s": 120,  # also the graceful shutdown budget
                    "autoscaling": {"min_replicas": 1, "max_replicas": 1},
                }
            ],
            "results_dir": str(results_dir),
            "job_sweep_interval_s": 1.0,
        }
    )
    serve.run(build_app_with(config, FaultyModelServer), name=APP, route_prefix=f"/{APP}")
    yield Faults(service.target, results_dir)
    serve.delete(APP)


def params(prompt: str = "a red fox", steps: int = 2) -> pb.GenerationParams:
    return pb.GenerationParams(model=MODEL, prompt=prompt, seed=1, num_inference_steps=steps)


def slow(steps: int) -> pb.GenerationParams:
    return params(f"{FAKE_SLOW_MARKER} fox", steps)


def wait_for_step(client: VideogenClient, job_id: str, step: int) -> pb.Job:
    for update in client.watch(job_id, timeout=120):
        if update.progress.step >= step:
            return update
    raise AssertionError(f"job {job_id} ended before step {step}")


def serving(faults: Faults) -> bool:
    with faults.client() as client:
        return client.generate(params(), timeout=30).summary.num_frames > 0


def test_oom_mid_generation_is_resource_exhausted_and_the_replica_keeps_serving(faults):
    before = replica_names(APP, DEPLOYMENT)
    with faults.client() as client:
        with pytest.raises(grpc.RpcError) as error:
            client.generate(params(f"{FAKE_OOM_MARKER} fox", steps=4), timeout=60)
        assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "out of memory" in error.value.details()

        job = client.submit(params(f"{FAKE_OOM_MARKER} fox", steps=4))
        final = client.wait(job.job_id, timeout=60)
        assert final.state == pb.JOB_STATE_FAILED and final.error_code == "RESOURCE_EXHAUSTED"
        assert "out of memory" in final.error

        assert client.generate(params(), timeout=60).summary.num_frames > 0
    assert replica_names(APP, DEPLOYMENT) == before  # the same process served on


def test_a_client_deadline_cancels_the_work_on_the_replica(faults):
    with faults.client() as client:
        client.generate(params(), timeout=60)  # warm
        with pytest.raises(grpc.RpcError) as error:
            client.generate(slow(LONG_STEPS), timeout=3.0)
        assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        expired = time.monotonic()
        client.generate(params(), timeout=60)
        freed_after = time.monotonic() - expired
    # Had the work gone on, the next request would have waited for the rest of its 30 s.
    assert freed_after < 8.0, freed_after
    assert freed_after < LONG_STEPS * FAKE_SLOW_STEP_S / 3


def test_cancel_job_stops_within_one_step_and_the_replica_serves_the_next(faults):
    with faults.client() as client:
        job = client.submit(slow(LONG_STEPS))
        wait_for_step(client, job.job_id, 3)
        step_at_cancel = client.cancel(job.job_id).progress.step
        final = client.wait(job.job_id, timeout=60)
        assert final.state == pb.JOB_STATE_CANCELLED
        # The replica recorded no step beyond the one running when the cancel arrived.
        assert step_at_cancel >= 3 and final.progress.step <= step_at_cancel + 1
        with pytest.raises(grpc.RpcError) as error:
            client.fetch(job.job_id)
        assert error.value.code() == grpc.StatusCode.NOT_FOUND
        after = client.generate(params(), timeout=60)
    # The replica runs one request at a time: the next one waited only for the step in flight.
    assert after.summary.queue_seconds < LONG_STEPS * FAKE_SLOW_STEP_S / 6


def test_cancelling_the_generate_call_stops_the_denoising_on_the_replica(faults):
    with faults.client() as client:
        stream = client.generate_stream(slow(LONG_STEPS), timeout=120)
        for event in stream:
            if event.WhichOneof("event") == "progress" and event.progress.step >= 2:
                stream.cancel()
                break
        after = client.generate(params(), timeout=60)
    # Had the cancel not reached the replica, the next request would have waited for the rest of 30 s.
    assert after.summary.queue_seconds < LONG_STEPS * FAKE_SLOW_STEP_S / 6, after.summary.queue_seconds


def test_a_replica_killed_mid_job_runs_the_job_again_on_a_new_replica_and_stores_one_video(faults):
    steps = 40  # x FAKE_SLOW_STEP_S = 8 s a run
    with faults.client() as client:
        job = client.submit(slow(steps))
        wait_for_step(client, job.job_id, 2)
        killed = kill_replica(APP, DEPLOYMENT)

        final = client.wait(job.job_id, timeout=RESTART_TIMEOUT_S + 60)
    assert final.state == pb.JOB_STATE_SUCCEEDED, final
    assert final.progress.step == steps
    record = job_record(faults.results_dir, job.job_id)
    assert record.attempts == 2  # job_max_attempts 2 (the default): the first run died with its replica
    assert [p.name for p in faults.results_dir.glob(f"{job.job_id}*")] == [f"{job.job_id}.mp4"]
    assert killed not in replica_names(APP, DEPLOYMENT)


def test_a_job_whose_replica_dies_on_every_attempt_fails_with_the_reason(faults):
    with faults.client() as client:
        job = client.submit(slow(LONG_STEPS))
        for attempt in (1, 2):  # job_max_attempts

            def running(attempt: int = attempt) -> bool:
                record = job_record(faults.results_dir, job.job_id)
                return record.attempts == attempt and record.state.value == "running" and record.step >= 2

            wait_until(running, RESTART_TIMEOUT_S, interval_s=0.5, what=f"attempt {attempt} to run")
            kill_replica(APP, DEPLOYMENT)
        final = client.wait(job.job_id, timeout=60)
    assert final.state == pb.JOB_STATE_FAILED, final
    assert final.error_code == "UNAVAILABLE" and "replica" in final.error and "\n" not in final.error
    assert final.error.endswith("(attempt 2 of 2)") and final.progress.step < LONG_STEPS

    wait_until(lambda: serving(faults), RESTART_TIMEOUT_S, interval_s=2, what="Serve to restart the replica")


def test_a_job_queued_in_a_router_that_dies_is_run_by_the_restarted_router(faults):
    with faults.client() as client:
        running = client.submit(slow(30))  # 6 s on the one replica
        wait_for_step(client, running.job_id, 1)
        queued = client.submit(params())  # waits in the Router for the busy replica
        assert client.get_job(queued.job_id).state == pb.JOB_STATE_QUEUED
        kill_replica(APP, "Router")

    # The sweep sees the Router gone and queues the job for any Router; Serve's new Router claims it
    # and runs it from the request the job store kept.
    queued_final = wait_until(
        lambda: (record := job_record(faults.results_dir, queued.job_id)).ended and record,
        timeout_s=RESTART_TIMEOUT_S + 60,
        what="the orphaned job to be run by the new Router",
    )
    assert queued_final.state.value == "succeeded", queued_final
    assert queued_final.attempts == 1 and not queued_final.awaiting_dispatch
    assert [p.name for p in faults.results_dir.glob(f"{queued.job_id}*")] == [f"{queued.job_id}.mp4"]
    # The running job is not stranded either: its replica finishes it or records why it stopped.
    running_final = wait_until(
        lambda: (record := job_record(faults.results_dir, running.job_id)).ended and record,
        timeout_s=120,
        what="the running job to end",
    )
    assert running_final.state.value == "succeeded" or running_final.error
    wait_until(lambda: serving(faults), RESTART_TIMEOUT_S, interval_s=2, what="Serve to restart the Router")


def test_graceful_shutdown_drains_the_running_job(faults):
    from ray import serve

    with faults.client() as client:
        job = client.submit(slow(20))  # 4 s
        wait_for_step(client, job.job_id, 1)
        assert client.get_job(job.job_id).state == pb.JOB_STATE_RUNNING
    deleting = threading.Thread(target=serve.delete, args=(APP,))
    deleting.start()
    deleting.join(timeout=180)
    assert not deleting.is_alive()

    record = job_record(faults.results_dir, job.job_id)
    assert record.state.value == "succeeded", record
    assert record.summary.num_inference_steps == 20
    assert list(faults.results_dir.glob(f"{job.job_id}.*"))
