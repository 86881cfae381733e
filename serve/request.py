"""Turning what a caller sent into a complete, validated generation request."""

from __future__ import annotations

import io
import math
import secrets
import warnings
from enum import StrEnum
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from serve.catalog import (
    NEEDS_IMAGE,
    NO_CACHE,
    SECTION_PROMPT_SEPARATOR,
    TAKES_IMAGE,
    CachePolicy,
    FloatRange,
    IntRange,
    Knob,
    Limits,
    ModelSpec,
    StepCache,
)
from serve.errors import InvalidArgument

if TYPE_CHECKING:  # PIL is imported where an image is decoded: the client imports this module without it
    from PIL import Image

MAX_PROMPT_CHARS = 2000
MAX_IMAGE_BYTES = 20 * 1024 * 1024
MAX_IMAGE_PIXELS = 4096 * 4096
IMAGE_FORMATS = frozenset({"PNG", "JPEG", "WEBP"})
MAX_SEED = 2**63 - 1
CACHE_THRESHOLD_RANGE = FloatRange(min=0.0, max=1.0)

KNOB_RANGES: dict[Knob, IntRange | FloatRange] = {
    Knob.MOTION_BUCKET_ID: IntRange(min=1, max=255),
    Knob.NOISE_AUG_STRENGTH: FloatRange(min=0.0, max=1.0),
    Knob.DECODE_CHUNK_SIZE: IntRange(min=1, max=128),
    Knob.TRUE_CFG_SCALE: FloatRange(min=1.0, max=20.0),
    Knob.GUIDANCE_SCALE_2: FloatRange(min=0.0, max=30.0),
    Knob.BOUNDARY_RATIO: FloatRange(min=0.0, max=1.0),
    Knob.FLOW_SHIFT: FloatRange(min=0.5, max=20.0),
    Knob.DECODE_TIMESTEP: FloatRange(min=0.0, max=1.0),
    Knob.DECODE_NOISE_SCALE: FloatRange(min=0.0, max=1.0),
}
KNOB_DEFAULTS: dict[Knob, float | int] = {
    Knob.MOTION_BUCKET_ID: 127,
    Knob.NOISE_AUG_STRENGTH: 0.02,
    Knob.TRUE_CFG_SCALE: 1.0,
}


class OutputFormat(StrEnum):
    MP4 = "mp4"
    GIF = "gif"


class RequestFields(BaseModel):
    """What a caller sent: every field optional, nothing checked yet."""

    model: str = ""
    prompt: str = ""
    negative_prompt: str = ""
    image: bytes = b""
    num_frames: int | None = None
    fps: int | None = None
    height: int | None = None
    width: int | None = None
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    seed: int | None = None
    output_format: OutputFormat = OutputFormat.MP4
    motion_bucket_id: int | None = None
    noise_aug_strength: float | None = None
    decode_chunk_size: int | None = None
    true_cfg_scale: float | None = None
    guidance_scale_2: float | None = None
    boundary_ratio: float | None = None
    flow_shift: float | None = None
    decode_timestep: float | None = None
    decode_noise_scale: float | None = None
    cache_policy: CachePolicy | None = None
    cache_threshold: float | None = None


class GenerationRequest(BaseModel):
    """A complete request: defaults applied, every value inside the model's limits. Its JSON (the image
    in base64) is what the job store keeps, so that any Router can run the job again."""

    model_config = ConfigDict(frozen=True, ser_json_bytes="base64", val_json_bytes="base64")
    model: str
    prompt: str
    negative_prompt: str | None = None
    image: bytes | None = Field(None, repr=False)
    num_frames: int
    fps: int
    height: int
    width: int
    num_inference_steps: int
    guidance_scale: float
    seed: int
    output_format: OutputFormat = OutputFormat.MP4
    motion_bucket_id: int | None = None
    noise_aug_strength: float | None = None
    decode_chunk_size: int | None = None
    true_cfg_scale: float | None = None
    guidance_scale_2: float | None = None  # Wan 2.2 A14B: the low-noise expert's guidance
    boundary_ratio: float | None = None  # Wan 2.2 A14B: unset keeps the checkpoint's
    flow_shift: float | None = None  # Wan: the flow-matching schedule's shift; unset keeps the checkpoint's
    decode_timestep: float | None = None  # LTX-Video: the noise level its VAE decoder removes
    decode_noise_scale: float | None = None  # LTX-Video: noise added to the latents before decoding
    cache: StepCache = NO_CACHE

    def load_image(self) -> Image.Image | None:
        """The conditioning image as RGB (already checked to decode when the request was built)."""
        return None if self.image is None else decode_image(self.image).convert("RGB")


def _checked_int(field: str, value: int | None, default: int, allowed: IntRange) -> int:
    value = default if value in (None, 0) else value
    if not allowed.contains(value):
        raise InvalidArgument(field, f"{value} is outside the allowed range {allowed.describe()}")
    return value


