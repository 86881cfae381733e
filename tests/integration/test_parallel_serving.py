"""HunyuanVideo served through gRPC by a 2-rank replica (placement group of 2 logical GPUs), as a
sequence-parallel pair (Ulysses 2) and as a pipeline of 2 stages running PipeFusion's 2 patches after one
warm-up step: the same serving behaviour from both.

A second Serve application next to the session's `videogen` app: the same builder, one model with
`parallel: {...}`; the client selects it with the `application` metadata.
"""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterator

import grpc
import pytest
import ray

from parallel.group import RANK_NAMESPACE
from serve.api import pb
from serve.config import AppConfig
from serve.metrics import RESIDENT_MEMORY
from serve.video import probe_mp4
from tests.integration.cluster import replica_names, wait_until

pytestmark = pytest.mark.integration

APP = "videogen-parallel"


def params(**fields) -> pb.GenerationParams:
    return pb.GenerationParams(
        model="hunyuanvideo", **{"prompt": "a red fox in the snow", "seed": 5, **fields}
    )


@pytest.fixture(
    scope="module",
    params=[{"ulysses_degree": 2}, {"pipeline_degree": 2, "pipeline_patches": 2}],
    ids=["ulysses2", "pipeline2-patches2"],
)
def parallel_app(service, tmp_path_factory: pytest.TempPathFactory, request) -> Iterator[None]:
    from ray import serve

    from serve.deployments import build_app

    config = AppConfig.model_validate(
        {
            "models": [
                {
                    "name": "hunyuanvideo",
                    "weights": "tiny",  # tiny limits: 32x32 x 9 frames by default
                    "num_cpus": 0.1,
                    "parallel": request.param,
                    "progress_interval_s": 0,  # every step's event: the tests act on step numbers
                    "autoscaling": {"min_replicas": 1, "max_replicas": 1},
                }
            ],
            "results_dir": str(tmp_path_factory.mktemp("parallel-results")),
        }
    )
    serve.run(build_app(config), name=APP, route_prefix="/parallel")
    yield
    serve.delete(APP)


@pytest.fixture
def client(service, parallel_app):
    with service.client() as client:
        client.metadata = [("application", APP)]
        yield client


def rank_actor(rank: int):
    names = [
        a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["namespace"] == RANK_NAMESPACE
    ]
    name = next(n for n in names if n.startswith("rank-hunyuanvideo-") and n.endswith(f"rank{rank}"))
    return ray.get_actor(name, namespace=RANK_NAMESPACE)


def memory_series(metrics_port: int) -> dict[tuple[str, str], float]:
    """(rank, device) -> value of hunyuanvideo's resident-memory series on Ray's metrics endpoint."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    found = {}
    for line in text.splitlines():
        if line.startswith(RESIDENT_MEMORY.exported + "{") and 'model="hunyuanvideo"' in line:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
            found[(labels["rank"], labels["device"])] = float(line.rsplit(" ", 1)[1])
    return found


def test_each_rank_exports_its_own_memory_labelled_by_rank_and_device(service, client):
    client.generate(params(num_inference_steps=2), timeout=120)  # the group is up and has run
    series = wait_until(
        lambda: (found := memory_series(service.metrics_port)) and len(found) >= 2 and found,
        60,
        what="per-rank memory series",
    )
    # On the CPU each rank's device is the host (on a GPU: its GPU's UUID, plus the gpu_memory_* series).
    assert {key for key in series} >= {("0", "cpu"), ("1", "cpu")}
    assert all(value > 100e6 for value in series.values())  # each a process holding the transformer


def test_a_two_rank_replica_streams_progress_and_returns_a_valid_mp4(client):
    steps: list[int] = []
    video = client.generate(
        params(num_inference_steps=3), on_progress=lambda p: steps.append(p.step), timeout=120
    )
    assert probe_mp4(video.data)[:3] == (9, 32, 32)
    assert {1, 2, 3} <= set(steps)


def test_killing_a_rank_mid_job_fails_that_job_unavailable_and_the_next_request_succeeds(client):
    stream = client.generate_stream(
        params(num_inference_steps=50, height=128, width=128, num_frames=17), timeout=120
    )
    with pytest.raises(grpc.RpcError) as error:
        for event in stream:
            if event.WhichOneof("event") == "progress" and event.progress.step == 2:
                ray.kill(rank_actor(1))
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "rank 1 of hunyuanvideo died" in error.value.details()

    video = client.generate(params(), timeout=180)  # the replica rebuilds its rank group first
    assert probe_mp4(video.data)[0] == 9


def test_a_rank_that_dies_while_idle_gets_its_replica_replaced_before_a_request_meets_it(client):
    deployment = "Model_hunyuanvideo"
    client.generate(params(), timeout=180)  # the group is up (a previous test may have torn it down)
    (before,) = replica_names(APP, deployment)
    ray.kill(rank_actor(1))
    # The replica's health check (serve/deployments.py check_health) finds the dead rank; Serve
    # replaces the replica without any request arriving.
    wait_until(
        lambda: replica_names(APP, deployment) not in (set(), {before}),
        180,
        interval_s=1,
        what="Serve to replace the replica whose rank died",
    )
    video = client.generate(params(), timeout=180)
    assert probe_mp4(video.data)[0] == 9
