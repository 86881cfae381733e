"""Translation between OpenAI's Videos API JSON and the service's own types, in one place.

The shapes follow the `openai` package's models (`openai.types.Video`, `VideoDeleteResponse`, the list
page and the error body), so that the official SDK drives the HTTP API unchanged. `model` is a catalog
name; `size` ("WxH") and `seconds` map onto width, height and a frame count the model can make; every
other generation field keeps its gRPC name (README "HTTP API"). The video object also carries
`inference_time_s` and `peak_memory_mb`, the extension fields benchmarking clients read.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from serve.catalog import Limits, ModelSpec
from serve.config import ModelDeployment
from serve.errors import InvalidArgument
from serve.events import GenerationSummary
from serve.job_records import JobRecord, JobState
from serve.request import RequestFields

SIZE_PATTERN = re.compile(r"^(\d{1,5})x(\d{1,5})$")
DATA_URL_PATTERN = re.compile(r"^data:image/[a-z0-9.+-]+;base64,(.*)$", re.DOTALL)
MAX_PAGE = 100
DEFAULT_PAGE = 20
POLL_AFTER_MS = 500  # the `openai-poll-after-ms` the SDK's poll helper waits between retrieves

_STATUS = {
    JobState.QUEUED: "queued",
    JobState.RUNNING: "in_progress",
    JobState.SUCCEEDED: "completed",
    JobState.FAILED: "failed",
    JobState.CANCELLED: "failed",
}

# gRPC status code name -> (HTTP status, OpenAI error type).
_HTTP_STATUS = {
    "INVALID_ARGUMENT": (400, "invalid_request_error"),
    "UNAUTHENTICATED": (401, "authentication_error"),
    "NOT_FOUND": (404, "not_found_error"),
    "FAILED_PRECONDITION": (409, "invalid_request_error"),
    "RESOURCE_EXHAUSTED": (429, "rate_limit_error"),
    "UNAVAILABLE": (503, "server_error"),
    "CANCELLED": (409, "invalid_request_error"),
    "ABORTED": (409, "invalid_request_error"),
    "INTERNAL": (500, "server_error"),
}
RETRYABLE = frozenset({429, 500, 503})  # others tell the SDK not to retry (`x-should-retry: false`)


class _OpenAIFields(BaseModel):
    """OpenAI's create fields that are not this service's own: they map onto its fields."""

    model_config = ConfigDict(extra="forbid")
    size: str | None = None
    seconds: float | None = None
    input_reference: Any = None  # an uploaded file (multipart) or {"image_url": "data:image/...;base64,..."}
    webhook_url: str = ""


# The body of POST /v1/videos, JSON or a multipart form (whose values arrive as strings): OpenAI's fields,
# then every generation field under its own name (the image comes as `input_reference`). An unknown field
# is refused by name, so that a typo does not silently fall back to a default.
VideoCreateBody = create_model(
    "VideoCreateBody",
    __base__=_OpenAIFields,
    **{
        name: (field.annotation, field)
        for name, field in RequestFields.model_fields.items()
        if name != "image"
    },
)


CREATE_FIELDS = tuple(VideoCreateBody.model_fields)


def parse_create(body: dict[str, Any]) -> Any:
    """The create body, checked for types; INVALID_ARGUMENT names the first field that is wrong."""
    try:
        return VideoCreateBody.model_validate(body)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "body"
        if first["type"] == "extra_forbidden":
            raise InvalidArgument(
                field, f"is not a field of this API; known: {', '.join(CREATE_FIELDS)}"
            ) from None
        raise InvalidArgument(field, f"{first['msg']} (got {first.get('input')!r})") from None


def parse_size(size: str) -> tuple[int, int]:
    """ "1280x720" -> (width 1280, height 720)."""
    match = SIZE_PATTERN.fullmatch(size.strip())
    if match is None:
        raise InvalidArgument("size", f"{size!r} is not WIDTHxHEIGHT in pixels, for example 1280x720")
    return int(match[1]), int(match[2])


def frames_for(seconds: float, fps: int, limits: Limits) -> int:
    """The frame count nearest `seconds` at `fps` that the model can make; else INVALID_ARGUMENT."""
    frames = limits.num_frames
    wanted = round(seconds * fps)
    nearest = frames.min + round((wanted - frames.min) / frames.step) * frames.step
    if seconds <= 0 or not frames.contains(nearest):
        raise InvalidArgument(
            "seconds",
            f"{seconds:g} s at {fps} fps is {wanted} frames; this model makes {frames.min / fps:.2f} to "
            f"{frames.max / fps:.2f} s (num_frames {frames.describe()})",
        )
    return nearest


def reference_image(value: Any) -> bytes:
    """The i2v image: an uploaded file's bytes, or a base64 data URL (`input_reference.image_url`)."""
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    url = value.get("image_url", "") if isinstance(value, dict) else value
    if isinstance(value, dict) and value.get("file_id"):
        raise InvalidArgument("input_reference.file_id", "file ids are not supported: upload the image")
    match = DATA_URL_PATTERN.fullmatch(url) if isinstance(url, str) else None
    if match is None:
        raise InvalidArgument(
            "input_reference", 'must be an uploaded image file or {"image_url": "data:image/png;base64,..."}'
        )
    try:
        return base64.b64decode(match[1], validate=True)
    except binascii.Error:
        raise InvalidArgument("input_reference.image_url", "is not valid base64") from None


