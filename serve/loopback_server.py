"""The lifecycle the project's loopback test servers share (Prometheus, Redis): a child process in its
own process group, logging to a file, stopped with the block that started it."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import Self

from serve.stop_signals import stop_on_signals


class LoopbackServer:
    """Subclasses set `log_path` and implement `start()` (which sets `process` and returns self)."""

    log_path: Path
    process: subprocess.Popen | None = None
    stop_timeout_s: float = 20.0

    def start(self) -> Self:
        raise NotImplementedError

    def spawn(self, command: list[str]) -> subprocess.Popen:
        """Start `command`, its output to `log_path`, in a process group of its own (a Ctrl-C of the
        tests does not orphan it)."""
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        return self.process

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def serve_until_stopped(server: LoopbackServer) -> None:
    """Hold a started server until Ctrl-C or SIGTERM (or until it exits by itself); the caller's `with`
    then stops it."""
    stopping = stop_on_signals()
    assert server.process is not None
    while not stopping.wait(0.5) and server.process.poll() is None:
        pass
