"""The k8s/ overlays render, validate offline and agree with the serve configs; broken copies fail clearly."""

from __future__ import annotations

import functools
from collections.abc import Callable

import pytest
import yaml

from serve.config import ServeConfig
from serve.k8s_manifest import OVERLAYS
from tests.k8s_checks import (
    GPU,
    H2C,
    REPO,
    Obj,
    find,
    mutated,
    overlay,
    pod_groups,
    render,
    servicer_services,
    validate,
    workers,
)

OVERLAY_NAMES = [o.name for o in OVERLAYS]
# Ids "overlay-<name>": a bare "gpu" id reads as the gpu marker to tests/conftest.py (skipped on CPUs).
OVERLAY_IDS = [f"overlay-{name}" for name in OVERLAY_NAMES]


@functools.cache
def _rendered(name: str) -> tuple[Obj, ...]:
    return tuple(render(overlay(name).directory(REPO)))


def objects(name: str) -> list[Obj]:
    """The rendered objects of an overlay (rendered once per session; callers get the cached list)."""
    return list(_rendered(name))


def rayservice(objs: list[Obj]) -> Obj:
    (found,) = find(objs, "RayService")
    return found


def worker_spec(rs: Obj, group: str) -> Obj:
    """The workerGroupSpecs entry called `group`."""
    return next(w for w in rs["spec"]["rayClusterConfig"]["workerGroupSpecs"] if w["groupName"] == group)


def worker_index(name: str, group: str) -> int:
    groups = rayservice(objects(name))["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    return next(i for i, w in enumerate(groups) if w["groupName"] == group)


def ray_container(rs: Obj, group: str) -> Obj:
    return worker_spec(rs, group)["template"]["spec"]["containers"][0]


def serve_config(name: str) -> ServeConfig:
    return ServeConfig.from_file(REPO / overlay(name).config)


# --- every overlay ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", OVERLAY_NAMES, ids=OVERLAY_IDS)
def test_overlay_renders_and_passes_every_schema_and_cross_check(name: str) -> None:
    report = validate(objects(name), overlay(name).device_gpus)

    assert report.problems == []


@pytest.mark.parametrize("name", OVERLAY_NAMES, ids=OVERLAY_IDS)
def test_rayservice_runs_the_checked_in_generated_serve_config(name: str) -> None:
    rs = rayservice(objects(name))

    assert rs["apiVersion"] == "ray.io/v1"
    assert rs["spec"]["serveConfigV2"] == overlay(name).serve_config_path(REPO).read_text()


@pytest.mark.parametrize("name", OVERLAY_NAMES, ids=OVERLAY_IDS)
def test_head_group_has_no_gpus_and_runs_no_replicas(name: str) -> None:
    head = next(g for g in pod_groups(rayservice(objects(name))) if g.node_type == "head")

    assert GPU not in head.limits and GPU not in head.requests
    assert head.ray_start_params["num-cpus"] == "0"
    assert head.requests and head.limits  # predictable scheduling


@pytest.mark.parametrize("name", OVERLAY_NAMES, ids=OVERLAY_IDS)
def test_every_ray_container_requests_cpu_and_memory(name: str) -> None:
    for group in pod_groups(rayservice(objects(name))):
        assert {"cpu", "memory"} <= set(group.requests), group.name
        assert {"cpu", "memory"} <= set(group.limits), group.name


@pytest.mark.parametrize("name", OVERLAY_NAMES, ids=OVERLAY_IDS)
def test_serve_service_exposes_grpc_as_h2c_on_the_configured_port(name: str) -> None:
    service = rayservice(objects(name))["spec"]["serveService"]
    ports = {p["name"]: p for p in service["spec"]["ports"]}

    assert ports["serve-grpc"]["appProtocol"] == H2C
    assert ports["serve-grpc"]["targetPort"] == "serve-grpc"
    for group in pod_groups(rayservice(objects(name))):
        assert group.ports()["serve-grpc"] == serve_config(name).grpc_port


@pytest.mark.parametrize("name", OVERLAY_NAMES, ids=OVERLAY_IDS)
def test_autoscaling_and_zero_downtime_upgrades_are_on(name: str) -> None:
    rs = rayservice(objects(name))

    assert rs["spec"]["rayClusterConfig"]["enableInTreeAutoscaling"] is True
    assert rs["spec"]["rayClusterConfig"]["autoscalerOptions"]["upscalingMode"] in ("Default", "Aggressive")
    assert rs["spec"]["upgradeStrategy"]["type"] == "NewCluster"


@pytest.mark.parametrize("name", OVERLAY_NAMES, ids=OVERLAY_IDS)
def test_podmonitors_scrape_the_ray_metrics_ports_of_head_and_workers(name: str) -> None:
    monitors = {m["metadata"]["name"]: m for m in find(objects(name), "PodMonitor")}
    ports = {n: [e["port"] for e in m["spec"]["podMetricsEndpoints"]] for n, m in monitors.items()}

    assert ports == {
        "videogen-ray-head": ["metrics", "as-metrics", "dash-metrics"],
        "videogen-ray-workers": ["metrics"],
    }
    assert serve_config(name).ray.metrics_export_port == 8080  # KubeRay's metrics port


@pytest.mark.parametrize("name", OVERLAY_NAMES, ids=OVERLAY_IDS)
def test_results_and_model_cache_are_persistent_volume_claims_mounted_by_every_worker(name: str) -> None:
    claims = {c["metadata"]["name"] for c in find(objects(name), "PersistentVolumeClaim")}

    assert claims == {"videogen-model-cache", "videogen-results"}
    for group in workers(rayservice(objects(name))):
        mounted = {
            v["persistentVolumeClaim"]["claimName"]: p
            for p, v in group.mounts()
            if "persistentVolumeClaim" in v
        }
        assert mounted.get("videogen-results") == serve_config(name).app.results_dir, group.name


# --- the gpu overlay -----------------------------------------------------------------------------


def test_gpu_worker_groups_have_gpu_limits_tolerations_and_node_selectors() -> None:
    gpu_groups = [g for g in workers(rayservice(objects("gpu"))) if GPU in g.limits]

    assert {g.name for g in gpu_groups} == {"gpu-1x", "gpu-4x"}
    for group in gpu_groups:
        assert group.requests[GPU] == group.limits[GPU]
        assert {"key": GPU, "operator": "Exists", "effect": "NoSchedule"} in group.spec["tolerations"]
        assert group.spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}


