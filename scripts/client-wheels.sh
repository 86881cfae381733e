#!/usr/bin/env bash
# client-wheels.sh DIR: download the wheels of the client's own dependencies (pyproject's base
# `dependencies`, at the versions .venv has) into DIR, so that tests/integration/test_slim_client.py
# installs the slim client into a fresh venv offline. Run by `make install`, where downloads belong.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="$1"
pins=$(.venv/bin/python - <<'PY'
import importlib.metadata
import re
import tomllib

dependencies = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
names = [re.split(r"[<>=!~ ;\[]", dependency, maxsplit=1)[0] for dependency in dependencies]
print(" ".join(f"{name}=={importlib.metadata.version(name)}" for name in names))
PY
)
.venv/bin/pip download -q --only-binary=:all: --dest "$dir" $pins
touch "$dir/.complete"
