"""k8s/Dockerfile: the Ray version, extras and weights policy agree with the project and the manifests."""

from __future__ import annotations

import re

import yaml

from tests.k8s_checks import REPO

DOCKERFILE = (REPO / "k8s" / "Dockerfile").read_text()


def _pin(package: str) -> str:
    text = (REPO / "constraints.txt").read_text()
    match = re.search(rf"^{re.escape(package)}==(\S+)$", text, flags=re.M)
    assert match, f"{package} is not pinned in constraints.txt"
    return match.group(1)


def test_base_image_is_the_pinned_ray_on_python_311_with_cuda() -> None:
    image = re.search(r"^ARG RAY_IMAGE=(\S+)$", DOCKERFILE, flags=re.M)

    assert image is not None
    assert re.fullmatch(rf"rayproject/ray:{re.escape(_pin('ray'))}-py311-cu12\d", image.group(1))


def test_rayservice_ray_version_is_the_pinned_ray() -> None:
    rayservice = yaml.safe_load((REPO / "k8s" / "base" / "rayservice.yaml").read_text())

    assert rayservice["spec"]["rayClusterConfig"]["rayVersion"] == _pin("ray")


def test_image_installs_the_server_parallel_and_quant_extras_and_the_pinned_torch() -> None:
    assert "p['dependencies'] + x['server'] + x['parallel'] + x['quant']" in DOCKERFILE
    assert f"torch=={_pin('torch')}" in DOCKERFILE
    assert "-c constraints.txt" in DOCKERFILE


def test_image_ships_generated_grpc_code_from_the_package_build() -> None:
    assert "pip wheel" in DOCKERFILE
    assert "serve/api/videogen/v1/videogen_pb2_grpc.py" in DOCKERFILE
    ignored = (REPO / "k8s" / "Dockerfile.dockerignore").read_text().splitlines()
    assert "serve/api/videogen/" in ignored  # regenerated, never a stale local copy


def test_image_bakes_in_no_weights_and_reads_them_from_the_mounted_cache() -> None:
    assert (
        re.search(r"\b(hf download|snapshot_download|from_pretrained|huggingface-cli)\b", DOCKERFILE) is None
    )
    assert "HF_HOME=/mnt/models/huggingface" in DOCKERFILE
    ignored = (REPO / "k8s" / "Dockerfile.dockerignore").read_text().splitlines()
    included = [line[1:] for line in ignored if line.startswith("!")]
    assert "*" in ignored  # the build context holds only what is re-included:
    assert sorted(included) == sorted(
        [
            "pyproject.toml",
            "setup.py",
            "README.md",
            "constraints.txt",
            "proto/",
            "serve/",
            "parallel/",
            "configs/",
        ]
    )