def _checked_float(field: str, value: float | None, default: float, allowed: FloatRange) -> float:
    value = default if value is None else value
    if not math.isfinite(value):
        raise InvalidArgument(field, f"must be a finite number, got {value}")
    if not allowed.contains(value):
        raise InvalidArgument(field, f"{value:g} is outside the allowed range {allowed.describe()}")
    return value


def _sniff_format(data: bytes) -> str | None:
    """The format PIL's signature checks see in the first bytes, without running any decoder."""
    from PIL import Image

    Image.init()
    prefix = data[:16]
    for name, (_, accept) in Image.OPEN.items():
        try:
            if accept is not None and accept(prefix) is True:
                return name
        except Exception:
            continue
    return None


def decode_image(data: bytes) -> Image.Image:
    """Decode image bytes with bounds on size, pixel count and format."""
    from PIL import Image, UnidentifiedImageError

    if len(data) > MAX_IMAGE_BYTES:
        raise InvalidArgument("image", f"{len(data)} bytes is more than the limit of {MAX_IMAGE_BYTES}")
    try:
        with warnings.catch_warnings():
            # PIL only warns between its own pixel limit and twice that: a bomb is an error here.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            # Only these decoders ever see the bytes: no exotic format parser runs on caller input.
            image = Image.open(io.BytesIO(data), formats=sorted(IMAGE_FORMATS))
        if image.format not in IMAGE_FORMATS:
            raise InvalidArgument("image", f"format {image.format} is not one of {sorted(IMAGE_FORMATS)}")
        if image.width * image.height > MAX_IMAGE_PIXELS:
            raise InvalidArgument(
                "image", f"{image.width}x{image.height} has more than {MAX_IMAGE_PIXELS} pixels"
            )
        image.load()
    except InvalidArgument:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise InvalidArgument("image", f"rejected as a decompression bomb ({exc})") from None
    except UnidentifiedImageError:
        found = _sniff_format(data)
        if found is not None and found not in IMAGE_FORMATS:
            raise InvalidArgument("image", f"format {found} is not one of {sorted(IMAGE_FORMATS)}") from None
        raise InvalidArgument("image", f"does not decode as one of {sorted(IMAGE_FORMATS)}") from None
    except Exception as exc:  # PIL raises many types for corrupt data
        raise InvalidArgument("image", f"does not decode as an image ({exc})") from None
    return image


def _check_knob(spec: ModelSpec, knob: Knob, value: float | int | None) -> float | int | None:
    if value is None:
        return spec.knob_defaults.get(knob, KNOB_DEFAULTS.get(knob)) if knob in spec.knobs else None
    if knob not in spec.knobs:
        raise InvalidArgument(knob.value, f"is not accepted by model {spec.name!r}")
    allowed = KNOB_RANGES[knob]
    if isinstance(allowed, IntRange):
        return _checked_int(knob.value, int(value), int(value), allowed)
    return _checked_float(knob.value, float(value), float(value), allowed)


def _check_video_pixels(num_frames: int, height: int, width: int, budget: int | None) -> None:
    if budget is not None and num_frames * height * width > budget:
        raise InvalidArgument(
            "num_frames",
            f"{num_frames} frames at {width}x{height} is {num_frames * height * width} pixels, over this "
            f"model's budget of {budget} (frames x height x width): ask for fewer frames or a smaller size",
        )


def section_prompts(prompt: str) -> list[str]:
    """The prompts of consecutive sections in a `prompt_per_section` model's prompt, in order."""
    return [part.strip() for part in prompt.split(SECTION_PROMPT_SEPARATOR)]


def _check_section_prompts(spec: ModelSpec, prompt: str, num_frames: int) -> None:
    prompts = section_prompts(prompt)
    sections = spec.sections(num_frames)
    if "" in prompts:
        raise InvalidArgument(
            "prompt",
            f"section {prompts.index('') + 1}'s prompt is empty (prompts are separated by "
            f"{SECTION_PROMPT_SEPARATOR!r})",
        )
    if len(prompts) > sections:
        raise InvalidArgument(
            "prompt",
            f"{len(prompts)} prompts (separated by {SECTION_PROMPT_SEPARATOR!r}) for {sections} section(s) "
            f"of {num_frames} frames: at most one per section (the first {spec.frames_of_sections(1)} "
            f"frames, then {spec.section_frames} each)",
        )


