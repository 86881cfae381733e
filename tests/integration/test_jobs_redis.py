"""Jobs kept in a real Redis (job_store.redis_url): they outlive the job store process.

A Serve application of its own next to the session's, with its job store on the session's loopback
redis-server. A job is submitted, the job store actor is killed while the job runs (Ray restarts it),
and the job still finishes, is found, and keeps its idempotency key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
import ray

from serve.api import pb
from serve.config import AppConfig
from serve.jobs import STORE_NAME, STORE_NAMESPACE
from tests.integration.cluster import wait_until

pytestmark = pytest.mark.integration

APP = "videogen-redis-jobs"
MODEL = "svd"
LONG_STEPS = 40  # a few seconds on the tiny model: the job store is killed while it runs


def params(steps: int = 2) -> pb.GenerationParams:
    from tests.support import png

    return pb.GenerationParams(model=MODEL, image=png(), num_inference_steps=steps, seed=4)


@pytest.fixture(scope="module")
def app(service, redis_server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from ray import serve

    from serve.deployments import build_app

    results_dir = str(tmp_path_factory.mktemp("redis-results").resolve())
    config = AppConfig.model_validate(
        {
            "models": [
                {
                    "name": MODEL,
                    "weights": "tiny",
                    "num_cpus": 0.1,
                    "autoscaling": {"min_replicas": 1, "max_replicas": 1},
                }
            ],
            "results_dir": results_dir,
            "job_store": {"redis_url": redis_server.url.removesuffix("/0") + "/3"},
        }
    )
    serve.run(build_app(config), name=APP, route_prefix=f"/{APP}")
    yield results_dir
    serve.delete(APP)


def test_a_job_outlives_its_job_store_process(service, app):
    store_name = f"{STORE_NAME}-{hashlib.sha1(app.encode()).hexdigest()[:10]}"
    with service.client() as client:
        client.metadata = [("application", APP)]
        job = client.submit(params(LONG_STEPS), idempotency_key="outlives-1")
        wait_until(lambda: client.get_job(job.job_id).state == pb.JOB_STATE_RUNNING, 60, what="running")
        store = ray.get_actor(store_name, namespace=STORE_NAMESPACE)
        pid = ray.get(store.__ray_call__.remote(lambda self: __import__("os").getpid()))
        ray.kill(store, no_restart=False)  # the process dies; Ray starts a new one

        done = client.wait(job.job_id, timeout=120)
        assert done.state == pb.JOB_STATE_SUCCEEDED, done
        assert ray.get(store.__ray_call__.remote(lambda self: __import__("os").getpid())) != pid
        # The new process answers from Redis: the record, its video and its idempotency key.
        assert client.get_job(job.job_id).state == pb.JOB_STATE_SUCCEEDED
        assert client.submit(params(LONG_STEPS), idempotency_key="outlives-1").job_id == job.job_id
        assert len(client.fetch(job.job_id)) > 0
