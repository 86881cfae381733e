"""Long clips through the service: a tiny Helios makes a clip of several sections, and its MP4 reaches
callers section by section while the rest is made (Generate's stream, FetchVideo on a running job for
any number of viewers, HTTP), as a fragmented MP4 whose every prefix plays and whose whole is the file
the summary describes."""

from __future__ import annotations

import hashlib
import threading
import time
import urllib.request

import grpc
import pytest

from serve.api import pb
from serve.catalog import CATALOG, Task, get_spec
from serve.client import VideogenClient
from serve.video import decode_frames
from tests.integration.cluster import wait_until
from tests.support import ffprobe, png

pytestmark = pytest.mark.integration

MODEL = "helios"
SECTION = get_spec(MODEL).section_frames
SECTIONS = 4
# Steps per pyramid stage: 3 x steps x (sections + 1) denoising steps in all, about 0.1 s each on the
# tiny model, so a slow job runs long enough for viewers to join it.
SLOW_STEPS = 5


LONG_CLIP_MODELS = sorted(name for name, spec in CATALOG.items() if spec.progressive)
WHOLE_LONG_CLIP_MODELS = sorted(
    name for name, spec in CATALOG.items() if spec.in_sections and not spec.progressive
)


def params(
    sections: int = SECTIONS, steps: int = 1, seed: int = 21, frames: int | None = None, model: str = MODEL
) -> pb.GenerationParams:
    spec = get_spec(model)
    return pb.GenerationParams(
        model=model,
        prompt="a paper boat drifting down a long river",
        image=png() if spec.task is Task.I2V else b"",
        num_frames=frames or spec.frames_of_sections(sections),
        num_inference_steps=steps,
        seed=seed,
    )


@pytest.fixture(scope="module")
def client(service):
    with VideogenClient(service.target) as client:
        # The model scales to zero between tests of other modules: wait for its replica once.
        wait_until(lambda: client.generate(params(sections=1), timeout=300), 300, what="helios to serve")
        yield client


def section_of(client: VideogenClient, job_id: str) -> int:
    return client.get_job(job_id).progress.section


@pytest.mark.parametrize("model", LONG_CLIP_MODELS + WHOLE_LONG_CLIP_MODELS)
def test_a_clip_of_four_sections_has_the_requested_duration(client, model):
    spec = get_spec(model)
    frames = spec.frames_of_sections(SECTIONS) - 5  # not a whole number of sections: the last one is cut
    video = client.generate(params(frames=frames, model=model), timeout=300)
    assert video.summary.num_frames == frames
    counted, duration = ffprobe(video.data)
    fps = spec.tiny_limits.default_fps
    assert counted == frames
    assert abs(duration - frames / fps) <= 1 / fps


@pytest.mark.parametrize("model", LONG_CLIP_MODELS)
def test_generate_streams_playable_sections_before_the_summary(client, model):
    section = get_spec(model).section_frames
    received = b""
    prefix_before_last_section: bytes | None = None
    sections_seen = []
    summary = None
    for event in client.generate_stream(params(model=model), timeout=300):
        kind = event.WhichOneof("event")
        if kind == "progress" and event.progress.section:
            assert event.progress.total_sections == SECTIONS
            sections_seen.append(event.progress.section)
            if event.progress.section == SECTIONS and prefix_before_last_section is None:
                prefix_before_last_section = received
        elif kind == "chunk":
            assert event.chunk.offset == len(received) and event.chunk.total_bytes == 0
            received += event.chunk.data
        elif kind == "summary":
            summary = event.summary
    assert summary is not None and sections_seen == sorted(sections_seen)
    assert set(sections_seen) == set(range(1, SECTIONS + 1))
    # While the last section was still being made, the bytes received already played the first ones
    # (FramePack-F1's a section later: each section's end is blended into the next).
    assert prefix_before_last_section
    assert len(decode_frames(prefix_before_last_section)) >= section
    assert hashlib.sha256(received).hexdigest() == summary.sha256
    assert len(decode_frames(received)) == get_spec(model).frames_of_sections(SECTIONS)


@pytest.mark.parametrize("model", WHOLE_LONG_CLIP_MODELS)
def test_a_long_clip_final_only_at_its_end_counts_sections_then_sends_the_whole_file(client, model):
    # FramePack (anti-drifting) makes its last section first, LTX long decodes its fused windows once at the
    # end: progress goes through every section, and the file's bytes come only after the last one, as one
    # normal MP4.
    sections = 2
    events = list(client.generate_stream(params(sections=sections, model=model), timeout=300))
    kinds = [event.WhichOneof("event") for event in events]
    progress = [event.progress for event in events if event.WhichOneof("event") == "progress"]
    last_section_at = max(i for i, event in enumerate(events) if event.progress.section == sections)
    assert kinds.index("chunk") > last_section_at and kinds[-1] == "summary"
    assert {p.total_sections for p in progress if p.section} == {sections}
    assert [p.section for p in progress if p.section] == sorted(p.section for p in progress if p.section)
    data = b"".join(event.chunk.data for event in events if event.WhichOneof("event") == "chunk")
    assert hashlib.sha256(data).hexdigest() == events[-1].summary.sha256
    assert len(decode_frames(data)) == get_spec(model).frames_of_sections(sections)


