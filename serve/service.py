"""`videogen serve`: start (or join) Ray, deploy the application, serve until interrupted."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from serve.config import SERVICER_FUNCTIONS, ServeConfig
from serve.offline import prepare_ray_environment
from serve.stop_signals import stop_on_signals

log = logging.getLogger(__name__)

PROXY_MAX_MESSAGE_ENV = "RAY_SERVE_GRPC_MAX_MESSAGE_SIZE"


def limit_proxy_messages(max_message_bytes: int) -> None:
    """Cap the gRPC messages Serve's proxy accepts (its default is 2 GiB).

    Serve reads the limit from the environment of the proxy's process, which inherits it from the
    process that starts Ray: call this before `ray.init`. A cluster started elsewhere (KubeRay) sets
    the variable in its pods.
    """
    os.environ[PROXY_MAX_MESSAGE_ENV] = str(max_message_bytes)


def start(config: ServeConfig) -> None:
    """Start Ray (unless an address is given), Serve's proxies, and the application; returns when ready."""
    prepare_ray_environment()
    import ray
    from ray import serve
    from ray.serve.config import gRPCOptions

    from serve.deployments import build_app

    Path(config.app.results_dir).mkdir(parents=True, exist_ok=True)
    if not ray.is_initialized():
        limit_proxy_messages(config.max_message_bytes)
        ray.init(
            # No address: a Ray of our own, even where `ray start` left a cluster that a bare
            # ray.init() would join (with other resources and ports than this config's).
            address=config.ray.address or "local",
            num_cpus=config.ray.num_cpus if not config.ray.address else None,
            num_gpus=config.ray.num_gpus if not config.ray.address else None,
            include_dashboard=config.ray.include_dashboard,
            namespace="videogen",
            _metrics_export_port=config.ray.metrics_export_port if not config.ray.address else None,
            configure_logging=True,
            logging_level=logging.WARNING,
        )
    serve.start(
        http_options={"host": config.host, "port": config.http_port},
        grpc_options=gRPCOptions(
            port=config.grpc_port,
            grpc_servicer_functions=SERVICER_FUNCTIONS,
            request_timeout_s=config.request_timeout_s,
        ),
    )
    serve.run(build_app(config.app), name=config.app_name, route_prefix="/", blocking=False)


def stop() -> None:
    import ray
    from ray import serve

    serve.shutdown()
    ray.shutdown()


def run_service(config_path: str | Path) -> int:
    """Serve until SIGINT/SIGTERM, then shut down cleanly."""
    config = ServeConfig.from_file(config_path)
    began = time.perf_counter()
    start(config)
    print(
        f"videogen: serving {len(config.app.models)} models on gRPC 127.0.0.1:{config.grpc_port} and "
        f"HTTP http://127.0.0.1:{config.http_port}/ (OpenAI-compatible /v1/videos, try-it page at /) "
        f"(ready in {time.perf_counter() - began:.1f}s); metrics on :{config.ray.metrics_export_port}. "
        "Ctrl-C stops.",
        flush=True,
    )
    stop_on_signals().wait()
    print("videogen: shutting down", flush=True)
    stop()
    return 0