def _check_cache(spec: ModelSpec, fields: RequestFields, default: StepCache) -> StepCache:
    allowed = [CachePolicy.OFF, *sorted(spec.cache_policies)]
    policy = fields.cache_policy or default.policy
    if policy not in allowed:
        raise InvalidArgument(
            "cache_policy",
            f"{policy.value} is not accepted by model {spec.name!r}; it accepts: "
            + ", ".join(p.value for p in allowed),
        )
    if fields.cache_threshold is None:
        return StepCache(policy=policy, threshold=default.threshold)
    if policy is CachePolicy.OFF:
        raise InvalidArgument("cache_threshold", "applies to a step-cache policy, and this request's is off")
    threshold = _checked_float("cache_threshold", fields.cache_threshold, 0.0, CACHE_THRESHOLD_RANGE)
    return StepCache(policy=policy, threshold=threshold)


def build_request(
    spec: ModelSpec,
    limits: Limits,
    fields: RequestFields,
    max_video_pixels: int | None = None,
    default_cache: StepCache = NO_CACHE,
) -> GenerationRequest:
    """Apply the model's defaults to `fields` and check every value; raises InvalidArgument.

    `max_video_pixels` bounds frames x height x width together, beyond each field's own range;
    `default_cache` is the deployment's step caching for requests that choose none.
    """
    prompt = fields.prompt.strip()
    if len(fields.prompt) > MAX_PROMPT_CHARS:
        raise InvalidArgument("prompt", f"{len(fields.prompt)} characters is more than {MAX_PROMPT_CHARS}")
    if len(fields.negative_prompt) > MAX_PROMPT_CHARS:
        raise InvalidArgument(
            "negative_prompt", f"{len(fields.negative_prompt)} characters is more than {MAX_PROMPT_CHARS}"
        )
    if fields.negative_prompt and Knob.NEGATIVE_PROMPT not in spec.knobs:
        raise InvalidArgument("negative_prompt", f"is not accepted by model {spec.name!r}")
    image_only = spec.family == "svd"
    if not prompt and not image_only:
        raise InvalidArgument("prompt", f"is required by model {spec.name!r}")
    if spec.task not in TAKES_IMAGE and fields.image:
        raise InvalidArgument("image", f"model {spec.name!r} is text-to-video and takes no image")
    if spec.task in NEEDS_IMAGE and not fields.image:
        raise InvalidArgument("image", f"model {spec.name!r} is image-to-video and needs an image")
    if fields.image:
        decode_image(fields.image)
    seed = secrets.randbelow(2**31) if fields.seed is None else fields.seed
    if not 0 <= seed <= MAX_SEED:
        raise InvalidArgument("seed", f"{seed} is outside the allowed range [0, {MAX_SEED}]")
    num_frames = _checked_int("num_frames", fields.num_frames, limits.default_num_frames, limits.num_frames)
    fps = _checked_int("fps", fields.fps, limits.default_fps, limits.fps)
    height = _checked_int("height", fields.height, limits.default_height, limits.height)
    width = _checked_int("width", fields.width, limits.default_width, limits.width)
    _check_video_pixels(num_frames, height, width, max_video_pixels)
    if spec.prompt_per_section:
        _check_section_prompts(spec, prompt, num_frames)
    decode_chunk_size = _check_knob(spec, Knob.DECODE_CHUNK_SIZE, fields.decode_chunk_size)
    return GenerationRequest(
        model=spec.name,
        prompt=prompt,
        negative_prompt=fields.negative_prompt or None,
        image=fields.image or None,
        num_frames=num_frames,
        fps=fps,
        height=height,
        width=width,
        num_inference_steps=_checked_int(
            "num_inference_steps",
            fields.num_inference_steps,
            limits.default_num_inference_steps,
            limits.num_inference_steps,
        ),
        guidance_scale=_checked_float(
            "guidance_scale", fields.guidance_scale, limits.default_guidance_scale, limits.guidance_scale
        ),
        seed=seed,
        output_format=fields.output_format,
        motion_bucket_id=_check_knob(spec, Knob.MOTION_BUCKET_ID, fields.motion_bucket_id),
        noise_aug_strength=_check_knob(spec, Knob.NOISE_AUG_STRENGTH, fields.noise_aug_strength),
        decode_chunk_size=None if decode_chunk_size is None else min(int(decode_chunk_size), num_frames),
        true_cfg_scale=_check_knob(spec, Knob.TRUE_CFG_SCALE, fields.true_cfg_scale),
        guidance_scale_2=_check_knob(spec, Knob.GUIDANCE_SCALE_2, fields.guidance_scale_2),
        boundary_ratio=_check_knob(spec, Knob.BOUNDARY_RATIO, fields.boundary_ratio),
        flow_shift=_check_knob(spec, Knob.FLOW_SHIFT, fields.flow_shift),
        decode_timestep=_check_knob(spec, Knob.DECODE_TIMESTEP, fields.decode_timestep),
        decode_noise_scale=_check_knob(spec, Knob.DECODE_NOISE_SCALE, fields.decode_noise_scale),
        cache=_check_cache(spec, fields, default_cache),
    )
