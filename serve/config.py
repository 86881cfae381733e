"""The application's configuration: which models, their weights, resources and autoscaling."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, field_validator, model_validator

from serve.catalog import CATALOG, MemoryOptions
from serve.weights import TINY

DEFAULT_GRPC_PORT = 50051
SERVICER_FUNCTIONS = [
    "serve.api.videogen.v1.videogen_pb2_grpc.add_VideoGenerationServicer_to_server",
    "grpc_health.v1.health_pb2_grpc.add_HealthServicer_to_server",
]


class AutoscalingOptions(BaseModel):
    """Replica autoscaling for one model; defaults suit multi-minute video jobs."""

    min_replicas: int = Field(1, ge=0, description="0 lets the model scale to zero (cold start on demand)")
    max_replicas: int = Field(1, ge=1, description="upper bound of replicas")
    initial_replicas: int | None = Field(None, ge=0, description="replicas at deploy time")
    target_ongoing_requests: float = Field(
        1.0, gt=0, description="a replica runs one video at a time; more queue on the same GPU"
    )
    upscale_delay_s: float = Field(10.0, ge=0, description="sustained queueing before adding a replica")
    downscale_delay_s: float = Field(
        600.0, ge=0, description="idle time before removing a replica: reloading weights costs minutes"
    )
    metrics_interval_s: float = Field(2.0, gt=0, description="how often replicas report load")
    look_back_period_s: float = Field(10.0, gt=0, description="window the load is averaged over")

    @model_validator(mode="after")
    def _bounds_ordered(self) -> AutoscalingOptions:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas {self.min_replicas} exceeds max_replicas {self.max_replicas}")
        return self

    def to_serve(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class ParallelOptions(BaseModel):
    """Sequence parallelism of one replica (HunyuanVideo); world size is the product of degrees."""

    ulysses_degree: int = Field(1, ge=1, description="Ulysses (all-to-all over heads) degree")
    ring_degree: int = Field(1, ge=1, description="ring attention degree")
    cfg_degree: int = Field(1, ge=1, le=2, description="2 runs the CFG branches on separate ranks")

    @property
    def world_size(self) -> int:
        return self.ulysses_degree * self.ring_degree * self.cfg_degree


class ModelDeployment(BaseModel):
    """One model served by its own deployment."""

    name: str = Field(description="catalog name of the model")
    weights: str = Field(TINY, description='"tiny", "hub" (the local Hugging Face cache) or a directory')
    memory: MemoryOptions | None = Field(None, description="memory options; the catalog's when unset")
    num_cpus: float = Field(1.0, ge=0, description="CPUs a replica reserves")
    num_gpus: float = Field(0.0, ge=0, description="GPUs a replica reserves (per rank when parallel)")
    max_ongoing_requests: int = Field(1, ge=1, description="requests a replica runs at once")
    max_queued_requests: int = Field(
        8, ge=-1, description="requests waiting per caller before RESOURCE_EXHAUSTED (-1: unbounded)"
    )
    autoscaling: AutoscalingOptions = Field(default_factory=AutoscalingOptions)
    parallel: ParallelOptions | None = Field(None, description="multi-GPU replica (ParallelModelServer)")
    request_timeout_s: float = Field(3600.0, gt=0, description="longest a generation may run")

    @field_validator("name")
    @classmethod
    def _known_model(cls, name: str) -> str:
        if name not in CATALOG:
            raise ValueError(f"unknown model {name!r}; known: {', '.join(sorted(CATALOG))}")
        return name

    @property
    def deployment_name(self) -> str:
        return "Model_" + self.name.replace("-", "_")

    @property
    def tiny(self) -> bool:
        return self.weights == TINY


class RouterOptions(BaseModel):
    """The ingress deployment."""

    num_replicas: int = Field(1, ge=1, description="Router replicas (stateless: jobs live elsewhere)")
    num_cpus: float = Field(0.25, ge=0, description="CPUs a Router replica reserves")
    max_ongoing_requests: int = Field(256, ge=1, description="concurrent RPCs per Router replica")
    chunk_bytes: int = Field(1 << 20, ge=4096, le=4 << 20, description="video chunk size on the wire")


class AppConfig(BaseModel):
    """Everything `build_app` needs; also the `args` of the Serve config for `serve deploy`."""

    models: list[ModelDeployment] = Field(min_length=1, description="the models to serve")
    router: RouterOptions = Field(default_factory=RouterOptions)
    results_dir: str = Field("var/results", description="directory (shared by all nodes) for finished videos")
    job_ttl_s: float = Field(86400.0, gt=0, description="how long finished jobs and videos are kept")

    @field_validator("models")
    @classmethod
    def _unique(cls, models: list[ModelDeployment]) -> list[ModelDeployment]:
        names = [m.name for m in models]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"models listed twice: {', '.join(duplicates)}")
        return models

    def model(self, name: str) -> ModelDeployment | None:
        return next((m for m in self.models if m.name == name), None)


class RayOptions(BaseModel):
    """How `videogen serve` starts or joins Ray."""

    address: str | None = Field(None, description="existing cluster address; a local Ray is started if unset")
    num_cpus: float | None = Field(None, description="logical CPUs of a local Ray (more than cores is fine)")
    num_gpus: float | None = Field(None, description="logical GPUs of a local Ray (auto-detected if unset)")
    include_dashboard: bool = Field(False, description="start Ray's dashboard (1 GB more memory)")
    metrics_export_port: int = Field(8080, description="port of Ray's Prometheus metrics endpoint")


class ServeConfig(BaseModel):
    """A file for `videogen serve`: the Ray and proxy settings plus the application."""

    app: AppConfig
    ray: RayOptions = Field(default_factory=RayOptions)
    grpc_port: int = Field(DEFAULT_GRPC_PORT, description="port of Serve's gRPC proxy")
    http_port: int = Field(8000, description="port of Serve's HTTP proxy (health and routes)")
    host: str = Field("127.0.0.1", description="address the HTTP proxy binds")
    app_name: str = Field("videogen", description="Serve application name")
    request_timeout_s: float | None = Field(None, description="gRPC proxy end-to-end timeout")

    @classmethod
    def from_file(cls, path: str | Path) -> ServeConfig:
        return cls.model_validate(yaml.safe_load(Path(path).read_text()))

    def to_serve_deploy(self) -> dict[str, Any]:
        """The equivalent Serve config (ServeDeploySchema) for `serve deploy` and KubeRay's serveConfigV2."""
        return {
            "proxy_location": "EveryNode",
            "http_options": {"host": "0.0.0.0", "port": self.http_port},
            "grpc_options": {
                "port": self.grpc_port,
                "grpc_servicer_functions": SERVICER_FUNCTIONS,
                **({"request_timeout_s": self.request_timeout_s} if self.request_timeout_s else {}),
            },
            "applications": [
                {
                    "name": self.app_name,
                    "route_prefix": "/",
                    "import_path": "serve.deployments:build_app",
                    "args": self.app.model_dump(mode="json", exclude_none=True),
                }
            ],
        }
