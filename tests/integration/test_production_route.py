"""The route production takes: Ray's own CLI deploys the Serve config that `videogen serve-config` writes.

KubeRay hands a RayService's serveConfigV2 to a running Ray cluster, which imports the builder named by
`import_path` and calls it through Ray's own checks with the config's `args`. On one machine the same
route is `ray start --head`, then `serve run CONFIG`. The embedded default (configs/local.yaml) goes
that way here, and both kinds of model answer: the 2-rank HunyuanVideo and a model scaled to zero.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from serve.api import pb
from serve.client import VideogenClient
from serve.config import ServeConfig
from serve.video import probe_mp4
from tests.integration.cluster import wait_until
from tests.integration.ray_cli import BIN, ray_head
from tests.support import REPO, png

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

LOCAL = REPO / "configs" / "local.yaml"
POOL = {"videogen.io/pool": "local"}


def test_serve_run_deploys_the_generated_config_on_a_ray_cluster(tmp_path: Path) -> None:
    written = subprocess.run(
        [str(BIN / "videogen"), "serve-config", "--config", str(LOCAL)],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert written.returncode == 0, written.stderr[-2000:]
    # Placed by node labels as on Kubernetes (configs/production-gpu.yaml): every actor selects the pool
    # that this one node carries, so a selector Serve or Ray rejected or could not satisfy would show.
    deploy = yaml.safe_load(written.stdout)
    args = deploy["applications"][0]["args"]
    args["job_store"] = {"node_labels": POOL}
    args["router"]["node_labels"] = POOL
    for model in args["models"]:
        model["node_labels"] = POOL
    config_path = tmp_path / "serve-config.yaml"
    config_path.write_text(yaml.safe_dump(deploy, sort_keys=False))
    grpc_port = deploy["grpc_options"]["port"]
    assert grpc_port == ServeConfig.from_file(LOCAL).grpc_port

    with ray_head(tmp_path, POOL) as head:
        head.serve_run(config_path)
        with VideogenClient(f"127.0.0.1:{grpc_port}") as client:
            models = {
                m.name: m for m in wait_until(lambda: client.list_models(timeout=10), 120, what="ListModels")
            }
            assert set(models) == {m.name for m in ServeConfig.from_file(LOCAL).app.models}
            assert models["hunyuanvideo"].gpus_per_replica == 2  # two rank actors, xDiT Ulysses
            assert models["svd"].expected_cold_start_seconds > 0  # min_replicas 0: no replica yet
            # ...and healthy all the same: a request starts one (per-model grpc.health.v1).
            from grpc_health.v1 import health_pb2, health_pb2_grpc

            check = health_pb2_grpc.HealthStub(client.channel).Check
            reply = check(health_pb2.HealthCheckRequest(service="svd"), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            parallel = client.generate(
                pb.GenerationParams(model="hunyuanvideo", prompt="a red fox running in the snow", seed=3),
                timeout=300,
            )
            # svd has no replica until this request: it waits for a cold start, then answers.
            from_zero = client.generate(pb.GenerationParams(model="svd", image=png(), seed=3), timeout=300)
        assert probe_mp4(parallel.data)[:3] == (9, 32, 32)
        assert probe_mp4(from_zero.data)[:3] == (4, 64, 64)
