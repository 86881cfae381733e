"""The application's configuration: which models, their weights, resources and autoscaling."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import AfterValidator, BaseModel, Field, field_validator, model_validator

from serve.catalog import CATALOG, NO_CACHE, CachePolicy, MemoryOptions, StepCache
from serve.compile import CompileOptions
from serve.ports import DEFAULT_GRPC_PORT
from serve.weights import TINY

ROUTER_DEPLOYMENT = "Router"  # the ingress deployment's name in every application
MAX_CHUNK_BYTES = 4 << 20  # largest video chunk on the wire (gRPC's default message limit is 4 MiB)
SERVICER_FUNCTIONS = [
    "serve.api.videogen.v1.videogen_pb2_grpc.add_VideoGenerationServicer_to_server",
    "grpc_health.v1.health_pb2_grpc.add_HealthServicer_to_server",
]


_LABEL_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_LABEL_KEY = re.compile(rf"^([a-z0-9]([-a-z0-9.]{{0,251}}[a-z0-9])?/)?{_LABEL_NAME}$")
_LABEL_VALUE = re.compile(rf"^({_LABEL_NAME})?$")


def _checked_labels(labels: dict[str, str]) -> dict[str, str]:
    for key, value in labels.items():
        if not _LABEL_KEY.match(key):
            raise ValueError(f"node label key {key!r} is not [prefix/]name (a Kubernetes-style label key)")
        if not _LABEL_VALUE.match(value):
            raise ValueError(f"node label {key}={value!r}: values are up to 63 of [A-Za-z0-9-_.]")
    return labels


NodeLabels = Annotated[dict[str, str], AfterValidator(_checked_labels)]
"""Ray node labels something must run on (Ray's label_selector; on KubeRay a worker group's `labels`)."""


class AutoscalingOptions(BaseModel):
    """Replica autoscaling for one model (Serve's `autoscaling_config`).

    The defaults suit video jobs that run for minutes on a GPU and a replica whose cold start (weights
    from disk to the GPU) also takes minutes: scale up soon after a queue forms, scale down late.
    README "Autoscaling" explains the choices.
    """

    min_replicas: int = Field(
        1,
        ge=0,
        description=(
            "replicas kept without traffic. 1 keeps the model loaded; 0 lets it scale to zero when idle: "
            "a request then waits for a replica to start (up to its deadline), and ListModels states the "
            "wait in expected_cold_start_seconds"
        ),
    )
    max_replicas: int = Field(
        1,
        ge=1,
        description=(
            "upper bound of replicas, so of the GPUs the model may take (num_gpus each, per rank when "
            "parallel); the Router admits max_replicas x max_ongoing_requests + max_queued_requests requests"
        ),
    )
    initial_replicas: int | None = Field(
        None, ge=0, description="replicas at deploy time (between min and max); unset: min_replicas"
    )
    target_ongoing_requests: float = Field(
        1.0,
        gt=0,
        description=(
            "requests per replica the autoscaler aims for, counting those queued at the Router's handle. "
            "1: a replica runs one video at a time, so every request beyond one per replica waits a whole "
            "job and is a reason for another replica"
        ),
    )
    upscale_delay_s: float = Field(
        10.0,
        ge=0,
        description=(
            "how long the load must stay above target before a replica is added. 10 s is small next to a "
            "job (minutes) and a cold start, so a queue never waits minutes for the decision, yet long "
            "enough that a blip does not start a replica that loads its weights for nothing"
        ),
    )
    downscale_delay_s: float = Field(
        600.0,
        ge=0,
        description=(
            "how long the load must stay below target before a replica is removed. 10 minutes: a removed "
            "replica costs a full cold start when traffic returns, and video traffic comes in bursts of "
            "jobs minutes apart; an idle GPU for a while is cheaper than making the next requests wait"
        ),
    )
    downscale_to_zero_delay_s: float | None = Field(
        None,
        ge=0,
        description="idle time before the last replica goes when min_replicas is 0; unset: downscale_delay_s",
    )
    metrics_interval_s: float = Field(
        2.0,
        gt=0,
        description=(
            "how often replicas and handles report their load to the autoscaler (Serve's default 10 s); "
            "2 s lets a decision follow a queue within seconds at negligible cost"
        ),
    )
    look_back_period_s: float = Field(
        10.0,
        gt=0,
        description=(
            "window the load is averaged over before comparing it with the target; 10 s smooths the "
            "start and end of single jobs. Keep it above metrics_interval_s"
        ),
    )

    @model_validator(mode="after")
    def _bounds_ordered(self) -> AutoscalingOptions:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas {self.min_replicas} exceeds max_replicas {self.max_replicas}")
        initial = self.initial_replicas
        if initial is not None and not self.min_replicas <= initial <= self.max_replicas:
            raise ValueError(
                f"initial_replicas {initial} is outside [min_replicas {self.min_replicas}, "
                f"max_replicas {self.max_replicas}]"
            )
        return self

    @property
    def scales_to_zero(self) -> bool:
        return self.min_replicas == 0

    def to_serve(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


# xfuser 0.7's attention backends for NVIDIA GPUs (`AttentionBackendType` member names, lower case).
AttentionBackend = Literal[
    "sdpa", "sdpa_math", "sdpa_efficient", "sdpa_flash", "cudnn", "flash", "flash_3", "flash_3_fp8", "flash_4"
]
# Ring attention merges the ranks' partial results by their log-sum-exp; xfuser 0.7 refuses to start
# ring_degree > 1 with these, which do not return it (runtime_state's compatibility check).
RING_INCAPABLE_BACKENDS: frozenset[str] = frozenset({"sdpa", "sdpa_math", "flash_4"})


class ParallelOptions(BaseModel):
    """Sequence and pipeline parallelism of one replica; world size is the product of the degrees."""

    ulysses_degree: int = Field(1, ge=1, description="Ulysses (all-to-all over heads) degree")
    ring_degree: int = Field(1, ge=1, description="ring attention degree")
    cfg_degree: int = Field(1, ge=1, le=2, description="2 runs the CFG branches on separate ranks")
    pipeline_degree: int = Field(
        1,
        ge=1,
        le=8,
        description="pipeline stages (HunyuanVideo): the transformer's blocks split into this many groups of "
        "ranks, each holding about 1/pipeline_degree of the transformer's weights (parallel/pipeline.py). "
        "Choose it when one GPU cannot hold the whole transformer (24-48 GB cards): it sends the hidden "
        "states from stage to stage once per step, and the stages take turns, so it trades speed for "
        "memory; sequence parallelism (ulysses, ring) splits the work but keeps the whole model on every "
        "GPU. Combined (pipeline x ulysses) each stage runs sequence-parallel. Step caching is off with "
        "pipeline_degree > 1 (the first block lives on the first stage only)",
    )
    pipeline_patches: int = Field(
        1,
        ge=1,
        le=64,
        description="PipeFusion patches (pipeline_degree > 1, ulysses = ring = 1): after the warm-up "
        "steps each stage runs the video tokens in this many patches and passes each on as soon as it is "
        "done, so the stages work at the same time; a patch attends to the other patches' keys and values "
        "of the previous step (stale), which changes the result a little (README: measured) and costs K/V "
        "memory for the whole video in every block of a stage. 1: the stages take turns on the whole "
        "sequence, exact",
    )
    pipeline_warmup_steps: int = Field(
        1,
        ge=1,
        description="whole-sequence steps before the patches start (pipeline_patches > 1); more is closer to "
        "the exact result and less overlap",
    )
    attention_backend: AttentionBackend | None = Field(
        None,
        description="xfuser's attention kernel on GPUs; unset: xfuser's pick (FA4, FA3, cuDNN, in that order "
        "of what is installed), which with ring_degree > 1 must be one that returns the log-sum-exp. On the "
        "CPU the ranks always use the CPU flash kernel",
    )
    parallel_vae: bool = Field(
        True,
        description="decode the VAE across the ranks (DistVAE: bands of rows, or whole tiles when VAE tiling "
        "is on); off: rank 0 decodes alone",
    )

    @model_validator(mode="after")
    def _patches_need_a_plain_pipeline(self) -> ParallelOptions:
        if self.pipeline_patches > 1 and self.pipeline_degree == 1:
            raise ValueError(
                f"pipeline_patches={self.pipeline_patches} needs pipeline_degree > 1 (patches flow between "
                "pipeline stages)"
            )
        if self.pipeline_patches > 1 and self.ulysses_degree * self.ring_degree > 1:
            raise ValueError(
                f"pipeline_patches={self.pipeline_patches} needs ulysses_degree = ring_degree = 1 (got "
                f"{self.ulysses_degree} and {self.ring_degree}): stale-patch K/V within a sequence-parallel "
                "stage is not built; use pipeline_patches=1 with sequence parallelism"
            )
        return self

    @model_validator(mode="after")
    def _backend_fits_ring(self) -> ParallelOptions:
        if self.ring_degree > 1 and self.attention_backend in RING_INCAPABLE_BACKENDS:
            capable = ", ".join(b for b in get_args(AttentionBackend) if b not in RING_INCAPABLE_BACKENDS)
            raise ValueError(
                f"attention_backend {self.attention_backend!r} cannot run ring_degree={self.ring_degree} "
                f"(ring attention needs the log-sum-exp it does not return); use one of: {capable}"
            )
        return self

    @property
    def world_size(self) -> int:
        return self.ulysses_degree * self.ring_degree * self.cfg_degree * self.pipeline_degree


class ModelDeployment(BaseModel):
    """One model served by its own deployment."""

    name: str = Field(description="catalog name of the model")
    weights: str = Field(TINY, description='"tiny", "hub" (the local Hugging Face cache) or a directory')
    memory: MemoryOptions | None = Field(None, description="memory options; the catalog's when unset")
    cache: StepCache | None = Field(
        None,
        description="step caching of requests that leave it unset; unset: the catalog's default for real "
        "weights, off for tiny ones (their random weights make every step differ)",
    )
    compile: CompileOptions | None = Field(
        None,
        description="torch.compile the transformer blocks (serve/compile.py), during a warm-up request at "
        "the default size that runs before the replica takes traffic; unset: eager",
    )
    num_cpus: float = Field(1.0, ge=0, description="CPUs a replica reserves")
    num_gpus: float = Field(0.0, ge=0, description="GPUs a replica reserves (per rank when parallel)")
    max_ongoing_requests: int = Field(
        1,
        ge=1,
        description=(
            "requests a replica takes at once. 1: the pipeline runs one video at a time, so a second one "
            "would only wait inside this replica, where a replica that comes up meanwhile cannot take it; "
            "waiting at the Router's handle instead, it counts for the autoscaler and goes to the first "
            "free replica"
        ),
    )
    max_queued_requests: int = Field(
        8, ge=-1, description="requests waiting per caller before RESOURCE_EXHAUSTED (-1: unbounded)"
    )
    autoscaling: AutoscalingOptions = Field(default_factory=AutoscalingOptions)
    node_labels: NodeLabels = Field(
        default_factory=dict,
        description="Ray node labels every replica (and every rank of a multi-GPU one) must run on, e.g. "
        "{videogen.io/pool: gpu-1x}; empty: any node with the resources",
    )
    parallel: ParallelOptions | None = Field(
        None, description="multi-GPU replica: one rank actor per GPU (parallel.group)"
    )
    progress_interval_s: float = Field(
        0.1,
        ge=0,
        description="Generate streams at most one step event per interval (stage changes and the last "
        "step always); real models take seconds per step, so each step is sent",
    )
    request_timeout_s: float = Field(3600.0, gt=0, description="longest a generation may run")
    cold_start_estimate_s: float = Field(
        60.0,
        ge=0,
        description=(
            "seconds from a replica's start to its first request answerable, reported by ListModels for a "
            "model that scales to zero until a replica has measured its own (then the last measured one). "
            "Measure a real model with bench/cold_start.py on a GPU node"
        ),
    )
    max_video_pixels: int | None = Field(
        None,
        ge=1,
        description="most num_frames x height x width one request may ask (each also within its range); "
        "unset: the longest clip at the default size for real weights, only the ranges for tiny ones",
    )

    @field_validator("name")
    @classmethod
    def _known_model(cls, name: str) -> str:
        if name not in CATALOG:
            raise ValueError(f"unknown model {name!r}; known: {', '.join(sorted(CATALOG))}")
        return name

    @model_validator(mode="after")
    def _cache_supported(self) -> ModelDeployment:
        allowed = CATALOG[self.name].cache_policies | {CachePolicy.OFF}
        if self.cache is not None and self.cache.policy not in allowed:
            raise ValueError(
                f"cache.policy {self.cache.policy} is not one {self.name} supports: {sorted(allowed)}"
            )
        return self

    @model_validator(mode="after")
    def _compile_supported(self) -> ModelDeployment:
        if self.compile is not None and CATALOG[self.name].denoiser != "transformer":
            raise ValueError(
                f"compile applies to transformer denoisers; {self.name} has a UNet (compilable models: "
                f"{', '.join(n for n, spec in CATALOG.items() if spec.denoiser == 'transformer')})"
            )
        return self

    @model_validator(mode="after")
    def _parallel_supported(self) -> ModelDeployment:
        if self.parallel is None or self.parallel.world_size == 1:
            return self
        spec = CATALOG[self.name]
        if not spec.sequence_parallel:
            capable = ", ".join(n for n, s in CATALOG.items() if s.sequence_parallel)
            raise ValueError(
                f"parallel: {self.name} has no sequence-parallel transformer in xDiT; models that can span "
                f"GPUs: {capable}"
            )
        if self.parallel.cfg_degree == 2 and spec.family != "hunyuanvideo":
            raise ValueError(
                f"parallel.cfg_degree=2 splits HunyuanVideo's true-CFG branches; {self.name} runs with "
                "cfg_degree 1 (put the GPUs into ulysses_degree or ring_degree)"
            )
        if self.parallel.pipeline_degree > 1:
            if spec.family != "hunyuanvideo":
                raise ValueError(
                    f"parallel.pipeline_degree={self.parallel.pipeline_degree}: pipeline stages are built "
                    f"for HunyuanVideo's transformer; {self.name} spans GPUs with ulysses or ring degrees"
                )
            if self.cache is not None and self.cache.policy is not CachePolicy.OFF:
                raise ValueError(
                    f"cache: {self.cache.policy.value} cannot run with parallel.pipeline_degree="
                    f"{self.parallel.pipeline_degree} (the first block lives on the first stage only); "
                    "set cache.policy off or pipeline_degree 1"
                )
            if self.compile is not None and self.parallel.pipeline_patches > 1:
                raise ValueError(
                    f"compile cannot run with parallel.pipeline_patches={self.parallel.pipeline_patches}: "
                    "each patch is another shape and another attention state, which torch.compile would "
                    "recompile per patch; leave compile unset or set pipeline_patches 1"
                )
        return self

    def default_cache(self) -> StepCache:
        """The step caching of a request that does not choose its own."""
        if self.cache is not None:
            return self.cache
        if self.tiny or (self.parallel is not None and self.parallel.pipeline_degree > 1):
            return NO_CACHE
        return CATALOG[self.name].default_cache

    @property
    def deployment_name(self) -> str:
        return "Model_" + self.name.replace("-", "_")

    @property
    def tiny(self) -> bool:
        return self.weights == TINY

    def video_pixel_budget(self) -> int | None:
        """The frames x height x width budget of one request (None: the ranges alone bound it)."""
        if self.max_video_pixels is not None:
            return self.max_video_pixels
        if self.tiny:
            return None
        # The catalog's memory estimate holds at the default size: allow the longest clip at that size.
        limits = CATALOG[self.name].limits
        return limits.num_frames.max * limits.default_height * limits.default_width


class AuthOptions(BaseModel):
    """API keys: bearer tokens checked by the Router against SHA-256 hashes in a keys file."""

    enabled: bool = Field(False, description="require `authorization: Bearer <key>` on every API call")
    keys_file: str | None = Field(
        None, description="YAML file of hashed keys (a mounted Secret in Kubernetes); see `videogen hash-key`"
    )
    reload_interval_s: float = Field(
        30.0, ge=0, description="how often the keys file is checked for changes (rotation without restart)"
    )

    @model_validator(mode="after")
    def _keys_when_enabled(self) -> AuthOptions:
        if self.enabled and not self.keys_file:
            raise ValueError("auth.enabled needs auth.keys_file")
        return self


class RouterOptions(BaseModel):
    """The ingress deployment."""

    num_replicas: int = Field(1, ge=1, description="Router replicas (stateless: jobs live elsewhere)")
    num_cpus: float = Field(0.25, ge=0, description="CPUs a Router replica reserves")
    max_ongoing_requests: int = Field(256, ge=1, description="concurrent RPCs per Router replica")
    node_labels: NodeLabels = Field(default_factory=dict, description="Ray node labels a Router must run on")
    chunk_bytes: int = Field(
        1 << 20,
        ge=4096,
        le=MAX_CHUNK_BYTES,
        description="video chunk size on the wire",
    )


class JobStoreOptions(BaseModel):
    """Where async jobs are kept (serve/job_records.py) and where the job store actor runs."""

    redis_url: str | None = Field(
        None,
        pattern=r"^rediss?://",
        description="keep job records, idempotency keys and progress in this Redis (redis://host:port/db): "
        "jobs then survive the job store, the Routers and a new Ray cluster; unset: in the job store's "
        "process, ended ones on the results volume (unfinished ones are lost with it)",
    )
    node_labels: NodeLabels = Field(default_factory=dict, description="Ray node labels it must run on")


class WebhookOptions(BaseModel):
    """Where job outcomes may be POSTed (serve/webhooks.py), how they are signed and retried.

    Off unless `allowed_hosts` names hosts: a caller's `webhook_url` must name one of them, so the
    service cannot be made to send requests to arbitrary places (server-side request forgery).
    """

    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="host names or IP addresses webhook URLs may name; `*.example.com` allows its "
        "subdomains. Empty: webhooks are refused",
    )
    allow_private_addresses: bool = Field(
        False,
        description="also deliver to loopback, link-local (cloud metadata), private and other non-public "
        "addresses; off, a URL whose host is or resolves to one is refused even when allowed by name",
    )
    secret_file: str | None = Field(
        None,
        description="file with the signing secret, `whsec_` + base64 (Standard Webhooks; a mounted "
        "Secret); read at each delivery, so a rotated secret applies to the next one",
    )
    timeout_s: float = Field(10.0, gt=0, le=60, description="seconds one delivery attempt may take")
    max_attempts: int = Field(5, ge=1, le=20, description="attempts per webhook, the first included")
    backoff_s: float = Field(
        2.0, gt=0, le=600, description="wait before the first retry; it doubles for each next one"
    )

    @model_validator(mode="after")
    def _secret_when_enabled(self) -> WebhookOptions:
        if self.allowed_hosts and not self.secret_file:
            raise ValueError("webhooks.secret_file is required when webhooks.allowed_hosts is set")
        return self


JOB_TTL_S = 86400.0
JOB_MAX_ATTEMPTS = 2
JOB_SWEEP_INTERVAL_S = 10.0


class JobStoreSettings(BaseModel):
    """What the job store actor is created with: AppConfig's job fields, gathered by
    `AppConfig.job_store_settings` for the Router and every model replica (whichever starts it)."""

    ttl_s: float = JOB_TTL_S
    sweep_interval_s: float = JOB_SWEEP_INTERVAL_S
    max_attempts: int = JOB_MAX_ATTEMPTS
    options: JobStoreOptions = Field(default_factory=lambda: JobStoreOptions())
    webhooks: WebhookOptions = Field(default_factory=WebhookOptions)


class AppConfig(BaseModel):
    """Everything `build_app` needs; also the `args` of the Serve config for `serve deploy`."""

    models: list[ModelDeployment] = Field(min_length=1, description="the models to serve")
    router: RouterOptions = Field(default_factory=RouterOptions)
    results_dir: str = Field("var/results", description="directory (shared by all nodes) for finished videos")
    job_ttl_s: float = Field(JOB_TTL_S, gt=0, description="how long finished jobs and videos are kept")
    job_max_attempts: int = Field(
        JOB_MAX_ATTEMPTS,
        ge=1,
        le=10,
        description="times a job is run when the model replica, the Router or the Ray cluster running it "
        "goes away (1: never run again); the video of a job is written once, whichever attempt finishes",
    )
    job_sweep_interval_s: float = Field(
        JOB_SWEEP_INTERVAL_S,
        gt=0,
        description="how often unfinished jobs are checked for a dead Router, replica or cluster",
    )
    auth: AuthOptions = Field(default_factory=AuthOptions, description="API keys (off: no authentication)")
    job_store: JobStoreOptions = Field(default_factory=lambda: JobStoreOptions())
    webhooks: WebhookOptions = Field(
        default_factory=WebhookOptions, description="job outcomes POSTed to callers (off by default)"
    )

    @property
    def job_store_settings(self) -> JobStoreSettings:
        return JobStoreSettings(
            ttl_s=self.job_ttl_s,
            sweep_interval_s=self.job_sweep_interval_s,
            max_attempts=self.job_max_attempts,
            options=self.job_store,
            webhooks=self.webhooks,
        )

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
    max_message_bytes: int = Field(
        32 << 20,
        ge=1 << 20,
        description="largest gRPC message the proxy accepts (a request carries at most one image); "
        "applied as RAY_SERVE_GRPC_MAX_MESSAGE_SIZE when `videogen serve` starts Ray",
    )

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
