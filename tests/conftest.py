"""Test set-up shared by every test: the network guard, Ray's offline settings, tiny checkpoints."""

from __future__ import annotations

import os
import runpy
import tempfile
from pathlib import Path

import pytest

from serve.offline import prepare_ray_environment

NETGUARD_DIR = Path(__file__).parent / "netguard"


def _install_network_guard() -> Path:
    """Refuse non-loopback connections in this process and, via PYTHONPATH, in every child (Ray's too)."""
    log = Path(
        os.environ.get("VIDEOGEN_NETGUARD_LOG") or tempfile.mkstemp(prefix="netguard-", suffix=".log")[1]
    )
    os.environ["VIDEOGEN_NETGUARD_LOG"] = str(log)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(NETGUARD_DIR), os.environ.get("PYTHONPATH")])
    )
    runpy.run_path(str(NETGUARD_DIR / "sitecustomize.py"))
    return log


def _ensure_tiny_checkpoints() -> Path:
    from serve.tiny_store import ensure_tiny_checkpoints
    from serve.weights import tiny_dir

    directory = tiny_dir()
    os.environ["VIDEOGEN_TINY_DIR"] = str(directory)
    ensure_tiny_checkpoints(directory)
    return directory


def pytest_configure(config: pytest.Config) -> None:
    config.netguard_log = _install_network_guard()  # type: ignore[attr-defined]
    prepare_ray_environment()
    os.environ["HF_HUB_OFFLINE"] = "1"
    _ensure_tiny_checkpoints()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    log: Path = session.config.netguard_log  # type: ignore[attr-defined]
    text = log.read_text() if log.exists() else ""
    if text.strip():
        print(f"\nnetguard: non-loopback connection attempts during the tests (log {log}):\n{text[:4000]}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def tiny_dir() -> Path:
    from serve.weights import tiny_dir

    return tiny_dir()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; the CPU twin of this test covers its logic")
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory):
    """A real redis-server on loopback for the session (Debian's, installed by scripts/redis.sh)."""
    from serve.local_redis import RedisServer

    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server
