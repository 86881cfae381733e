"""The layers stay apart: the wire side of the service loads without the model runtime."""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_router_loads_no_torch():
    # The Router (and everything it imports) sits on the wire side: it must not pay torch's import
    # time and memory, which only the model replicas need.
    probe = "import sys, serve.router; print(sorted(m for m in ('torch', 'diffusers') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"
