"""The OpenAI-compatible HTTP API, driven by the official `openai` package over loopback."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid

import openai
import pytest

from serve.catalog import get_spec
from serve.video import probe_mp4
from tests.support import png

pytestmark = pytest.mark.integration

T2V = "cogvideox-2b"
I2V = "svd"
STEPS = {"num_inference_steps": 2, "seed": 11}


@pytest.fixture(scope="module")
def client(service) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{service.http_url}/v1", api_key="not-checked", timeout=120)


def tiny_size(model: str) -> str:
    limits = get_spec(model).tiny_limits
    return f"{limits.default_width}x{limits.default_height}"


def test_create_poll_download_list_delete_through_the_sdk(client, tmp_path):
    limits = get_spec(T2V).tiny_limits
    seconds = limits.default_num_frames / limits.default_fps
    video = client.videos.create(
        model=T2V,
        prompt="a red fox in the snow",
        size=tiny_size(T2V),
        seconds=f"{seconds:g}",
        extra_body=STEPS,
    )
    assert video.object == "video" and video.status in ("queued", "in_progress")
    assert video.model == T2V and video.prompt == "a red fox in the snow" and video.size == tiny_size(T2V)

    done = client.videos.poll(video.id, poll_interval_ms=200)
    assert done.status == "completed" and done.progress == 100 and done.error is None
    assert done.completed_at >= done.created_at and done.expires_at > done.completed_at
    extra = done.model_extra
    assert extra["inference_time_s"] > 0 and extra["peak_memory_mb"] >= 0 and extra["seed"] == 11
    assert extra["num_frames"] == limits.default_num_frames

    path = tmp_path / "fox.mp4"
    client.videos.download_content(done.id).write_to_file(path)
    data = path.read_bytes()
    assert len(data) == extra["video_bytes"]
    assert probe_mp4(data) == (
        limits.default_num_frames,
        limits.default_height,
        limits.default_width,
        limits.default_fps,
    )

    listed = [v.id for v in client.videos.list(limit=100, order="desc").data]
    assert done.id in listed

    deleted = client.videos.delete(done.id)
    assert deleted.deleted and deleted.id == done.id and deleted.object == "video.deleted"
    with pytest.raises(openai.NotFoundError):
        client.videos.retrieve(done.id)
    with pytest.raises(openai.NotFoundError):
        client.videos.download_content(done.id)
    assert done.id not in [v.id for v in client.videos.list(limit=100).data]


def test_an_image_to_video_model_takes_its_image_as_a_multipart_upload(client):
    video = client.videos.create(
        model=I2V,
        prompt="",
        input_reference=("start.png", png(), "image/png"),
        extra_body=STEPS,
    )
    done = client.videos.poll(video.id, poll_interval_ms=200)
    assert done.status == "completed", done.error


def test_list_pages_through_the_callers_videos_in_order(client):
    ids = [
        client.videos.create(model=T2V, prompt=f"page {n}", extra_body={**STEPS, "num_inference_steps": 1}).id
        for n in range(3)
    ]
    first = client.videos.list(limit=2, order="asc", after=ids[0])
    assert [v.id for v in first.data] == ids[1:3]
    newest = client.videos.list(limit=1, order="desc")
    assert newest.data[0].id == ids[2] and newest.has_more
    for video_id in ids:
        client.videos.poll(video_id, poll_interval_ms=200)


def test_delete_of_a_running_video_cancels_it(client):
    video = client.videos.create(model=T2V, prompt="long", extra_body={"num_inference_steps": 150})
    client.videos.delete(video.id)
    with pytest.raises(openai.NotFoundError):
        client.videos.retrieve(video.id)


def test_invalid_input_gets_the_sdks_errors_with_our_message(client):
    with pytest.raises(openai.BadRequestError) as bad_size:
        client.videos.create(model=T2V, prompt="x", size="99999x64")
    assert "width" in bad_size.value.message and bad_size.value.body["param"] == "width"
    with pytest.raises(openai.BadRequestError) as malformed:
        client.videos.create(model=T2V, prompt="x", size="big")
    assert malformed.value.body["param"] == "size" and "WIDTHxHEIGHT" in malformed.value.message
    with pytest.raises(openai.BadRequestError) as too_long:
        client.videos.create(model=T2V, prompt="x", seconds="600")
    assert too_long.value.body["param"] == "seconds"
    with pytest.raises(openai.BadRequestError) as typo:
        client.videos.create(model=T2V, prompt="x", extra_body={"steps": 3})
    assert typo.value.body["param"] == "steps" and "num_inference_steps" in typo.value.message
    with pytest.raises(openai.NotFoundError) as unknown:
        client.videos.create(model="sora-2", prompt="x")
    assert "sora-2" in unknown.value.message and T2V in unknown.value.message
    with pytest.raises(openai.BadRequestError) as extend:
        client.videos.extend(prompt="more", seconds="4", video=("clip.mp4", b"\0" * 64, "video/mp4"))
    assert "extend" in extend.value.message


def test_the_same_idempotency_key_gives_the_same_video(client):
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = client.videos.create(model=T2V, prompt="once", extra_body=STEPS, extra_headers=key)
    again = client.videos.create(model=T2V, prompt="once", extra_body=STEPS, extra_headers=key)
    assert again.id == first.id
    client.videos.poll(first.id, poll_interval_ms=200)


def http(method: str, url: str, body: bytes | None = None, **headers: str) -> tuple[int, dict, bytes]:
    """(status, headers, body) of one plain HTTP request; error statuses are answers too."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_content_answers_range_requests_and_json_create_works_without_the_sdk(service):
    videos = f"{service.http_url}/v1/videos"
    body = json.dumps({"model": T2V, "prompt": "json body", **STEPS}).encode()
    status, _, created = http("POST", videos, body, **{"content-type": "application/json"})
    assert status == 200, created
    video_id = json.loads(created)["id"]
    deadline = time.monotonic() + 120
    while json.loads(http("GET", f"{videos}/{video_id}")[2])["status"] in ("queued", "in_progress"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    status, headers, whole = http("GET", f"{videos}/{video_id}/content")
    assert status == 200 and headers["content-type"] == "video/mp4"
    status, _, part = http("GET", f"{videos}/{video_id}/content", Range="bytes=10-109")
    assert status == 206 and part == whole[10:110]
    status, headers, refused = http("POST", videos, b"model=x", **{"content-type": "text/plain"})
    assert status == 400 and json.loads(refused)["error"]["param"] == "content-type"
    assert headers["x-should-retry"] == "false"


def test_health_endpoints_mirror_grpc_health(service):
    with urllib.request.urlopen(f"{service.http_url}/healthz", timeout=10) as live:
        assert live.status == 200
    with urllib.request.urlopen(f"{service.http_url}/readyz?model={T2V}", timeout=10) as ready:
        assert ready.status == 200
    with pytest.raises(urllib.error.HTTPError) as unknown:
        urllib.request.urlopen(f"{service.http_url}/readyz?model=nope", timeout=10)
    assert unknown.value.code == 404


def test_models_lists_the_catalog_with_limits(client):
    models = {m.id: m for m in client.models.list().data}
    assert T2V in models and models[I2V].model_extra["task"] == "i2v"
    assert models[T2V].model_extra["num_frames"]["max"] == get_spec(T2V).tiny_limits.num_frames.max