def test_viewers_joining_a_running_job_at_different_times_assemble_the_same_file(client, service):
    job = client.submit(params(steps=SLOW_STEPS, seed=22))
    results: dict[str, bytes] = {}
    prefixes: dict[str, bytes] = {}
    errors: list[BaseException] = []

    def view(name: str) -> None:
        try:
            with VideogenClient(service.target) as viewer:
                data = b""
                for chunk in viewer.stub.FetchVideo(pb.FetchVideoRequest(job_id=job.job_id), timeout=300):
                    assert chunk.offset == len(data)
                    data += chunk.data
                    if name not in prefixes and viewer.get_job(job.job_id).state == pb.JOB_STATE_RUNNING:
                        prefixes[name] = data  # what this viewer had while the job still ran
                results[name] = data
        except BaseException as error:  # reported below, in the test's thread
            errors.append(error)

    viewers = []
    for name, section in (("early", 1), ("middle", 2), ("late", 3)):
        wait_until(lambda s=section: section_of(client, job.job_id) >= s, 300, what=f"section {section}")
        viewers.append(threading.Thread(target=view, args=(name,)))
        viewers[-1].start()
    for viewer in viewers:
        viewer.join(300)
    assert not errors, errors
    done = client.get_job(job.job_id)
    assert done.state == pb.JOB_STATE_SUCCEEDED
    digest = done.summary.sha256
    assert {name: hashlib.sha256(data).hexdigest() for name, data in results.items()} == dict.fromkeys(
        ("early", "middle", "late"), digest
    )
    # The early viewer had a playable prefix while the job ran: at least the first section's frames.
    assert len(decode_frames(prefixes["early"])) >= SECTION
    assert client.fetch(job.job_id) == results["early"]  # and the stored file is those bytes
    assert not list(service.results_dir.glob(f"{job.job_id}.growing"))


def test_http_content_of_a_running_job_is_the_growing_file_to_its_end(client, service):
    job = client.submit(params(steps=SLOW_STEPS, seed=23))
    wait_until(lambda: section_of(client, job.job_id) >= 2, 300, what="section 2")
    url = f"{service.http_url}/v1/videos/{job.job_id}/content"
    with urllib.request.urlopen(url, timeout=300) as response:
        assert response.headers["x-videogen-growing"] == "true"
        assert response.headers.get("content-length") is None  # chunked: the size is not known yet
        data = response.read()
    assert hashlib.sha256(data).hexdigest() == client.get_job(job.job_id).summary.sha256


def test_cancel_in_section_two_stops_within_a_step_and_serves_no_partial_file(client, service):
    job = client.submit(params(steps=SLOW_STEPS, seed=24))
    wait_until(lambda: section_of(client, job.job_id) >= 2, 300, what="section 2")
    viewer = client.stub.FetchVideo(pb.FetchVideoRequest(job_id=job.job_id), timeout=300)
    first = next(viewer)  # a viewer already has the first section
    assert first.offset == 0 and first.total_bytes == 0
    at_cancel = client.cancel(job.job_id).progress
    assert at_cancel.section == 2
    final = client.wait(job.job_id, timeout=120)
    assert final.state == pb.JOB_STATE_CANCELLED
    assert final.progress.step <= at_cancel.step + 1
    # The viewer's stream ends with the job's status, not as a whole file...
    with pytest.raises(grpc.RpcError) as ended:
        for _ in viewer:
            pass
    assert ended.value.code() == grpc.StatusCode.CANCELLED
    # ...no one can fetch it afterwards, and nothing of it is left on the results volume.
    with pytest.raises(grpc.RpcError) as fetched:
        client.fetch(job.job_id)
    assert fetched.value.code() == grpc.StatusCode.NOT_FOUND
    time.sleep(0.5)
    assert not list(service.results_dir.glob(f"{job.job_id}*"))


def test_the_cli_writes_a_long_clip_to_a_part_file_that_plays_while_it_grows(client, service, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "river.mp4"
    growing = tmp_path / "river.mp4.part"
    command = [sys.executable, "-m", "serve.cli", "client", "--target", service.target, "generate"]
    command += ["--model", MODEL, "--prompt", "a long river", "--frames", str(SECTIONS * SECTION)]
    command += ["--steps", str(SLOW_STEPS), "--seed", "25", "--out", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # While the clip is made, OUT.part plays up to its last section...
        playable = wait_until(
            lambda: growing.is_file() and len(decode_frames(growing.read_bytes())) >= SECTION,
            300,
            what="a playable part file",
        )
        assert playable and not out.exists()
        stdout, stderr = process.communicate(timeout=300)
    finally:
        process.kill()
    assert process.returncode == 0, stderr.decode()[-2000:]
    # ...and once whole it is OUT, with no part file left.
    assert not growing.exists() and f"wrote {out}" in stdout.decode()
    assert len(decode_frames(out.read_bytes())) == SECTIONS * SECTION
