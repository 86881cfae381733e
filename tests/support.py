"""What several test modules share: request inputs, summaries, processes run as a user runs them."""

from __future__ import annotations

import contextlib
import functools
import io
import os
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from serve.catalog import CachePolicy, StepCache, Task, get_spec
from serve.events import GenerationSummary
from serve.request import GenerationRequest, RequestFields, build_request

if TYPE_CHECKING:
    from serve.engine import Engine, GenerationOutput

REPO = Path(__file__).resolve().parents[1]


def png(width: int = 64, height: int = 64) -> bytes:
    """A small valid PNG, the conditioning image of image-to-video requests."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (120, 30, 200)).save(buffer, "PNG")
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims `width` x `height` but carries one tiny compressed row: a bomb's shape."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0"))
        + chunk(b"IEND", b"")
    )


def encoded(image_format: str, size: tuple[int, int] = (16, 16)) -> bytes:
    """A small image in `image_format` (PIL's name: PNG, GIF, BMP, ...)."""
    buffer = io.BytesIO()
    Image.new("RGB", size, (1, 2, 3)).save(buffer, image_format)
    return buffer.getvalue()


def tiny_request(model: str, **fields: object) -> GenerationRequest:
    """A valid request for `model`'s tiny checkpoint, with `fields` replaced."""
    spec = get_spec(model)
    defaults = {"prompt": "a red fox in the snow", "seed": 7}
    if spec.task is Task.I2V:
        defaults["image"] = png()
    return build_request(spec, spec.tiny_limits, RequestFields(model=model, **{**defaults, **fields}))


@functools.cache
def tiny_engine(model: str) -> Engine:
    """A loaded Engine on `model`'s tiny checkpoint, one per model for the whole test process."""
    from serve.engine import Engine

    engine = Engine(get_spec(model), "tiny")
    engine.load()
    return engine


def first_block_cache_runs(
    engine: Engine, request: GenerationRequest
) -> tuple[GenerationOutput, GenerationOutput, GenerationOutput]:
    """`request` run with First-Block Cache at threshold 0 (never skips), without a cache, and at threshold
    1 (skips whenever the cache may): the outputs, in that order."""

    def cached(threshold: float) -> GenerationRequest:
        return request.model_copy(
            update={"cache": StepCache(policy=CachePolicy.FIRST_BLOCK, threshold=threshold)}
        )

    return engine.generate(cached(0.0)), engine.generate(request), engine.generate(cached(1.0))


def summary(**fields: object) -> GenerationSummary:
    """A complete GenerationSummary with `fields` replaced (job-store tests need one, not a real video)."""
    values: dict[str, object] = {
        "model": "svd",
        "seed": 1,
        "num_frames": 4,
        "fps": 7,
        "height": 64,
        "width": 64,
        "num_inference_steps": 2,
        "video_bytes": 10,
        "mime_type": "video/mp4",
        "sha256": "0" * 64,
        "queue_seconds": 0.0,
        "inference_seconds": 0.1,
        "encode_seconds": 0.01,
        "total_seconds": 0.2,
    }
    return GenerationSummary.model_validate({**values, **fields})


class BackgroundProcess:
    """A long-running command in its own process group (as a terminal runs it), its output in a file.

    `stop()` sends Ctrl-C's SIGINT to the whole group and waits; SIGKILL after the grace period.
    """

    def __init__(self, command: list[str], log_path: Path, cwd: Path = REPO, env: dict | None = None) -> None:
        self.log_path = log_path
        with log_path.open("w") as log:
            self.process = subprocess.Popen(
                command,
                cwd=cwd,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, text: str, timeout_s: float) -> None:
        """Until `text` appears in the output; fails with the output's end if the process exits or stalls."""
        deadline = time.monotonic() + timeout_s
        while text not in self.log():
            assert self.process.poll() is None, f"exited {self.process.returncode}:\n{self.log()[-3000:]}"
            assert time.monotonic() < deadline, f"no {text!r} after {timeout_s}s:\n{self.log()[-3000:]}"
            time.sleep(0.5)

    def stop(self, grace_s: float = 90) -> int | None:
        """Ctrl-C to the whole group, as a terminal sends it; waits up to `grace_s` until every process of
        the group has exited (a `make` in front exits at once, the service behind it takes its time), then
        SIGKILLs what is left. Returns the group leader's exit status.
        """
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
        deadline = time.monotonic() + grace_s
        while self._group_alive() and time.monotonic() < deadline:
            time.sleep(0.5)
        self.kill_group()
        return self.process.wait(timeout=30)

    def _group_alive(self) -> bool:
        """Whether a process of the group still runs (zombies, left to an init that may not reap, do not)."""
        self.process.poll()
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError):
                # pid (comm) state ppid pgrp ...: comm may hold spaces, so split after its closing paren.
                state, _, group = stat.read_text().rpartition(")")[2].split()[:3]
                if int(group) == self.process.pid and state != "Z":
                    return True
        return False

    def kill_group(self) -> None:
        """What is left of the process group (children a stop left behind), gone."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)


def python_process(code: str, *args: str) -> subprocess.Popen:
    """`python -c code args` in the repo, stderr to a file: a rank blocked on a full pipe stalls peers."""
    log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - read and closed in finish()
    process = subprocess.Popen(
        [sys.executable, "-c", code, *args], cwd=REPO, stdout=subprocess.DEVNULL, stderr=log, text=True
    )
    process.log = log  # type: ignore[attr-defined]
    return process


def finish(process: subprocess.Popen, timeout_s: float = 300) -> tuple[int, str]:
    """Wait (killing it past `timeout_s`); returns the exit code and what it wrote to stderr."""
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    with process.log as log:  # type: ignore[attr-defined]
        log.seek(0)
        return process.returncode, log.read()


class WebhookReceiver:
    """A real HTTP server on loopback that takes webhooks: it answers `statuses` in turn (then 200) and
    keeps every request's headers and body."""

    def __init__(self, statuses: Iterable[int] = ()) -> None:
        import http.server

        self.statuses = list(statuses)
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.arrived = threading.Condition()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with receiver.arrived:
                    receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    receiver.arrived.notify_all()
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/videogen"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, count: int, timeout_s: float = 60) -> list[tuple[dict[str, str], bytes]]:
        """The first `count` requests, once they have arrived."""
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.received) >= count, timeout_s), self.received
            return list(self.received[:count])

    def __enter__(self) -> WebhookReceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