def test_hunyuanvideo_worker_group_has_its_world_size_in_gpus_on_one_node() -> None:
    hunyuan = serve_config("gpu").app.model("hunyuanvideo")
    rs = rayservice(objects("gpu"))
    (group,) = [g for g in workers(rs) if "hunyuanvideo" in g.models()]

    assert hunyuan is not None and hunyuan.parallel is not None
    assert (hunyuan.parallel.ulysses_degree, hunyuan.parallel.ring_degree) == (2, 2)
    assert int(group.limits[GPU]) == hunyuan.parallel.world_size == 4
    assert worker_spec(rs, group.name).get("numOfHosts", 1) == 1


def test_gpu_overlay_serves_real_weights_from_the_hugging_face_cache_volume() -> None:
    config = serve_config("gpu")
    rs = rayservice(objects("gpu"))

    assert {m.weights for m in config.app.models} == {"hub"}
    for group in workers(rs):
        if group.models():
            assert group.env()["HF_HOME"].startswith("/mnt/models/")
            assert group.env()["HF_HUB_OFFLINE"] == "1"


def test_grpcroute_sends_the_api_and_grpc_health_through_a_tls_gateway() -> None:
    objs = objects("gpu")
    (route,) = find(objs, "GRPCRoute")
    (gateway,) = find(objs, "Gateway")
    services = {m["method"]["service"] for rule in route["spec"]["rules"] for m in rule["matches"]}
    listener = next(
        x for x in gateway["spec"]["listeners"] if x["name"] == route["spec"]["parentRefs"][0]["sectionName"]
    )
    registered = servicer_services(
        yaml.safe_load(rayservice(objs)["spec"]["serveConfigV2"])["grpc_options"]["grpc_servicer_functions"]
    )

    assert services == {"videogen.v1.VideoGeneration", "grpc.health.v1.Health"} == registered
    assert (listener["protocol"], listener["tls"]["mode"]) == ("HTTPS", "Terminate")


