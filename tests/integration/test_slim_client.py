"""The slim install: the package's base requirements are the client's alone, and the client and its
command run in a fresh venv that has no torch, Ray or diffusers, against the real service."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

CLIENT_WHEELS = REPO / "var" / "client-wheels"  # fetched by `make install` (scripts/client-wheels.sh)
SERVER_STACK = ("torch", "ray", "diffusers", "transformers", "numpy", "PIL")
SOURCES = ("pyproject.toml", "setup.py", "README.md", "proto", "serve", "parallel")


def run(*command: str | Path, timeout_s: float = 300) -> str:
    result = subprocess.run(
        [str(part) for part in command], capture_output=True, text=True, timeout=timeout_s
    )
    assert result.returncode == 0, (
        f"{command}: exit {result.returncode}\n{result.stdout[-2000:]}{result.stderr[-3000:]}"
    )
    return result.stdout


@pytest.fixture(scope="module")
def slim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the package's wheel installed offline from its base requirements alone."""
    assert (CLIENT_WHEELS / ".complete").is_file(), "run `make install` (make test does): it fetches them"
    root = tmp_path_factory.mktemp("slim")
    source = root / "source"
    source.mkdir()
    for name in SOURCES:  # a copy: building writes build/ and egg-info where it runs
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(REPO / name, source / name)
    run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "-q",
        "--no-deps",
        "--no-build-isolation",
        "-w",
        root / "dist",
        source,
    )
    (wheel,) = (root / "dist").glob("videogen_serve-*.whl")
    venv = root / "venv"
    run(sys.executable, "-m", "venv", venv)
    run(venv / "bin" / "pip", "install", "-q", "--no-index", "--find-links", CLIENT_WHEELS, wheel)
    return venv


def test_the_base_requirements_are_the_clients_alone(slim):
    code = (
        "import importlib.metadata as m, importlib.util as u, json\n"
        "requires = [r for r in m.requires('videogen-serve') if 'extra ==' not in r]\n"
        f"present = [name for name in {SERVER_STACK!r} if u.find_spec(name)]\n"
        "print(json.dumps({'requires': requires, 'present': present}))\n"
    )
    found = json.loads(run(slim / "bin" / "python", "-c", code))
    assert found["present"] == []
    assert sorted(r.split(">")[0].split("=")[0] for r in found["requires"]) == [
        "grpcio",
        "protobuf",
        "pydantic",
        "tqdm",
    ]


def test_the_slim_client_command_talks_to_the_service(slim, service):
    client = [slim / "bin" / "videogen-client", "--target", service.target]
    listed = run(*client, "models", timeout_s=60)
    assert "cogvideox-2b" in listed and "svd" in listed
    job = json.loads(
        run(*client, "submit", "--model", "cogvideox-2b", "--prompt", "slim", "--steps", "2", timeout_s=60)
    )
    watched = subprocess.run(
        [str(part) for part in (*client, "watch", job["job_id"])], capture_output=True, text=True, timeout=300
    )
    assert watched.returncode == 0, watched.stderr[-2000:]
    assert json.loads(watched.stdout)["state"] == "JOB_STATE_SUCCEEDED"
    assert "succeeded" in watched.stderr  # the progress bar names the state


def test_the_python_client_imports_and_answers_in_the_slim_venv(slim, service):
    code = (
        "import sys\n"
        "from serve.client import VideogenClient\n"
        f"with VideogenClient({service.target!r}) as client:\n"
        "    print(len(client.list_models()))\n"
    )
    assert int(run(slim / "bin" / "python", "-c", code, timeout_s=60)) == len(service.config.models)
