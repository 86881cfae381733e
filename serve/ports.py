"""TCP ports: the service's default, and picking free ones for servers the project starts itself (rank
rendezvous, test and bench services)."""

from __future__ import annotations

import socket

LOOPBACK = "127.0.0.1"
DEFAULT_GRPC_PORT = 50051
DEFAULT_TARGET = f"{LOOPBACK}:{DEFAULT_GRPC_PORT}"  # where a client finds `videogen serve` on this machine


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port free on `host` right now ("" for every interface)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