def request_fields(body: Any, limits: Limits, image: bytes) -> RequestFields:
    """The generation fields of a create body; `limits` are the deployed model's (for `seconds`)."""
    fields = body.model_dump(exclude={"size", "seconds", "input_reference", "webhook_url"})
    if body.size is not None:
        fields["width"], fields["height"] = parse_size(body.size)
    if body.seconds is not None:
        if body.num_frames is not None:
            raise InvalidArgument("seconds", "give seconds or num_frames, not both")
        fields["num_frames"] = frames_for(body.seconds, body.fps or limits.default_fps, limits)
    return RequestFields(**fields, image=image)


def _seconds(num_frames: int, fps: int) -> str:
    return f"{num_frames / fps:.2f}".rstrip("0").rstrip(".") if fps else "0"


def video_object(record: JobRecord, ttl_s: float) -> dict[str, Any]:
    """A job as OpenAI's `Video`, with this service's extension fields."""
    summary: GenerationSummary | None = record.summary
    num_frames = summary.num_frames if summary else record.num_frames
    fps = summary.fps if summary else record.fps
    if record.state is JobState.SUCCEEDED:
        progress = 100
    elif record.total_steps:
        progress = min(99, 100 * record.step // record.total_steps)
    else:
        progress = 0
    video: dict[str, Any] = {
        "id": record.job_id,
        "object": "video",
        "created_at": int(record.created_at),
        "completed_at": int(record.finished_at) if record.ended else None,
        "expires_at": int(record.finished_at + ttl_s) if record.ended else None,
        "status": _STATUS[record.state],
        "progress": progress,
        "model": record.model,
        "prompt": record.prompt,
        "remixed_from_video_id": None,
        "seconds": _seconds(num_frames, fps),
        "size": f"{record.width}x{record.height}",
        "error": None,
        "num_frames": num_frames,
        "fps": fps,
    }
    if record.webhook_url:
        video["webhook"] = {
            "url": record.webhook_url,
            "state": record.webhook_state,
            "attempts": record.webhook_attempts,
            "error": record.webhook_error or None,
        }
    if record.error_code:
        video["error"] = {"code": record.error_code.lower(), "message": record.error}
    if summary is not None:
        video |= {
            "inference_time_s": summary.inference_seconds,
            "peak_memory_mb": summary.peak_memory_bytes / 2**20,
            "seed": summary.seed,
            "mime_type": summary.mime_type,
            "video_bytes": summary.video_bytes,
            "sha256": summary.sha256,
        }
    return video


def video_list(records: list[JobRecord], has_more: bool, ttl_s: float) -> dict[str, Any]:
    data = [video_object(record, ttl_s) for record in records]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }


def model_object(spec: ModelSpec, deployment: ModelDeployment, cold_start_s: float) -> dict[str, Any]:
    """A deployed model as an OpenAI model object, with what a form needs: task, limits, defaults, knobs."""
    return {
        "id": spec.name,
        "object": "model",
        "created": 0,
        "owned_by": "videogen-serve",
        "task": spec.task.value,
        "description": spec.description,
        "expected_cold_start_seconds": cold_start_s,
        "knobs": sorted(knob.value for knob in spec.knobs),
        "cache_policies": sorted(policy.value for policy in spec.cache_policies),
        **spec.limits_for(deployment.tiny).model_dump(),
    }


def deleted(video_id: str) -> dict[str, Any]:
    return {"id": video_id, "object": "video.deleted", "deleted": True}


def error_body(code: str, message: str, param: str | None) -> tuple[int, dict[str, Any]]:
    """(HTTP status, OpenAI error JSON) for a gRPC status code name, its message and the field at fault."""
    status, kind = _HTTP_STATUS.get(code, (500, "server_error"))
    return status, {"error": {"message": message, "type": kind, "param": param, "code": code.lower()}}