def test_httproute_sends_the_http_api_to_serves_http_port_on_a_host_name_of_its_own() -> None:
    objs = objects("gpu")
    (route,) = find(objs, "HTTPRoute")
    (gateway,) = find(objs, "Gateway")
    listeners = {listener["name"]: listener for listener in gateway["spec"]["listeners"]}
    listener = listeners[route["spec"]["parentRefs"][0]["sectionName"]]
    ports = {p["port"]: p for p in rayservice(objs)["spec"]["serveService"]["spec"]["ports"]}
    (rule,) = route["spec"]["rules"]

    assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}}]
    assert [ports[backend["port"]]["name"] for backend in rule["backendRefs"]] == ["serve"]
    assert serve_config("gpu").http_port == rule["backendRefs"][0]["port"]
    assert (listener["protocol"], listener["tls"]["mode"]) == ("HTTPS", "Terminate")
    assert listener["hostname"] != listeners["grpc-tls"]["hostname"]


def test_fetch_weights_job_reads_the_deployed_serve_config() -> None:
    objs = objects("gpu")
    (job,) = find(objs, "Job")
    (config_map,) = [
        c for c in find(objs, "ConfigMap") if c["metadata"]["name"].startswith("videogen-serve-config")
    ]
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}

    assert volumes["serve-config"]["configMap"]["name"] == config_map["metadata"]["name"]
    assert config_map["data"]["serveConfigV2"] == rayservice(objs)["spec"]["serveConfigV2"]
    assert job["spec"]["template"]["spec"]["containers"][0]["command"][:3] == [
        "python",
        "-m",
        "serve.prefetch",
    ]


# --- broken manifests fail with a message that says what is wrong ---------------------------------

Change = Callable[[Obj], None]


def _set_max_replicas(value: object) -> Change:
    return lambda rs: worker_spec(rs, "gpu-4x").__setitem__("maxReplicas", value)


def _drop_gpu_limit(rs: Obj) -> None:
    del ray_container(rs, "gpu-4x")["resources"]["limits"][GPU]


def _set_gpus(count: str) -> Change:
    def change(rs: Obj) -> None:
        resources = ray_container(rs, "gpu-4x")["resources"]
        resources["limits"][GPU] = resources["requests"][GPU] = count

    return change


def _retarget_grpc(rs: Obj) -> None:
    next(p for p in rs["spec"]["serveService"]["spec"]["ports"] if p["name"] == "serve-grpc")[
        "targetPort"
    ] = "grpc"


def _rename_worker_grpc_port(rs: Obj) -> None:
    next(p for p in ray_container(rs, "gpu-1x")["ports"] if p["name"] == "serve-grpc")["name"] = "grpc"


def _rename_deployment(rs: Obj) -> None:
    rs["spec"]["serveConfigV2"] = rs["spec"]["serveConfigV2"].replace(
        "- name: Model_svd_xt\n", "- name: Model_svd\n"
    )


def _no_zero_downtime(rs: Obj) -> None:
    rs["spec"]["upgradeStrategy"]["type"] = "None"


def _too_few_gpu_1x_pods(rs: Obj) -> None:
    worker_spec(rs, "gpu-1x")["maxReplicas"] = 5


def _relabel_group(group: str, pool: str) -> Change:
    def change(rs: Obj) -> None:
        worker_spec(rs, group)["labels"] = {"videogen.io/pool": pool}

    return change


RS = "RayService/videogen"
G1, G4 = (f"spec.rayClusterConfig.workerGroupSpecs[{worker_index('gpu', g)}]" for g in ("gpu-1x", "gpu-4x"))

