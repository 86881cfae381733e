"""The gpu overlay turns auth on with keys from a Secret on every worker; proxies cap message size."""

from __future__ import annotations

import functools

import pytest

from serve.config import ServeConfig
from tests.k8s_checks import (
    PROXY_MESSAGE_ENV,
    REPO,
    Obj,
    find,
    mutated,
    overlay,
    pod_groups,
    render,
    security_problems,
    workers,
)


@functools.cache
def _rendered(name: str) -> tuple[Obj, ...]:
    return tuple(render(overlay(name).directory(REPO)))


def rayservice(objects: list[Obj] | tuple[Obj, ...]) -> Obj:
    (found,) = find(list(objects), "RayService")
    return found


def test_production_requires_api_keys_from_the_mounted_secret():
    config = ServeConfig.from_file(REPO / overlay("gpu").config)
    assert config.app.auth.enabled and config.app.auth.keys_file
    rs = rayservice(_rendered("gpu"))
    assert security_problems(rs) == []
    for group in workers(rs):
        secrets = {
            path: volume["secret"]["secretName"] for path, volume in group.mounts() if "secret" in volume
        }
        assert secrets == {"/etc/videogen/api-keys": "videogen-api-keys"}, group.name


@pytest.mark.parametrize("name", ["gpu", "cpu-dev"])
def test_every_pod_that_serves_traffic_caps_proxy_messages_at_the_configured_size(name: str):
    config = ServeConfig.from_file(REPO / overlay(name).config)
    for group in pod_groups(rayservice(_rendered(name))):
        if group.serves_traffic:
            assert group.env()[PROXY_MESSAGE_ENV] == str(config.max_message_bytes), group.name


def test_a_worker_group_without_the_keys_secret_is_reported():
    def drop_secret(rs: Obj) -> None:
        spec = rs["spec"]["rayClusterConfig"]["workerGroupSpecs"][1]["template"]["spec"]
        spec["containers"][0]["volumeMounts"] = [
            m for m in spec["containers"][0]["volumeMounts"] if m["name"] != "api-keys"
        ]

    broken = rayservice(mutated(list(_rendered("gpu")), "RayService", drop_secret))
    assert security_problems(broken) == [
        "RayService/videogen: spec.rayClusterConfig.workerGroupSpecs[1]: auth.keys_file "
        "/etc/videogen/api-keys/keys.yaml is not on a Secret volume mount of group gpu-1x"
    ]


def test_a_pod_without_the_proxy_message_limit_is_reported():
    def drop_env(rs: Obj) -> None:
        container = rs["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
        container["env"] = [e for e in container["env"] if e["name"] != PROXY_MESSAGE_ENV]

    broken = rayservice(mutated(list(_rendered("cpu-dev")), "RayService", drop_env))
    (problem,) = security_problems(broken)
    assert PROXY_MESSAGE_ENV in problem and "workerGroupSpecs[0]" in problem
