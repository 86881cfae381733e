"""The project's own Prometheus and Redis, run from a shell until Ctrl-C, leave nothing behind: also when
started as a shell script's background job (`command &`), whose SIGINT is ignored from the start, and on
SIGTERM."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import socket
import sys
from pathlib import Path

import pytest

from tests.support import BackgroundProcess

ANNOUNCED = "Ctrl-C stops it"
SERVERS = {
    "prometheus": ("serve.local_prometheus 9", r"prometheus on http://127\.0\.0\.1:(\d+)"),
    "redis": ("serve.local_redis", r"redis at redis://127\.0\.0\.1:(\d+)"),
}


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _kill_servers_on(port: int) -> None:
    """A failed stop leaves the server in a session of its own: found by the address in its command."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError, ProcessLookupError):
            if f"127.0.0.1:{port}".encode() in cmdline.read_bytes():
                os.kill(int(cmdline.parent.name), signal.SIGKILL)


@pytest.mark.parametrize("server", sorted(SERVERS))
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_stops_the_server_it_started_even_with_sigint_ignored(
    server: str, signum: int, tmp_path: Path
) -> None:
    module, url = SERVERS[server]
    # `trap '' INT` is what a script's `&` does: SIGINT ignored, and so inherited through exec.
    command = f"trap '' INT; exec {shlex.quote(sys.executable)} -m {module}"
    runner = BackgroundProcess(["bash", "-c", command], tmp_path / "out.log")
    port = 0
    try:
        runner.wait_for(ANNOUNCED, timeout_s=120)
        match = re.search(url, runner.log())
        assert match, runner.log()
        port = int(match.group(1))
        assert _listening(port)
        os.killpg(runner.process.pid, signum)
        assert runner.process.wait(timeout=30) == 0, runner.log()
        assert not _listening(port)  # the server itself is gone, not only the script that started it
    finally:
        runner.kill_group()
        if port:
            _kill_servers_on(port)
