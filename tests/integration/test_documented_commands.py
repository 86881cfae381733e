"""Every shell command the READMEs show, run as a user types it, or listed here with why it cannot run.

The commands are read from the fenced `bash` blocks of README.md and k8s/README.md. Those that can run
on this machine run through `bash -c`, exactly as written, from the repository root with the virtual
environment on PATH (as after `source .venv/bin/activate`), against the service `make serve` starts,
which is itself one of them. A command added to a README without a place below fails the first test.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from serve.auth import KeysFile
from serve.video import probe_mp4
from tests.support import REPO, BackgroundProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

DOCS = (REPO / "README.md", REPO / "k8s" / "README.md")
BIN = Path(sys.executable).parent
SERVING = "videogen: serving"  # what `make serve` prints once it answers


def documented_commands(path: Path) -> list[str]:
    """The commands of a Markdown file's ```bash blocks: continuations joined, comments and blanks dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", path.read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            command = re.sub(r"\s+#\s.*$", "", line).strip()
            command = re.sub(r"\s+", " ", command)
            if command and not command.startswith("#"):
                commands.append(command)
    return commands


NEEDS_CLUSTER = (
    "needs a Kubernetes cluster (none here); tests/unit/test_k8s_*.py render and validate the manifests"
)
NEEDS_DOCKER = (
    "needs a Docker engine and a registry (neither here); tests/unit/test_k8s_image.py checks the Dockerfile"
)
NEEDS_NETWORK = (
    "downloads from outside PyPI/Debian (CUDA wheels, model weights): not reachable from this machine"
)
BENCHMARK = "a benchmark: minutes of load, and it rewrites its results in bench/results (tracked files)"

NOT_RUN: dict[str, str] = {
    "make test": "it is this test suite (CI runs it through .ci/run)",
    ".venv/bin/python -m bench.cold_start": BENCHMARK,
    "HF_HUB_OFFLINE=1 .venv/bin/python -m bench.cold_start --config configs/production-gpu.yaml "
    "--name cold_start_h100": "needs GPUs and real weights in the Hugging Face cache",
    "python3 -m venv .venv && .venv/bin/pip install torch "
    "--index-url https://download.pytorch.org/whl/cu128": NEEDS_NETWORK,
    ".venv/bin/pip install -e '.[server,parallel,quant]'": "GPU install, step 2 (make install: the CPU one)",
    ".venv/bin/pip install flash-attn --no-build-isolation": "builds CUDA kernels: needs a GPU toolchain",
    "hf download hunyuanvideo-community/HunyuanVideo": NEEDS_NETWORK,
    "kubectl -n videogen create secret generic videogen-api-keys --from-file=keys.yaml": NEEDS_CLUSTER,
    "kubectl -n videogen create secret generic videogen-api-keys --from-file=keys.yaml "
    "--dry-run=client -o yaml | kubectl apply -f -": NEEDS_CLUSTER,
    "VIDEOGEN_LOAD_REQUESTS=400 VIDEOGEN_LOAD_TIME_LIMIT_S=1200 VIDEOGEN_LOAD_RESULTS=bench/results "
    ".venv/bin/python -m pytest tests/integration/test_load.py": BENCHMARK
    + "; the suite runs the same test at 80 requests",
    "python -m bench.capacity_tiny": BENCHMARK,
    "videogen bench --load-generator aiperf --http-url http://127.0.0.1:8000 --workload production-mix-tiny "
    "--out out/aiperf": "installs aiperf (a 1.2 GB venv of its own) on first use, then minutes of load; "
    "bench/results/aiperf-tiny records a run",
    "python -m bench.aiperf_tiny": BENCHMARK,
    ".venv/bin/python -m serve.k8s_manifest": "rewrites the overlays' serve configs (tracked files); "
    "its `--check` twin runs here",
    "docker build -f k8s/Dockerfile -t registry.example.com/videogen-serve:0.1.0 .": NEEDS_DOCKER,
    "docker push registry.example.com/videogen-serve:0.1.0": NEEDS_DOCKER,
    "kubectl apply -k k8s/overlays/gpu": NEEDS_CLUSTER,
    "kubectl -n videogen create secret generic hf-token --from-literal=token=hf_...": NEEDS_CLUSTER,
    "kubectl -n videogen wait --for=condition=complete job/videogen-fetch-weights "
    "--timeout=2h": NEEDS_CLUSTER,
    "kubectl -n videogen get rayservice videogen": NEEDS_CLUSTER,
    'grpcurl -d \'{"service": ""}\' videogen.example.com:443 grpc.health.v1.Health/Check': (
        "calls a deployed gateway's public hostname: nothing here may leave loopback"
    ),
    "grpcurl videogen.example.com:443 videogen.v1.VideoGeneration/ListModels": (
        "calls a deployed gateway's public hostname: nothing here may leave loopback"
    ),
    "docker build -f k8s/Dockerfile -t videogen-serve:0.1.0-cpu "
    "--build-arg RAY_IMAGE=rayproject/ray:2.60.0-py311-cpu "
    "--build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu .": NEEDS_DOCKER,
    "kind load docker-image videogen-serve:0.1.0-cpu": NEEDS_DOCKER,
    "kubectl apply -k k8s/overlays/cpu-dev": NEEDS_CLUSTER,
    "kubectl -n videogen port-forward svc/videogen-serve 50051:50051": NEEDS_CLUSTER,
}


