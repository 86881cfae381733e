"""OpenAI's Videos API shapes: the create body, size and seconds, the video object, the error body."""

from __future__ import annotations

import base64

import pytest

from serve import http_wire
from serve.catalog import get_spec
from serve.errors import InvalidArgument
from serve.events import Stage
from serve.jobs import JobBook, JobState
from tests.support import png, summary, tiny_request

COGVIDEOX = get_spec("cogvideox-2b").limits  # 49 frames at 8 fps by default, 4k+1 frames


def test_form_strings_become_typed_fields_and_typos_are_named():
    body = http_wire.parse_create(
        {"model": "svd", "seed": "3", "guidance_scale": "4.5", "cache_policy": "off"}
    )
    assert body.seed == 3 and body.guidance_scale == 4.5
    with pytest.raises(InvalidArgument, match=r"^steps: is not a field.*num_inference_steps"):
        http_wire.parse_create({"model": "svd", "steps": "3"})
    with pytest.raises(InvalidArgument, match=r"^seed: "):
        http_wire.parse_create({"model": "svd", "seed": "three"})


@pytest.mark.parametrize("size", ["1280*720", "x720", "1280x", "-1x5", "1280x720x3"])
def test_a_size_that_is_not_width_x_height_is_refused_by_name(size):
    with pytest.raises(InvalidArgument, match=r"^size: "):
        http_wire.parse_size(size)


def test_size_is_width_then_height():
    assert http_wire.parse_size("1280x720") == (1280, 720)


def test_seconds_become_the_nearest_frame_count_the_model_makes():
    frames = COGVIDEOX.num_frames
    assert http_wire.frames_for(6, 8, COGVIDEOX) == 49  # 48 frames -> the nearest 4k+1
    assert frames.contains(http_wire.frames_for(3.3, 8, COGVIDEOX))
    for seconds in (0, -1, 600):
        with pytest.raises(InvalidArgument, match=r"^seconds: .*num_frames"):
            http_wire.frames_for(seconds, 8, COGVIDEOX)


def test_seconds_and_num_frames_together_are_refused():
    body = http_wire.parse_create({"model": "cogvideox-2b", "seconds": "6", "num_frames": "49"})
    with pytest.raises(InvalidArgument, match=r"^seconds: give seconds or num_frames"):
        http_wire.request_fields(body, COGVIDEOX, b"")


def test_the_image_comes_as_an_upload_or_a_data_url():
    image = png()
    assert http_wire.reference_image(image) == image
    url = "data:image/png;base64," + base64.b64encode(image).decode()
    assert http_wire.reference_image({"image_url": url}) == image
    with pytest.raises(InvalidArgument, match=r"^input_reference: "):
        http_wire.reference_image({"image_url": "https://example.com/cat.png"})
    with pytest.raises(InvalidArgument, match=r"^input_reference.file_id: "):
        http_wire.reference_image({"file_id": "file-1"})


def test_a_job_becomes_openais_video_object_with_the_extension_fields():
    book = JobBook()
    request = tiny_request("cogvideox-2b", prompt="a fox")
    record, _ = book.create("cogvideox-2b", request=request)
    queued = http_wire.video_object(record, ttl_s=3600)
    assert queued["status"] == "queued" and queued["progress"] == 0 and queued["completed_at"] is None
    assert queued["size"] == f"{request.width}x{request.height}" and queued["prompt"] == "a fox"
    book.start(record.job_id)
    book.progress(record.job_id, Stage.DENOISING, 1, 4, 0.1)
    assert http_wire.video_object(book.get(record.job_id), 3600)["progress"] == 25
    done = book.succeed(record.job_id, summary(video_bytes=10, peak_memory_bytes=3 * 2**20))
    video = http_wire.video_object(done, ttl_s=3600)
    assert video["status"] == "completed" and video["progress"] == 100
    assert video["expires_at"] == int(done.finished_at + 3600) and video["peak_memory_mb"] == 3


def test_a_cancelled_job_is_failed_with_its_code():
    book = JobBook()
    record, _ = book.create("svd")
    cancelled = book.cancel(record.job_id)
    video = http_wire.video_object(cancelled, 60)
    assert cancelled.state is JobState.CANCELLED
    assert video["status"] == "failed" and video["error"]["code"] == "cancelled"


@pytest.mark.parametrize(
    ("code", "status"),
    [("INVALID_ARGUMENT", 400), ("UNAUTHENTICATED", 401), ("NOT_FOUND", 404), ("FAILED_PRECONDITION", 409),
     ("RESOURCE_EXHAUSTED", 429), ("UNAVAILABLE", 503), ("INTERNAL", 500)],
)  # fmt: skip
def test_error_bodies_follow_openais_shape_and_statuses(code, status):
    got, body = http_wire.error_body(code, "width: 9999 is outside [8, 64]", "width")
    assert got == status
    assert body["error"] == {
        "message": "width: 9999 is outside [8, 64]",
        "type": body["error"]["type"],
        "param": "width",
        "code": code.lower(),
    }
