"""A cluster upgrade as KubeRay's NewCluster strategy makes it: the old Ray cluster goes away while a job
runs, a new one starts against the same Redis and results volume, and it finishes the old cluster's job.

Both clusters are started with Ray's CLI and deployed with `serve run` (tests/integration/ray_cli.py);
the job store of each keeps a heartbeat in Redis, and the new one adopts the unfinished jobs of a store
whose heartbeat lapsed, running them again from the request kept with the record.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from serve.api import pb
from serve.client import VideogenClient
from serve.config import ServeConfig
from serve.ports import free_port
from serve.video import probe_mp4
from tests.integration.cluster import wait_until
from tests.integration.ray_cli import ray_head
from tests.support import png

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

MODEL = "svd"
STEPS = 150  # the tiny model's most: tens of seconds, so the old cluster goes in the middle
SWEEP_S = 1.0  # a job store is gone once its heartbeat is 3 sweeps old


def test_a_new_cluster_on_the_same_redis_finishes_the_jobs_of_the_cluster_it_replaces(
    tmp_path: Path, redis_server
) -> None:
    import redis

    redis_url = redis_server.url.removesuffix("/0") + "/5"
    redis.Redis.from_url(redis_url).flushdb()
    config = ServeConfig.model_validate(
        {
            "grpc_port": free_port(),
            "http_port": free_port(),
            "app": {
                "results_dir": str(tmp_path / "results"),  # the results volume both clusters mount
                "job_sweep_interval_s": SWEEP_S,
                "job_store": {"redis_url": redis_url},
                "models": [
                    {
                        "name": MODEL,
                        "weights": "tiny",
                        "num_cpus": 0.5,
                        "autoscaling": {"min_replicas": 1, "max_replicas": 1},
                    }
                ],
            },
        }
    )
    config_path = tmp_path / "serve-config.yaml"
    config_path.write_text(yaml.safe_dump(config.to_serve_deploy(), sort_keys=False))
    address = f"127.0.0.1:{config.grpc_port}"
    params = pb.GenerationParams(model=MODEL, image=png(), num_inference_steps=STEPS, seed=5)

    with ray_head(tmp_path, name="old-cluster") as old:
        old.serve_run(config_path)
        with VideogenClient(address) as client:
            wait_until(lambda: client.list_models(timeout=10), 180, what="the old cluster to serve")
            job = client.submit(params, idempotency_key="upgrade-1")
            wait_until(
                lambda: client.get_job(job.job_id).progress.step >= 2, 180, what="the job to be running"
            )
        old.process.kill_group()  # the old cluster goes at once, its replica mid-job

    with ray_head(tmp_path, name="new-cluster") as new:
        new.serve_run(config_path)
        with VideogenClient(address) as client:
            # The new cluster's Router reads the old cluster's jobs from Redis at once...
            seen = wait_until(lambda: client.get_job(job.job_id, timeout=10), 180, what="the new cluster")
            assert seen.job_id == job.job_id
            done = client.wait(job.job_id, timeout=600)
            assert done.state == pb.JOB_STATE_SUCCEEDED, done
            assert done.progress.step == STEPS
            # ...keeps its idempotency key, and serves its one video.
            assert client.submit(params, idempotency_key="upgrade-1").job_id == job.job_id
            video = client.fetch(job.job_id)
    assert probe_mp4(video)[1:3] == (64, 64)
    assert [p.name for p in (tmp_path / "results").glob(f"{job.job_id}*")] == [f"{job.job_id}.mp4"]
    record = yaml.safe_load(
        redis.Redis.from_url(redis_url).get(f"videogen:jobs:job:{job.job_id}")
    )  # JSON is YAML
    assert record["attempts"] == 2  # the old cluster's run, then the new one's
