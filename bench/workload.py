"""Workload specs for the load generator: which requests, how much load, and when to stop."""

from __future__ import annotations

import io
import random
from functools import cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

WORKLOADS = Path(__file__).parent / "workloads"


class MixEntry(BaseModel):
    """One kind of request in the mix; unset fields take the model's defaults (see ListModels)."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(description="catalog name the requests use")
    name: str | None = Field(None, description="label in the report; the model name when unset")
    weight: float = Field(1.0, gt=0, description="relative share of the requests")
    prompt: str = Field("a red fox running through fresh snow, golden hour", description="text prompt")
    negative_prompt: str = Field("", description="for models that accept one")
    width: int | None = Field(None, gt=0, description="video width in pixels")
    height: int | None = Field(None, gt=0, description="video height in pixels")
    num_frames: int | None = Field(None, gt=0, description="frames per clip")
    fps: int | None = Field(None, gt=0, description="frames per second of the output")
    num_inference_steps: int | None = Field(None, gt=0, description="denoising steps")
    guidance_scale: float | None = Field(None, ge=0, description="classifier-free guidance scale")
    seed: int | None = Field(None, description="fixed seed; unset: one per request from the workload RNG")
    output_format: Literal["mp4", "gif"] = Field("mp4", description="container of the returned video")
    image: bool | None = Field(
        None, description="send a generated conditioning image; unset: when ListModels says the task is i2v"
    )
    image_width: int | None = Field(None, gt=0, description="image width; the request's width when unset")
    image_height: int | None = Field(None, gt=0, description="image height; the request's height when unset")

    @property
    def label(self) -> str:
        return self.name or self.model


class LoadSpec(BaseModel):
    """Closed loop (fixed concurrency levels) or open loop (arrival rates); one phase per level."""

    model_config = ConfigDict(extra="forbid")
    concurrency: list[int] | None = Field(
        None, description="closed loop: clients that each send the next request when the last one ends"
    )
    arrival_rate_per_s: list[float] | None = Field(
        None, description="open loop: requests per second, sent whether or not earlier ones ended"
    )
    arrival: Literal["poisson", "uniform"] = Field(
        "poisson", description="open loop: exponential (Poisson process) or equal gaps between arrivals"
    )
    max_in_flight: int = Field(
        64, ge=1, description="open loop: client threads; an arrival beyond them waits (recorded as delay)"
    )

    @model_validator(mode="after")
    def _exactly_one_mode(self) -> LoadSpec:
        if (self.concurrency is None) == (self.arrival_rate_per_s is None):
            raise ValueError("give exactly one of load.concurrency and load.arrival_rate_per_s")
        levels = self.concurrency or self.arrival_rate_per_s or []
        if not levels or any(level <= 0 for level in levels):
            raise ValueError("load levels must be a non-empty list of positive numbers")
        return self

    @property
    def mode(self) -> Literal["closed", "open"]:
        return "closed" if self.concurrency is not None else "open"

    @property
    def levels(self) -> list[float]:
        return [float(level) for level in (self.concurrency or self.arrival_rate_per_s or [])]


class Workload(BaseModel):
    """A bounded benchmark: every phase stops after `max_requests` or `max_duration_s`, whichever first."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="short name, used for output files")
    description: str = Field("", description="what this workload stands for")
    api: Literal["generate", "job"] = Field(
        "generate", description="Generate (one server stream) or SubmitJob + WatchJob (+ FetchVideo)"
    )
    mix: list[MixEntry] = Field(min_length=1, description="the kinds of requests and their shares")
    load: LoadSpec
    max_requests: int = Field(ge=1, description="requests sent per phase (load level) at most")
    max_duration_s: float = Field(gt=0, description="no request of a phase starts after this many seconds")
    request_timeout_s: float = Field(
        gt=0, description="gRPC deadline of one request; a phase ends within max_duration_s + this"
    )
    warmup_requests: int = Field(
        0, ge=0, description="requests per mix entry before the phases (recorded, not in the statistics)"
    )
    fetch_video: bool = Field(True, description="job API: download the video with FetchVideo")
    metrics_interval_s: float = Field(2.0, gt=0, description="how often the service's metrics are scraped")
    seed: int = Field(0, description="seeds the choice of requests, their seeds and open-loop arrivals")

    @classmethod
    def from_file(cls, path: str | Path) -> Workload:
        return cls.model_validate(yaml.safe_load(Path(path).read_text()))

    def picker(self) -> random.Random:
        return random.Random(self.seed)

    def choose(self, rng: random.Random) -> MixEntry:
        return rng.choices(self.mix, weights=[entry.weight for entry in self.mix])[0]

    @property
    def bound_s(self) -> float:
        """Upper bound of the whole run's length (warm-up excluded)."""
        return len(self.load.levels) * (self.max_duration_s + self.request_timeout_s)


@cache
def conditioning_image(width: int, height: int) -> bytes:
    """A deterministic PNG (a colour gradient) for image-to-video requests."""
    import numpy as np
    from PIL import Image

    pixels = np.empty((height, width, 3), dtype=np.uint8)
    pixels[..., 0] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
    pixels[..., 1] = np.linspace(0, 255, height, dtype=np.uint8)[:, None]
    pixels[..., 2] = 128
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()
