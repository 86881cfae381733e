"""One real Ray cluster and Serve instance per test session, with every model on tiny weights."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from serve.catalog import CATALOG
from serve.config import SERVICER_FUNCTIONS, AppConfig, ServeConfig
from serve.ports import free_port

# Few steps are fast; tests that need a long-running request ask for more steps.
BACKPRESSURE_MODEL = "modelscope-t2v"
BACKPRESSURE_QUEUE = 2
# The models that tests address by name keep a replica for the whole session. Every other model scales to
# zero: the tests that walk the catalog start its replica on the first request and Serve removes it soon
# after, so at most a few of them are resident at a time on a 2-core machine instead of all of them at once.
WARM_MODELS = frozenset({"cogvideox-2b", "hunyuanvideo", "svd", BACKPRESSURE_MODEL})
WARM = {"min_replicas": 1, "max_replicas": 1}
COLD = {"min_replicas": 0, "max_replicas": 1, "downscale_delay_s": 20.0, "downscale_to_zero_delay_s": 20.0}
# Serve's gRPC proxy limit, as `videogen serve` sets it (tests/integration/test_hostile_input.py).
APP = "videogen"
PROXY_MAX_MESSAGE_BYTES = ServeConfig.model_fields["max_message_bytes"].default


@dataclass
class Service:
    target: str
    config: AppConfig
    results_dir: Path
    metrics_port: int
    http_url: str  # Serve's HTTP proxy: the OpenAI-compatible API under /v1

    def client(self, **kwargs):
        from serve.client import VideogenClient

        return VideogenClient(self.target, **kwargs)

    def resident_replicas(self) -> set[str]:
        """Actor names of the replicas that live the whole session: the Router's and WARM_MODELS'."""
        from tests.integration.cluster import replica_names

        warm = [model.deployment_name for model in self.config.models if model.name in WARM_MODELS]
        return set().union(*(replica_names(APP, deployment) for deployment in ["Router", *warm]))


WEBHOOK_BACKOFF_S = 0.2


def make_app_config(results_dir: Path, webhook_secret_file: Path) -> AppConfig:
    models = []
    for name in CATALOG:
        model = {
            "name": name,
            "weights": "tiny",
            "num_cpus": 0.1,
            "max_queued_requests": 16,
            "autoscaling": WARM if name in WARM_MODELS else COLD,
        }
        if name == BACKPRESSURE_MODEL:
            model["max_queued_requests"] = BACKPRESSURE_QUEUE
        models.append(model)
    # Webhooks to the tests' own loopback receivers (tests/support.WebhookReceiver).
    webhooks = {
        "allowed_hosts": ["127.0.0.1"],
        "allow_private_addresses": True,
        "secret_file": str(webhook_secret_file),
        "backoff_s": WEBHOOK_BACKOFF_S,
    }
    return AppConfig.model_validate({"models": models, "results_dir": str(results_dir), "webhooks": webhooks})


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[int]:
    import ray
    from ray import serve

    from serve.service import limit_proxy_messages

    limit_proxy_messages(PROXY_MAX_MESSAGE_BYTES)
    metrics_port = free_port()
    ray.init(
        address="local",  # a cluster of the tests' own, never one that `ray start` left running
        num_cpus=32,
        num_gpus=2,
        include_dashboard=False,
        namespace="videogen",
        _metrics_export_port=metrics_port,
        # Workers push metrics to the export port every 10 s by default; 1 s keeps metric tests short.
        _system_config={"metrics_report_interval_ms": 1000},
        logging_level="WARNING",
    )
    yield metrics_port
    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="session")
def service(ray_cluster: int, tmp_path_factory: pytest.TempPathFactory) -> Service:
    from ray import serve
    from ray.serve.config import gRPCOptions

    from serve.deployments import build_app
    from serve.webhooks import new_secret

    results_dir = tmp_path_factory.mktemp("results")
    grpc_port, http_port = free_port(), free_port()
    serve.start(
        http_options={"host": "127.0.0.1", "port": http_port},
        grpc_options=gRPCOptions(port=grpc_port, grpc_servicer_functions=SERVICER_FUNCTIONS),
    )
    secret_file = tmp_path_factory.mktemp("webhooks") / "secret"
    secret_file.write_text(new_secret())
    config = make_app_config(results_dir, secret_file)
    serve.run(build_app(config), name=APP, route_prefix="/")
    return Service(
        f"127.0.0.1:{grpc_port}", config, results_dir, ray_cluster, f"http://127.0.0.1:{http_port}"
    )
