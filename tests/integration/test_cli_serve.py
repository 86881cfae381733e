"""`videogen serve` and `videogen client` as processes: what `make serve` and the README promise."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from serve.video import probe_mp4
from tests.integration.conftest import free_port

pytestmark = pytest.mark.integration


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
    # A separate process group, as a terminal would run it; output to a file, never a full pipe.
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "serve.cli", "serve", "--config", str(config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 240
        while "videogen: serving" not in log_path.read_text():
            assert server.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.5)
        out = tmp_path / "fox.mp4"
        client = subprocess.run(
            [sys.executable, "-m", "serve.cli", "client", "--target", f"127.0.0.1:{port}", "generate",
             "--model", "hunyuanvideo", "--prompt", "a red fox running in the snow", "--out", str(out)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert client.returncode == 0, client.stderr[-2000:]
        assert probe_mp4(out.read_bytes())[0] == 9
    finally:
        os.killpg(server.pid, signal.SIGINT)
        try:
            code = server.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            raise
    assert code == 0, log_path.read_text()[-3000:]
    assert "videogen: shutting down" in log_path.read_text()