BROKEN: list[tuple[str, str, str | None, Change, list[str]]] = [
    (
        "wrong type in the RayService",
        "RayService",
        None,
        _set_max_replicas("2"),
        [f"{RS}: {G4}.maxReplicas: '2' is not of type 'integer'"],
    ),
    (
        "unknown RayService field",
        "RayService",
        None,
        lambda rs: worker_spec(rs, "gpu-4x").__setitem__("replica", 1),
        [f"{RS}: {G4}: Additional properties are not allowed ('replica' was unexpected)"],
    ),
    (
        "wrong type in a core kind",
        "PersistentVolumeClaim",
        "videogen-results",
        lambda pvc: pvc["spec"].__setitem__("accessModes", "ReadWriteMany"),
        [
            "PersistentVolumeClaim/videogen-results: spec.accessModes: 'ReadWriteMany' is not of type "
            "'array', 'null'"
        ],
    ),
    (
        "missing GPU limit",
        "RayService",
        None,
        _drop_gpu_limit,
        [
            f"{RS}: {G4}: GPU worker group gpu-4x has no resources.limits['nvidia.com/gpu'] on its Ray "
            "container; Kubernetes allocates GPUs by limits, so its pods would get none"
        ],
    ),
    (
        "4-GPU group with more GPUs than its models' world size",
        "RayService",
        None,
        _set_gpus("8"),
        [
            f"{RS}: {G4}: worker group gpu-4x has 8 GPUs per pod, but a hunyuanvideo replica is ulysses 2 x "
            "ring 2 x cfg 1 = 4 ranks = 4 GPUs on one node; make them equal",
            *(
                f"{RS}: {G4}: worker group gpu-4x has 8 GPUs per pod, but a {model} replica is ulysses 4 x "
                "ring 1 x cfg 1 = 4 ranks = 4 GPUs on one node; make them equal"
                for model in ("wan2.2-t2v-a14b", "hunyuanvideo-1.5")
            ),
        ],
    ),
    (
        "Service port targets a port the pods lack",
        "RayService",
        None,
        _retarget_grpc,
        [
            "Service videogen-serve (RayService spec.serveService) port 'serve-grpc' targets 'grpc', "
            "which is not a container port of the Serve pods of group(s) cpu, gpu-1x, gpu-4x"
        ],
    ),
    (
        "one worker group lacks the port the Service targets",
        "RayService",
        None,
        _rename_worker_grpc_port,
        [
            "Service videogen-serve (RayService spec.serveService) port 'serve-grpc' targets 'serve-grpc', "
            "which is not a container port of the Serve pods of group(s) gpu-1x"
        ],
    ),
    (
        "PodMonitor scrapes a port the pods lack",
        "PodMonitor",
        "videogen-ray-workers",
        lambda pm: pm["spec"]["podMetricsEndpoints"][0].__setitem__("port", "prometheus"),
        [
            "PodMonitor/videogen-ray-workers: spec.podMetricsEndpoints[0].port 'prometheus' is not a named "
            "container port of group(s) cpu, gpu-1x, gpu-4x"
        ],
    ),
    (
        "HTTPRoute attached to the gRPC listener",
        "HTTPRoute",
        None,
        lambda route: route["spec"]["parentRefs"][0].__setitem__("sectionName", "grpc-tls"),
        [
            "HTTPRoute/videogen-http: listener grpc-tls admits ['GRPCRoute'], not HTTPRoute",
            "GRPCRoute and HTTPRoute listeners share host names ['videogen.example.com']: a gateway cannot "
            "route both",
        ],
    ),
    (
        "HTTPRoute sent to the gRPC port",
        "HTTPRoute",
        None,
        lambda route: route["spec"]["rules"][0]["backendRefs"][0].__setitem__("port", 50051),
        ["HTTPRoute/videogen-http: spec.rules[0].backendRefs[0] port is not http"],
    ),
    (
        "GRPCRoute routes a service nobody serves",
        "GRPCRoute",
        None,
        lambda route: route["spec"]["rules"][0]["matches"][0]["method"].__setitem__(
            "service", "videogen.v2.X"
        ),
        [
            "GRPCRoute/videogen: spec.rules[0].matches[0].method.service 'videogen.v2.X' is not served; the "
            "Serve config registers ['grpc.health.v1.Health', 'videogen.v1.VideoGeneration']"
        ],
    ),
    (
        "serveConfigV2 lists a deployment the builder does not make",
        "RayService",
        None,
        _rename_deployment,
        [
            f"{RS}: spec.serveConfigV2: applications[0].deployments are ['Router', 'Model_cogvideox_5b', "
            "'Model_cogvideox_2b', 'Model_cogvideox_5b_i2v', 'Model_svd', 'Model_hunyuanvideo', "
            "'Model_wan2.2_ti2v_5b', 'Model_helios', 'Model_wan2.2_t2v_a14b', 'Model_hunyuanvideo_1.5'], but "
            "serve.deployments.build_app builds ['Model_cogvideox_2b', 'Model_cogvideox_5b', "
            "'Model_cogvideox_5b_i2v', 'Model_helios', 'Model_hunyuanvideo', 'Model_hunyuanvideo_1.5', "
            "'Model_svd_xt', 'Model_wan2.2_t2v_a14b', 'Model_wan2.2_ti2v_5b', 'Router']; regenerate with "
            "`python -m serve.k8s_manifest`"
        ],
    ),
    (
        "upgrade strategy with downtime",
        "RayService",
        None,
        _no_zero_downtime,
        [
            f"{RS}: spec.upgradeStrategy.type is 'None'; "
            "use one of ('NewCluster', 'NewClusterWithIncrementalUpgrade')"
        ],
    ),
    (
        "two worker groups with the same pool label",
        "RayService",
        None,
        _relabel_group("gpu-4x", "gpu-1x"),
        [
            f"{RS}: model {model} has node labels {{'videogen.io/pool': '{pool}'}} that select "
            + ("2 worker groups (gpu-1x, gpu-4x)" if pool == "gpu-1x" else "0 worker groups (none)")
            + "; they must select exactly one"
            # in the order of configs/production-gpu.yaml
            for model, pool in [
                ("cogvideox-5b", "gpu-1x"),
                ("cogvideox-2b", "gpu-1x"),
                ("cogvideox-5b-i2v", "gpu-1x"),
                ("svd-xt", "gpu-1x"),
                ("hunyuanvideo", "gpu-4x"),
                ("wan2.2-ti2v-5b", "gpu-1x"),
                ("helios", "gpu-1x"),
                ("wan2.2-t2v-a14b", "gpu-4x"),
                ("hunyuanvideo-1.5", "gpu-4x"),
            ]
        ],
    ),
    (
        "the dashboard opened to the gateway's namespace",
        "NetworkPolicy",
        "videogen-ray",
        lambda policy: policy["spec"]["ingress"][1]["ports"].append({"port": "dashboard", "protocol": "TCP"}),
        [
            "NetworkPolicy/videogen-ray: spec.ingress[1] opens port dashboard of the Ray pods to "
            "['gateway']; only ['kuberay'] may reach it"
        ]
        * 4,  # once per Ray pod group it governs: head, cpu, gpu-1x, gpu-4x
    ),
    (
        "a rule open to everyone",
        "NetworkPolicy",
        "videogen-ray",
        lambda policy: policy["spec"]["ingress"].append({}),
        ["NetworkPolicy/videogen-ray: spec.ingress[4] admits everyone on every port of the Ray pods"] * 4,
    ),
    (
        "GCS fault tolerance pointing at no Redis",
        "RayService",
        None,
        lambda rs: rs["spec"]["rayClusterConfig"]["gcsFaultToleranceOptions"].__setitem__(
            "redisAddress", "redis:6379"
        ),
        [
            f"{RS}: spec.rayClusterConfig.gcsFaultToleranceOptions.redisAddress 'redis:6379' is not a "
            "Service port of the manifests (['videogen-redis'])"  # KubeRay makes the Serve service
        ],
    ),
    (
        "a worker's readiness probe on another port than Serve's gRPC",
        "RayService",
        None,
        lambda rs: worker_spec(rs, "gpu-1x")["template"]["spec"]["containers"][0]["readinessProbe"][
            "grpc"
        ].__setitem__("port", 9000),
        [
            f"{RS}: {G1}: readinessProbe of group gpu-1x must be grpc {{'port': 50051, 'service': "
            "'videogen.v1.VideoGeneration'}, got {'port': 9000, 'service': 'videogen.v1.VideoGeneration'}"
        ],
    ),
    (
        "no token authentication",
        "RayService",
        None,
        lambda rs: rs["spec"]["rayClusterConfig"].pop("authOptions"),
        [f"{RS}: spec.rayClusterConfig.authOptions.mode must be token"],
    ),
    (
        "object store larger than its shared memory",
        "RayService",
        None,
        lambda rs: worker_spec(rs, "gpu-1x")["rayStartParams"].__setitem__(
            "object-store-memory", "34359738368"
        ),
        [
            f"{RS}: {G1}: object-store-memory 34359738368 must equal the /dev/shm volume's sizeLimit 16Gi: "
            "Ray keeps its object store there"
        ],
    ),
    (
        "worker group too small for the models' max_replicas",
        "RayService",
        None,
        _too_few_gpu_1x_pods,
        [
            f"{RS}: {G1}: maxReplicas 5 of worker group gpu-1x cannot hold the max_replicas of its models "
            "(cogvideox-5b, cogvideox-2b, cogvideox-5b-i2v, svd-xt, wan2.2-ti2v-5b, helios): "
            "they need 14 pods"
        ],
    ),
]


