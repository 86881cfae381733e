"""serve.k8s_manifest: the overlays' serveConfigV2 is generated from configs/*.yaml and checked in."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from serve.config import AppConfig, ServeConfig
from serve.k8s_manifest import OVERLAYS, expected_deployments, main, render_serve_config_v2, stale_files
from tests.k8s_checks import REPO, built_deployments

OVERLAY_IDS = [f"overlay-{o.name}" for o in OVERLAYS]  # not a bare "gpu": that id reads as the gpu marker


def test_checked_in_serve_configs_equal_the_generated_ones() -> None:
    stale = [str(p.relative_to(REPO)) for p in stale_files(REPO)]

    assert stale == [], f"stale generated files {stale}: run `.venv/bin/python -m serve.k8s_manifest`"


@pytest.mark.parametrize("overlay", OVERLAYS, ids=OVERLAY_IDS)
def test_serve_config_v2_is_a_valid_serve_deploy_config(overlay) -> None:
    deploy = yaml.safe_load(render_serve_config_v2(REPO / overlay.config))

    ServeDeploySchema.model_validate(deploy)
    assert deploy["applications"][0]["import_path"] == "serve.deployments:build_app"


@pytest.mark.parametrize("overlay", OVERLAYS, ids=OVERLAY_IDS)
def test_serve_config_v2_carries_the_config_file_unchanged(overlay) -> None:
    config = ServeConfig.from_file(REPO / overlay.config)
    deploy = yaml.safe_load(render_serve_config_v2(REPO / overlay.config))

    assert AppConfig.model_validate(deploy["applications"][0]["args"]) == config.app
    assert deploy["grpc_options"]["port"] == config.grpc_port
    assert deploy["http_options"]["port"] == config.http_port


@pytest.mark.parametrize("overlay", OVERLAYS, ids=OVERLAY_IDS)
def test_serve_config_v2_lists_exactly_the_deployments_build_app_builds(overlay) -> None:
    config = ServeConfig.from_file(REPO / overlay.config)
    deploy = yaml.safe_load(render_serve_config_v2(REPO / overlay.config))
    listed = [d["name"] for d in deploy["applications"][0]["deployments"]]

    assert listed == expected_deployments(config.app)
    assert listed[0] == "Router"
    assert sorted(listed) == sorted(built_deployments(config.app))


def test_production_config_runs_hunyuanvideo_on_ulysses_2_by_ring_2_gpus() -> None:
    config = ServeConfig.from_file(REPO / "configs/production-gpu.yaml")
    hunyuan = config.app.model("hunyuanvideo")

    assert hunyuan is not None and hunyuan.parallel is not None
    assert hunyuan.parallel.world_size == 4 and hunyuan.num_gpus == 1
    assert all(m.weights == "hub" and m.num_gpus >= 1 for m in config.app.models)


def _copy_sources(root: Path) -> None:
    for overlay in OVERLAYS:
        (root / overlay.config).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / overlay.config, root / overlay.config)


def test_main_writes_the_generated_files_and_check_then_passes(tmp_path: Path) -> None:
    _copy_sources(tmp_path)

    assert main(["--root", str(tmp_path), "--check"]) == 1
    assert main(["--root", str(tmp_path)]) == 0
    assert main(["--root", str(tmp_path), "--check"]) == 0
    assert stale_files(tmp_path) == []


def test_check_fails_when_the_config_changes_after_generation(tmp_path: Path) -> None:
    _copy_sources(tmp_path)
    main(["--root", str(tmp_path)])
    config = tmp_path / OVERLAYS[-1].config
    config.write_text(config.read_text().replace("max_replicas: 4", "max_replicas: 3"))

    assert main(["--root", str(tmp_path), "--check"]) == 1
    assert stale_files(tmp_path) == [OVERLAYS[-1].serve_config_path(tmp_path)]


def test_generated_file_says_where_it_comes_from() -> None:
    text = render_serve_config_v2(REPO / "configs/production-gpu.yaml", "configs/production-gpu.yaml")

    assert text.startswith("# GENERATED from configs/production-gpu.yaml by `python -m serve.k8s_manifest`")


def test_production_parallel_degrees_are_valid_for_hunyuanvideo_on_its_gpus() -> None:
    from parallel.config import HUNYUANVIDEO, validate

    hunyuan = ServeConfig.from_file(REPO / "configs/production-gpu.yaml").app.model("hunyuanvideo")

    assert hunyuan is not None and hunyuan.parallel is not None
    validate(hunyuan.parallel, HUNYUANVIDEO, world_size=4)


def test_cpu_dev_parallel_degrees_are_valid_for_the_tiny_hunyuanvideo(tiny_dir: Path) -> None:
    from parallel.config import TransformerGeometry, validate

    hunyuan = ServeConfig.from_file(REPO / "configs/k8s-cpu-dev.yaml").app.model("hunyuanvideo")

    assert hunyuan is not None and hunyuan.parallel is not None
    validate(hunyuan.parallel, TransformerGeometry.from_checkpoint(tiny_dir / "hunyuanvideo"), world_size=2)
