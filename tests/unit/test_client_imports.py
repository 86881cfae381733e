"""The client is for production code to import: it must not drag in the server's stack."""

from __future__ import annotations

import json
import subprocess
import sys

SERVER_STACK = ("torch", "ray", "diffusers", "transformers", "accelerate", "numpy", "PIL")


def test_importing_the_client_and_its_cli_loads_none_of_the_servers_stack():
    code = (
        "import json, sys\n"
        "import serve.client, serve.client_cli\n"
        f"print(json.dumps([m for m in {SERVER_STACK!r} if m in sys.modules]))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert json.loads(loaded.stdout) == []