@pytest.mark.parametrize(
    ("kind", "name", "change", "expected"), [case[1:] for case in BROKEN], ids=[case[0] for case in BROKEN]
)
def test_broken_gpu_manifest_reports_exactly_its_problem(
    kind: str, name: str | None, change: Change, expected: list[str]
) -> None:
    broken = mutated(objects("gpu"), kind, change, name)

    assert validate(broken, device_gpus=True).problems == expected


def test_cpu_dev_hunyuanvideo_needs_its_world_size_in_logical_gpus() -> None:
    def one_logical_gpu(rs: Obj) -> None:
        worker_spec(rs, "cpu")["rayStartParams"]["num-gpus"] = "1"

    broken = mutated(objects("cpu-dev"), "RayService", one_logical_gpu)

    assert validate(broken, device_gpus=False).problems == [
        f"{RS}: spec.rayClusterConfig.workerGroupSpecs[0]: worker group cpu has 1 GPUs per pod, but a "
        "hunyuanvideo replica is ulysses 2 x ring 1 x cfg 1 = 2 ranks = 2 GPUs on one node; make them equal"
    ]


SETTINGS = REPO / "k8s" / "overlays" / "gpu" / "settings.env"


def operator_settings() -> dict[str, str]:
    lines = [line.strip() for line in SETTINGS.read_text().splitlines()]
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def test_the_operator_settings_live_in_settings_env_only_and_reach_every_field() -> None:
    settings = operator_settings()
    assert set(settings) == {
        "image",
        "storageClassName",
        "hostname",
        "httpHostname",
        "gatewayClassName",
        "tlsSecretName",
        "apiKeysSecretName",
    }
    # Written nowhere else in the manifests: changing settings.env is all it takes.
    for path in (REPO / "k8s").rglob("*.yaml"):
        text = path.read_text()
        for key, value in settings.items():
            assert value not in text, f"{path.relative_to(REPO)} repeats the {key} of settings.env"

    objs = objects("gpu")
    rs = rayservice(objs)
    assert not find(objs, "ConfigMap", "videogen-settings")  # local-config: never applied
    (job,) = find(objs, "Job")
    images = [c["image"] for group in pod_groups(rs) for c in group.spec["containers"]]
    images += [c["image"] for c in job["spec"]["template"]["spec"]["containers"]]
    assert set(images) == {settings["image"]}
    assert {pvc["spec"]["storageClassName"] for pvc in find(objs, "PersistentVolumeClaim")} == {
        settings["storageClassName"]
    }
    (gateway,) = find(objs, "Gateway")
    (route,) = find(objs, "GRPCRoute")
    (http_route,) = find(objs, "HTTPRoute")
    assert gateway["spec"]["gatewayClassName"] == settings["gatewayClassName"]
    assert {listener["name"]: listener["hostname"] for listener in gateway["spec"]["listeners"]} == {
        "grpc-tls": settings["hostname"],
        "http-tls": settings["httpHostname"],
    }
    assert route["spec"]["hostnames"] == [settings["hostname"]]
    assert http_route["spec"]["hostnames"] == [settings["httpHostname"]]
    refs = [
        ref["name"] for listener in gateway["spec"]["listeners"] for ref in listener["tls"]["certificateRefs"]
    ]
    assert refs == [settings["tlsSecretName"]] * 2
    # The API keys: every worker mounts the Secret, which may be missing at start (no pod waits for it).
    key_volumes = [v for g in workers(rs) for v in g.spec["volumes"] if v["name"] == "api-keys"]
    assert len(key_volumes) == len(workers(rs))
    assert all(
        v["secret"] == {"secretName": settings["apiKeysSecretName"], "optional": True} for v in key_volumes
    )
