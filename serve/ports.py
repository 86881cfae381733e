"""TCP ports: the service's default, and picking free ones for servers the project starts itself (rank
rendezvous, test and bench services)."""

from __future__ import annotations

import contextlib
import random
import socket
from pathlib import Path

LOOPBACK = "127.0.0.1"
DEFAULT_GRPC_PORT = 50051
DEFAULT_TARGET = f"{LOOPBACK}:{DEFAULT_GRPC_PORT}"  # where a client finds `videogen serve` on this machine

# A port picked now is bound later by another process (a Ray proxy, a rank, a Redis). One the kernel may
# hand to any connect() meanwhile (its ephemeral range) can be taken by an outgoing connection, and Ray's
# proxy binds without SO_REUSEADDR, so even such a connection's local port makes its bind fail. Ports are
# therefore picked between Ray's worker ports (10002-19999 by default) and the ephemeral range.
RAY_WORKER_PORTS_END = 19999
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LINUX_EPHEMERAL_START = 32768  # the kernel's default, where the range cannot be read
PICK_ATTEMPTS = 200

_picked: set[int] = set()  # handed out by this process: never twice, even before the first is bound


def unassigned_ports() -> range:
    """Ports no connect() or bind(0) is given: above Ray's worker ports, below the ephemeral range."""
    start = LINUX_EPHEMERAL_START
    with contextlib.suppress(OSError, ValueError, IndexError):
        start = int(EPHEMERAL_RANGE.read_text().split()[0])
    return range(RAY_WORKER_PORTS_END + 1, start)


def _bindable_everywhere(port: int) -> bool:
    """Whether 0.0.0.0:port binds without address reuse: then no socket holds it on any interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("", port))
        except OSError:
            return False
    return True


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port free on every interface right now, outside the range the kernel gives to outgoing
    connections; never the same one twice in a process. `host` ("" for every interface) only matters
    where no such port is left and the kernel picks one."""
    ports = unassigned_ports()
    for _ in range(PICK_ATTEMPTS if ports else 0):
        port = random.choice(ports)
        if port not in _picked and _bindable_everywhere(port):
            _picked.add(port)
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # no room below the ephemeral range
        sock.bind((host, 0))
        port = int(sock.getsockname()[1])
    _picked.add(port)
    return port