# One rank of a gloo HunyuanVideo group, run by `run_hunyuan_ranks`: apply cpu_compat (less `skip`), join,
# report what this rank's transformer holds (`<out>.rank<N>.json`), run the tiny request, and (rank 0)
# save the frames to `out`. A failing rank exits at once: a clean interpreter exit would wait on its
# peers' pending ring transfers.
HUNYUAN_RANK_SCRIPT = """
import json, os, sys, traceback
import numpy as np
from parallel import cpu_compat
args = json.loads(sys.argv[1])
cpu_compat.apply(args["skip"])
from parallel.worker import RankWorker
from serve.catalog import MemoryOptions, get_spec
from serve.config import ParallelOptions
from serve.request import RequestFields, build_request
try:
    spec = get_spec("hunyuanvideo")
    worker = RankWorker(spec, args["weights"], MemoryOptions(), ParallelOptions(**args["parallel"]),
                        args["rank"], args["init"], collective_timeout_s=args["timeout_s"])
    worker.setup()
    transformer = worker.engine.pipe.transformer
    held = sum(p.numel() for p in transformer.parameters())
    blocks = [*transformer.transformer_blocks, *transformer.single_transformer_blocks]
    in_blocks = sum(p.numel() for b in blocks for p in b.parameters())
    with open(args["out"] + f".rank{args['rank']}.json", "w") as report:
        json.dump({"stage": worker.stage, "parameters": held, "block_parameters": in_blocks}, report)
    fields = RequestFields(model=spec.name, prompt="a red fox", seed=3, num_inference_steps=args["steps"])
    frames = worker.frames(build_request(spec, spec.tiny_limits, fields))
    if frames is not None:
        np.save(args["out"], frames.frames)
    schedule = getattr(transformer, "patch_schedule", None)
    with open(args["out"] + f".rank{args['rank']}.patched.json", "w") as report:
        json.dump({"patched_calls": schedule.patched_calls if schedule else 0}, report)
except BaseException:
    traceback.print_exc()
    sys.stderr.flush()
    os._exit(1)
"""


def run_hunyuan_ranks(
    weights: Path,
    parallel: dict,
    out: Path,
    skip: Iterable[str] = (),
    timeout_s: float = 60,
    steps: int | None = None,
) -> list[tuple[int, str]]:
    """Every rank of a gloo group (`HUNYUAN_RANK_SCRIPT`, one process each) to the end: (exit code,
    stderr) each. The rendezvous port was free when picked; should another process have taken it since
    (EADDRINUSE), the group starts again on a new one (3 tries)."""
    import json

    from serve.config import ParallelOptions
    from serve.ports import free_port

    world_size = ParallelOptions(**parallel).world_size
    for _ in range(3):
        init = f"tcp://127.0.0.1:{free_port()}"
        arguments = {
            "skip": list(skip),
            "weights": str(weights),
            "parallel": parallel,
            "init": init,
            "out": str(out),
            "timeout_s": timeout_s,
            "steps": steps,
        }
        processes = [
            python_process(HUNYUAN_RANK_SCRIPT, json.dumps({**arguments, "rank": rank}))
            for rank in range(world_size)
        ]
        results = [finish(process) for process in processes]
        if not any("EADDRINUSE" in stderr for _, stderr in results):
            break
    return results


@functools.cache
def ffprobe_path() -> str:
    """Debian's ffprobe, installed by scripts/ffmpeg.sh on first use."""
    subprocess.run(["bash", str(REPO / "scripts" / "ffmpeg.sh")], check=True, timeout=900)
    return "ffprobe"


def ffprobe(data: bytes) -> tuple[int, float]:
    """(frames counted by decoding, container duration in seconds) of a video file, as ffprobe reads them
    (from a file, as a viewer has it once downloaded: a pipe would show only the first fragment's length)."""
    with tempfile.NamedTemporaryFile(suffix=".mp4") as handle:
        handle.write(data)
        handle.flush()
        out = subprocess.run(
            [
                ffprobe_path(),
                "-v",
                "error",
                "-count_frames",
                "-select_streams",
                "v:0",
                "-show_entries",
                "stream=nb_read_frames:format=duration",
                "-of",
                "default=nw=1",
                handle.name,
            ],
            capture_output=True,
            check=True,
            timeout=120,
        ).stdout.decode()
    fields = dict(line.split("=", 1) for line in out.split())
    return int(fields["nb_read_frames"]), float(fields["duration"])
