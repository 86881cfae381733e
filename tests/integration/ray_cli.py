"""A Ray cluster of its own started with Ray's CLI, and `serve run` on it: the route KubeRay takes.

`ray start --head --block` runs in its own process group on loopback, with ports of its own, so it
stands next to the session's cluster; relative paths of a Serve config land in its working directory.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from serve.ports import free_port
from tests.support import BackgroundProcess

BIN = Path(sys.executable).parent
CURRENT_CLUSTER = Path("/tmp/ray/ray_current_cluster")  # Ray's default temp dir
# Ray's token authentication is off here: a token file under ~/.ray of another cluster (or none) would
# otherwise decide whether `serve run` may connect.
RAY_ENV = {**os.environ, "RAY_AUTH_MODE": "disabled"}


@dataclass
class RayHead:
    process: BackgroundProcess
    gcs_port: int
    cwd: Path

    def serve_run(self, config_path: Path) -> None:
        """Deploy a Serve config file as KubeRay does, without waiting for the application to be ready."""
        deployed = subprocess.run(
            [str(BIN / "serve"), "run", "--address", f"127.0.0.1:{self.gcs_port}", "--non-blocking",
             str(config_path)],
            capture_output=True, text=True, timeout=600, cwd=self.cwd, env=RAY_ENV,
        )  # fmt: skip
        assert deployed.returncode == 0, (deployed.stdout + deployed.stderr)[-4000:]


@contextmanager
def ray_head(cwd: Path, labels: dict[str, str] | None = None, name: str = "ray") -> Iterator[RayHead]:
    """A one-node Ray cluster (16 CPUs, 2 fake GPUs as resources) until the block ends, then gone with
    every process it started."""
    gcs_port = free_port()
    label_args = ["--labels=" + ",".join(f"{key}={value}" for key, value in labels.items())] if labels else []
    process = BackgroundProcess(
        [str(BIN / "ray"), "start", "--head", "--block", f"--port={gcs_port}",
         "--node-ip-address=127.0.0.1", "--num-cpus=16", "--num-gpus=2", "--include-dashboard=false",
         *label_args,
         "--disable-usage-stats", f"--metrics-export-port={free_port()}",
         f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
         f"--ray-client-server-port={free_port()}", f"--runtime-env-agent-port={free_port()}"],
        cwd / f"{name}.log", cwd=cwd, env=RAY_ENV,
    )  # fmt: skip
    try:
        process.wait_for("Ray runtime started", timeout_s=180)
        yield RayHead(process, gcs_port, cwd)
    finally:
        process.stop(grace_s=20)  # Ray's workers outlive `ray start --block`'s Ctrl-C: the rest is killed
        # What `ray stop` would remove: the pointer by which a bare ray.init() joins "the" cluster.
        if f":{gcs_port}" in (CURRENT_CLUSTER.read_text() if CURRENT_CLUSTER.is_file() else ""):
            CURRENT_CLUSTER.unlink()
