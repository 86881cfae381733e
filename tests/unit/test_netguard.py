"""The network guard that every test process runs under refuses what leaves loopback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

NETGUARD = Path(__file__).resolve().parents[1] / "netguard"

# The real connect is replaced by a recorder in the child, so nothing can leave the machine even
# if the guard were broken; the test checks the guard stops the call before it gets there.
CHILD = """
import socket, sitecustomize
reached = []
sitecustomize._real_connect = lambda sock, address: reached.append(address)
sock = socket.socket()
for address in [("203.0.113.7", 80), ("169.254.169.254", 80)]:
    try:
        sock.connect(address)
        print("ALLOWED", address)
    except ConnectionRefusedError:
        print("REFUSED", address)
sock.connect(("127.0.0.1", 9))
try:
    socket.getaddrinfo("metadata.google.internal", 80)
    print("RESOLVED")
except ConnectionRefusedError:
    print("REFUSED dns")
print("REACHED", reached)
"""


def test_guard_is_active_in_this_process():
    import socket

    assert socket.socket.connect.__name__ == "_connect"


def test_child_processes_refuse_and_log_non_loopback_attempts(tmp_path):
    log = tmp_path / "guard.log"
    env = {**os.environ, "PYTHONPATH": str(NETGUARD), "VIDEOGEN_NETGUARD_LOG": str(log)}
    output = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True
    )
    lines = output.stdout.splitlines()
    assert "REFUSED ('203.0.113.7', 80)" in lines
    assert "REFUSED ('169.254.169.254', 80)" in lines
    assert "REFUSED dns" in lines
    assert "REACHED [('127.0.0.1', 9)]" in lines
    assert log.read_text().count("netguard: refused") == 3
