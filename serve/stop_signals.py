"""Ctrl-C and SIGTERM as one stop request, for the commands that run until stopped."""

from __future__ import annotations

import signal
import threading


def stop_on_signals() -> threading.Event:
    """An event set by SIGINT or SIGTERM. The handlers are set here, not left to Python's default: a
    shell's background job starts with SIGINT ignored, and Python then never raises KeyboardInterrupt."""
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    return stopping
