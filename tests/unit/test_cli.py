"""The `videogen` command line, run as a user would: a subprocess writing real files."""

from __future__ import annotations

import subprocess
import sys

import pytest

from serve.video import probe_mp4


def videogen(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "serve.cli", *args], capture_output=True, text=True, timeout=timeout
    )


def test_models_lists_the_catalog():
    result = videogen("models")
    assert result.returncode == 0
    assert "hunyuanvideo-community/HunyuanVideo" in result.stdout and "svd-xt" in result.stdout


@pytest.mark.parametrize(
    ("model", "extra", "expected"),
    [
        ("hunyuanvideo", ["--prompt", "a red fox", "--frames", "5", "--fps", "12"], (5, 32, 32, 12.0)),
        ("svd", ["--image", "IMAGE", "--frames", "3"], (3, 64, 64, 7.0)),
    ],
)
def test_generate_writes_a_playable_mp4_for_t2v_and_i2v(tmp_path, model, extra, expected):
    from tests.support import png

    image = tmp_path / "in.png"
    image.write_bytes(png())
    out = tmp_path / "clip.mp4"
    args = [str(image) if arg == "IMAGE" else arg for arg in extra]
    result = videogen("generate", "--model", model, *args, "--seed", "3", "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    assert probe_mp4(out.read_bytes()) == expected
    assert f"wrote {out}" in result.stdout


def test_generate_reports_invalid_fields_without_a_traceback(tmp_path):
    result = videogen("generate", "--model", "svd", "--out", str(tmp_path / "x.mp4"))
    assert result.returncode == 2
    assert "image: model 'svd' is image-to-video and needs an image" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_config_prints_a_serve_deploy_file():
    import yaml
    from ray.serve.schema import ServeDeploySchema

    result = videogen("serve-config", "--config", "configs/local.yaml")
    assert result.returncode == 0
    ServeDeploySchema.model_validate(yaml.safe_load(result.stdout))


def test_generate_takes_the_container_from_the_out_extension(tmp_path):
    out = tmp_path / "clip.gif"
    result = videogen(
        "generate", "--model", "hunyuanvideo", "--prompt", "a fox", "--frames", "5", "--out", str(out)
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert out.read_bytes()[:6] == b"GIF89a"


def test_generate_refuses_a_format_that_contradicts_the_out_extension(tmp_path):
    out = tmp_path / "clip.gif"
    result = videogen(
        "generate", "--model", "hunyuanvideo", "--prompt", "a fox", "--format", "mp4", "--out", str(out)
    )
    assert result.returncode == 2
    assert "--format mp4 does not match --out" in result.stderr and not out.exists()
