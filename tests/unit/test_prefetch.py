"""serve.prefetch: which repositories the fetch-weights Job downloads for a config."""

from __future__ import annotations

from pathlib import Path

import yaml

from serve.config import AppConfig, ServeConfig
from serve.prefetch import Download, app_configs, downloads, main

REPO = Path(__file__).resolve().parents[2]


def test_downloads_hub_models_once_each_with_their_variant_and_skips_tiny_ones() -> None:
    app = AppConfig.model_validate(
        {
            "models": [
                {"name": "svd", "weights": "hub"},
                {"name": "svd-xt", "weights": "hub"},
                {"name": "cogvideox-2b", "weights": "tiny"},
                {"name": "animatediff", "weights": "hub"},
            ]
        }
    )

    assert downloads([app, app]) == [
        Download(repo_id="stabilityai/stable-video-diffusion-img2vid", variant="fp16"),
        Download(repo_id="stabilityai/stable-video-diffusion-img2vid-xt", variant="fp16"),
        Download(repo_id="stable-diffusion-v1-5/stable-diffusion-v1-5"),
        Download(repo_id="guoyww/animatediff-motion-adapter-v1-5-2", pipeline=False),
    ]


def test_an_assembled_pipeline_fetches_its_component_repo_whole_and_every_other_repo() -> None:
    app = AppConfig.model_validate(
        {
            "models": [
                {"name": "hunyuanvideo-framepack-f1", "weights": "hub"},
                {"name": "hunyuanvideo", "weights": "hub"},
            ]
        }
    )
    assert downloads([app]) == [
        Download(repo_id="lllyasviel/FramePack_F1_I2V_HY_20250503", pipeline=False),
        Download(repo_id="hunyuanvideo-community/HunyuanVideo"),  # also hunyuanvideo's: fetched once
        Download(repo_id="lllyasviel/flux_redux_bfl"),
    ]


def test_reads_a_serve_config_file_and_a_generated_serve_config_v2_alike() -> None:
    config = ServeConfig.from_file(REPO / "configs/production-gpu.yaml")
    generated = yaml.safe_load((REPO / "k8s/overlays/gpu/serve-config.yaml").read_text())

    assert app_configs(generated) == [config.app]
    assert app_configs(config.model_dump(mode="json")) == [config.app]


def test_main_fetches_every_hub_repository_of_the_production_overlay() -> None:
    fetched: list[str] = []

    def fake_fetch(item: Download) -> str:
        fetched.append(item.repo_id)
        return f"/cache/{item.repo_id}"

    assert main([str(REPO / "k8s/overlays/gpu/serve-config.yaml")], fetcher=fake_fetch) == 0
    assert fetched == [
        "THUDM/CogVideoX-5b",
        "THUDM/CogVideoX-2b",
        "THUDM/CogVideoX-5b-I2V",
        "stabilityai/stable-video-diffusion-img2vid-xt",
        "hunyuanvideo-community/HunyuanVideo",
        "Wan-AI/Wan2.2-TI2V-5B-Diffusers",
        "BestWishYsh/Helios-Distilled",
        "Wan-AI/Wan2.2-T2V-A14B-Diffusers",
        "hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-720p_t2v",
    ]
