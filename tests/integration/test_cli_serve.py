"""`videogen serve` and `videogen client` as processes: what `make serve` and the README promise."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from serve.ports import free_port
from serve.video import probe_mp4
from tests.support import BackgroundProcess

pytestmark = pytest.mark.integration


def client(port: int, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "serve.cli", "client", "--target", f"127.0.0.1:{port}", *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_serve_comes_up_answers_the_client_and_stops_on_ctrl_c(tmp_path):
    port = free_port()
    config = {
        "grpc_port": port,
        "http_port": free_port(),
        "ray": {"num_cpus": 8, "num_gpus": 0, "metrics_export_port": free_port()},
        "app": {
            "results_dir": str(tmp_path / "results"),
            "models": [{"name": "hunyuanvideo", "weights": "tiny", "num_cpus": 0.5}],
        },
    }
    config_path = tmp_path / "serve.yaml"
    config_path.write_text(yaml.safe_dump(config))
    server = BackgroundProcess(
        [sys.executable, "-m", "serve.cli", "serve", "--config", str(config_path)], tmp_path / "serve.log"
    )
    try:
        server.wait_for("videogen: serving", timeout_s=240)
        out = tmp_path / "fox.mp4"
        made = client(port, "generate", "--model", "hunyuanvideo", "--prompt", "a red fox", "--out", str(out))
        assert made.returncode == 0, made.stderr[-2000:]
        assert probe_mp4(out.read_bytes())[0] == 9
        refused = client(
            port, "generate", "--model", "hunyuanvideo", "--prompt", "a fox", "--frames", "1000",
            "--out", str(tmp_path / "x.mp4"),
        )  # fmt: skip
        # A request refused at once shows its error and nothing else: no progress bar was drawn.
        assert refused.returncode == 1
        assert refused.stderr.strip().splitlines()[-1].startswith("error: INVALID_ARGUMENT: num_frames:")
        assert "%|" not in refused.stderr  # tqdm draws `name:   0%|...`
    finally:
        code = server.stop()
    assert code == 0, server.log()[-3000:]
    assert "videogen: shutting down" in server.log()
