"""A real Redis on loopback, for the tests and a developer's machine: Debian's `redis-server`.

`ensure_installed()` runs scripts/redis.sh (apt-get install, once per machine). `RedisServer` listens
on 127.0.0.1 only, on a free port, keeps nothing on disk and is stopped with the block that started
it. From a shell: `.venv/bin/python -m serve.local_redis` runs one until Ctrl-C and prints its URL
(for `job_store.redis_url`).
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
import time
from pathlib import Path

from serve.loopback_server import LoopbackServer, serve_until_stopped
from serve.ports import free_port

REPO = Path(__file__).resolve().parents[1]
INSTALLER = REPO / "scripts" / "redis.sh"


@functools.cache
def ensure_installed() -> str:
    """The path of `redis-server`, installing Debian's package first if it is missing."""
    if not shutil.which("redis-server"):
        result = subprocess.run(["bash", str(INSTALLER)], capture_output=True, text=True, timeout=900)
        if result.returncode != 0:
            raise RuntimeError(f"{INSTALLER} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(f"{INSTALLER} ran but redis-server is not on PATH")
    return binary


class RedisServer(LoopbackServer):
    """One redis-server on 127.0.0.1:port, persisting nothing; `url` is what clients connect to."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log_path = directory / "redis.log"

    def start(self, timeout_s: float = 30) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        arguments = ["--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.directory)]
        arguments += ["--save", "", "--appendonly", "no", "--protected-mode", "yes"]
        process = self.spawn([ensure_installed(), *arguments])
        import redis

        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"redis-server exited ({process.returncode}):\n{self.log()}")
            try:
                if client.ping():
                    return self
            except redis.ConnectionError:
                time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"redis-server not ready in {timeout_s} s:\n{self.log()}")


def main() -> int:
    import tempfile

    with (
        tempfile.TemporaryDirectory(prefix="videogen-redis-") as directory,
        RedisServer(Path(directory)) as server,
    ):
        print(f"redis at {server.url} (job_store.redis_url); Ctrl-C stops it", flush=True)
        serve_until_stopped(server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
