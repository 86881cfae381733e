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
    section: int = Field(0, description="long clips: the section being made, from 1; 0 for one-window models")
    total_sections: int = 0


ProgressCallback = Callable[[ProgressEvent], None]
PieceCallback = Callable[[bytes], None]


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
    streamed: bool = Field(
        False, description="its bytes already went out piece by piece (a long clip); `data` may be empty"
    )
    size: int = Field(0, description="bytes of the file (set where `data` was left out)")
    sha256: str = Field("", description="SHA-256 of the file (set where `data` was left out)")
    first_piece_seconds: float | None = Field(
        None,
        description="from the start of the run to the first playable piece (a long clip's first section)",
    )

    def without_data(self) -> EncodedVideo:
        """This video less its bytes (sent already), with their size and digest."""
        return self.model_copy(update={"data": b"", "size": self.byte_count, "sha256": self.digest})

    @property
    def byte_count(self) -> int:
        return len(self.data) if self.data else self.size

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.data).hexdigest() if self.data else self.sha256

    @property
    def denoise_seconds(self) -> float:
        return max(0.0, self.inference_seconds - self.text_encode_seconds - self.vae_decode_seconds)


class StreamItem(BaseModel):
    """One item of a model replica's stream: the events queued since the last item, the video with the last.

    Every item costs a hop through Serve, so events that are ready together travel together.
    """

    events: list[ProgressEvent] = Field(default_factory=list)
    pieces: list[bytes] = Field(
        default_factory=list, description="a long clip's next bytes, in order, as soon as they are encoded"
    )
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
            video_bytes=video.byte_count,
            mime_type=video.mime_type,
            sha256=video.digest,
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
