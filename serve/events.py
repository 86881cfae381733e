"""What a generation reports across the wire boundary: stages, progress, the encoded video, its summary.

No torch here: the Router (gRPC) and the job records import these types; the engine produces them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from enum import StrEnum

from pydantic import BaseModel, Field

from serve.catalog import CachePolicy
from serve.request import GenerationRequest


class Stage(StrEnum):
    """Where a request is; QUEUED until a model replica takes it."""

    QUEUED = "queued"
    PREPARING = "preparing"
    DENOISING = "denoising"
    ENCODING = "encoding"
    DONE = "done"


class ProgressEvent(BaseModel):
    """Where a running generation is."""

    stage: Stage
    step: int = 0
    total_steps: int = 0
    elapsed_seconds: float = 0.0


ProgressCallback = Callable[[ProgressEvent], None]


class EncodedVideo(BaseModel):
    """A finished video file and its timings."""

    data: bytes = Field(repr=False)
    mime_type: str
    seed: int
    num_frames: int
    inference_seconds: float
    encode_seconds: float
    steps_completed: int
    peak_memory_bytes: int
    transformer_forwards: int = 0
    transformer_forwards_skipped: int = Field(0, description="forwards the step cache cut to the first block")
    text_encode_seconds: float = Field(0.0, description="in the text (and image) encoders")
    vae_decode_seconds: float = Field(
        0.0, description="in the VAE decode; the rest of inference is denoising"
    )

    @property
    def denoise_seconds(self) -> float:
        return max(0.0, self.inference_seconds - self.text_encode_seconds - self.vae_decode_seconds)


class StreamItem(BaseModel):
    """One item of a model replica's stream: the events queued since the last item, the video with the last.

    Every item costs a hop through Serve, so events that are ready together travel together.
    """

    events: list[ProgressEvent] = Field(default_factory=list)
    video: EncodedVideo | None = None
    queue_seconds: float | None = Field(None, description="on the first item: arrival to the replica's start")


class GenerationSummary(BaseModel):
    """What GenerationSummary carries on the wire (and a job record keeps)."""

    model: str
    seed: int
    num_frames: int
    fps: int
    height: int
    width: int
    num_inference_steps: int
    video_bytes: int
    mime_type: str
    sha256: str
    queue_seconds: float
    inference_seconds: float
    encode_seconds: float
    total_seconds: float
    transformer_forwards: int = 0
    transformer_forwards_skipped: int = 0
    cache_policy: CachePolicy = CachePolicy.OFF
    cache_threshold: float = 0.0
    text_encode_seconds: float = 0.0
    denoise_seconds: float = 0.0
    vae_decode_seconds: float = 0.0
    peak_memory_bytes: int = 0

    @classmethod
    def of(
        cls, request: GenerationRequest, video: EncodedVideo, queue_s: float, total_s: float
    ) -> GenerationSummary:
        """The summary of `video`, made for `request`, after `queue_s` waiting and `total_s` in all."""
        return cls(
            model=request.model,
            seed=video.seed,
            num_frames=video.num_frames,
            fps=request.fps,
            height=request.height,
            width=request.width,
            num_inference_steps=video.steps_completed,
            video_bytes=len(video.data),
            mime_type=video.mime_type,
            sha256=hashlib.sha256(video.data).hexdigest(),
            queue_seconds=queue_s,
            inference_seconds=video.inference_seconds,
            encode_seconds=video.encode_seconds,
            total_seconds=total_s,
            transformer_forwards=video.transformer_forwards,
            transformer_forwards_skipped=video.transformer_forwards_skipped,
            text_encode_seconds=video.text_encode_seconds,
            denoise_seconds=video.denoise_seconds,
            vae_decode_seconds=video.vae_decode_seconds,
            peak_memory_bytes=video.peak_memory_bytes,
            cache_policy=request.cache.policy,
            cache_threshold=request.cache.threshold if request.cache.policy is not CachePolicy.OFF else 0.0,
        )