def shell(
    command: str, cwd: Path = REPO, timeout_s: float = 300, **variables: str
) -> subprocess.CompletedProcess:
    """`command` as a user types it in a shell with the virtual environment activated (and `variables`
    set, as the README tells the user to)."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **variables}
    return subprocess.run(
        ["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout_s
    )


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"exit {result.returncode}:\n{(result.stdout + result.stderr)[-3000:]}"
    return result


@pytest.fixture(scope="module")
def make_serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundProcess]:
    """`make serve` in the repository, as the README's first screen has it, until the module ends."""
    if subprocess.run(["make", "-q", ".venv/.installed"], cwd=REPO).returncode != 0:
        pytest.fail(
            "the virtual environment is older than pyproject.toml: run `make install` (make test does)"
        )
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    service = BackgroundProcess(
        ["bash", "-c", "make serve"], tmp_path_factory.mktemp("make-serve") / "log", env=env
    )
    try:
        service.wait_for(SERVING, timeout_s=300)
        yield service
    finally:
        service.stop(grace_s=120)  # Ctrl-C: make reports the interrupt, the service shuts down cleanly
    assert "videogen: shutting down" in service.log() and "Traceback" not in service.log(), service.log()[
        -3000:
    ]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory of the user's own (keys.yaml lands there), with the project's .venv in reach."""
    directory = tmp_path_factory.mktemp("user")
    (directory / ".venv").symlink_to(BIN.parent)
    # `hash-key < ci-bot.key` hashes a key the user already has: one of 40 characters.
    (directory / "ci-bot.key").write_text("ci-bot-" + "k" * 33 + "\n")
    return directory


def _first_request(command: str, serve: BackgroundProcess, workdir: Path) -> None:
    out = REPO / "out" / "fox.mp4"
    out.unlink(missing_ok=True)
    ok(shell(command, timeout_s=300))
    assert probe_mp4(out.read_bytes())[0] > 0


def _metrics(command: str, serve: BackgroundProcess, workdir: Path) -> None:
    deadline = time.monotonic() + 60  # Ray's agent exports what the replicas pushed, every few seconds
    while "ray_videogen_" not in (result := shell(command, timeout_s=30)).stdout:
        assert time.monotonic() < deadline, result.stdout[-2000:] + result.stderr[-2000:]
        time.sleep(2)


def _in_workdir(command: str, serve: BackgroundProcess, workdir: Path) -> None:
    ok(shell(command, cwd=workdir, timeout_s=60))


def _keys_file(command: str, serve: BackgroundProcess, workdir: Path) -> None:
    _in_workdir(command, serve, workdir)
    keys = KeysFile.load(workdir / "keys.yaml").keys
    assert keys and keys[-1].name == ("ci-bot" if "ci-bot" in command else "alice")


def _capacity(command: str, serve: BackgroundProcess, workdir: Path) -> None:
    assert "H100" in ok(shell(command, timeout_s=120)).stdout


def _bench(command: str, serve: BackgroundProcess, workdir: Path) -> None:
    report = REPO / "out" / "bench" / "report.json"
    report.unlink(missing_ok=True)
    ok(shell(command, timeout_s=600))
    assert report.is_file()


def _local_prometheus(command: str, serve: BackgroundProcess, workdir: Path) -> None:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    prometheus = BackgroundProcess(["bash", "-c", command], workdir / "prometheus.log", env=env)
    try:
        prometheus.wait_for("Ctrl-C stops it", timeout_s=120)
    finally:
        assert prometheus.stop(grace_s=15) == 0, prometheus.log()[-3000:]  # Ctrl-C, not the SIGKILL after
    url = re.search(r"prometheus on (http://127\.0\.0\.1:\d+)", prometheus.log()).group(1)
    with pytest.raises(OSError):  # and the server it started has gone with it
        urllib.request.urlopen(f"{url}/-/ready", timeout=5)


HTTP_VIDEO: dict[str, str] = {}  # the video the README's curl create made: its id is the user's $VIDEO_ID


def _http_create(command: str, serve: BackgroundProcess, workdir: Path) -> None:
    video = json.loads(ok(shell(command, timeout_s=60)).stdout)
    assert video["object"] == "video" and video["status"] in ("queued", "in_progress"), video
    HTTP_VIDEO["VIDEO_ID"] = video["id"]


def _http_video(command: str, serve: BackgroundProcess, workdir: Path) -> None:
    """A curl command on the created video, run as the README says (retrieve: until it completed)."""
    assert HTTP_VIDEO, "the README's curl create runs first"
    if command.endswith("$VIDEO_ID/content -o out/fox-http.mp4"):
        out = REPO / "out" / "fox-http.mp4"
        out.unlink(missing_ok=True)
        ok(shell(command, timeout_s=60, **HTTP_VIDEO))
        assert probe_mp4(out.read_bytes())[0] > 0
        return
    deadline = time.monotonic() + 300
    while (answer := json.loads(ok(shell(command, timeout_s=60, **HTTP_VIDEO)).stdout)).get("status") in (
        "queued",
        "in_progress",
    ):
        assert time.monotonic() < deadline, answer
        time.sleep(1)
    if "DELETE" in command:
        assert answer == {"id": HTTP_VIDEO["VIDEO_ID"], "object": "video.deleted", "deleted": True}
    else:
        assert answer["status"] == "completed" and answer["progress"] == 100, answer


def _http_json(command: str, serve: BackgroundProcess, workdir: Path) -> None:
    answer = json.loads(ok(shell(command, timeout_s=60)).stdout)
    if "/v1/videos" in command:
        assert HTTP_VIDEO["VIDEO_ID"] in [video["id"] for video in answer["data"]], answer
    else:
        assert answer["status"] == "SERVING", answer


def _plain(command: str, serve: BackgroundProcess, workdir: Path) -> None:
    ok(shell(command, timeout_s=300))


# The commands that run here, in the order a user meets them, and what shows that each worked.
RUN: dict[str, Callable[[str, BackgroundProcess, Path], None]] = {
    "make serve": lambda command, serve, workdir: None,  # the module's service: started by `make_serve`
    '.venv/bin/videogen client generate --model hunyuanvideo --prompt "a red fox running in the snow" '
    "--out out/fox.mp4": _first_request,
    "curl -s http://127.0.0.1:8080/metrics | grep '^ray_videogen_'": _metrics,
    "curl -s http://127.0.0.1:8000/v1/videos -H 'Content-Type: application/json' -d '{\"model\": "
    '"cogvideox-2b", "prompt": "a red fox running in the snow", "seconds": "2"}\'': _http_create,
    "curl -s http://127.0.0.1:8000/v1/videos/$VIDEO_ID": _http_video,
    "curl -s http://127.0.0.1:8000/v1/videos/$VIDEO_ID/content -o out/fox-http.mp4": _http_video,
    "curl -s 'http://127.0.0.1:8000/v1/videos?limit=10&order=desc'": _http_json,
    "curl -s -X DELETE http://127.0.0.1:8000/v1/videos/$VIDEO_ID": _http_video,
    "curl -s http://127.0.0.1:8000/readyz": _http_json,
    ".venv/bin/python -m serve.local_prometheus 8080 "
    "--rules k8s/components/monitoring/rules/videogen.rules.yaml": _local_prometheus,
    'echo "keys:" > keys.yaml': _in_workdir,
    ".venv/bin/videogen hash-key --name alice --max-concurrent-jobs 4 --generate >> keys.yaml": _keys_file,
    ".venv/bin/videogen hash-key --name ci-bot < ci-bot.key >> keys.yaml": _keys_file,
    "videogen capacity --profile bench/profiles/hunyuanvideo-720p-129f.yaml "
    "--clips-per-hour 60 --slo-seconds 3600": _capacity,
    "videogen bench --target 127.0.0.1:50051 --workload production-mix-tiny --out out/bench": _bench,
    ".venv/bin/python -m serve.k8s_manifest --check": _plain,
    ".venv/bin/python -m pytest tests/unit/test_k8s_overlays.py tests/unit/test_k8s_manifest.py "
    "tests/unit/test_k8s_image.py tests/unit/test_prefetch.py": _plain,
    ".venv/bin/python -m tests.k8s_checks gpu cpu-dev": _plain,
}


def test_every_documented_command_is_run_here_or_listed_with_why_not() -> None:
    documented = [command for path in DOCS for command in documented_commands(path)]

    assert not set(RUN) & set(NOT_RUN)
    assert sorted(set(documented)) == sorted(set(RUN) | set(NOT_RUN))


@pytest.mark.parametrize("command", list(RUN))
def test_documented_command_works_as_written(
    command: str, make_serve: BackgroundProcess, workdir: Path
) -> None:
    RUN[command](command, make_serve, workdir)
    assert make_serve.process.poll() is None, "the service stopped: " + make_serve.log()[-3000:]


def test_the_service_make_serve_started_reports_the_embedded_default(make_serve: BackgroundProcess) -> None:
    config = yaml.safe_load((REPO / "configs" / "local.yaml").read_text())
    assert f"serving {len(config['app']['models'])} models" in make_serve.log()


def test_make_serve_answers_a_model_that_scaled_to_zero(make_serve: BackgroundProcess) -> None:
    from serve.api import pb
    from serve.client import VideogenClient
    from serve.ports import DEFAULT_TARGET
    from tests.support import png

    with VideogenClient(DEFAULT_TARGET) as client:
        (svd,) = [m for m in client.list_models() if m.name == "svd"]
        assert svd.expected_cold_start_seconds > 0  # min_replicas 0: ListModels states the wait
        video = client.generate(pb.GenerationParams(model="svd", image=png(), seed=1), timeout=300)
    assert probe_mp4(video.data)[:3] == (4, 64, 64)
