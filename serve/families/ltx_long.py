"""LTX-Video long multi-prompt (LTXI2VLongMultiPromptPipeline): a long clip in overlapping windows over one
latent video, a prompt per window, optionally from a first frame.

Schedule: the pipeline runs every timestep of its scheduler but the last, so it expects an explicit sigma
schedule ending in 0 (with `num_inference_steps` alone it would stop one step short of clean); it gets
the distilled model's own eight sigmas at 8 steps, evenly spaced ones at any other count, on the
rectified-flow ancestral scheduler it is meant for (the checkpoint's flow-matching one would also need a
resolution-dependent shift the pipeline never passes).

Noise: every window draws from the request's generator in turn (the pipeline's own per-window seeds would
make a CUDA generator, and other frames on a GPU than on the CPU for one seed).

The windows are fused in latent space and the whole clip is decoded once at the end, so it is delivered
whole (the catalog's `section_delivery`). That decode runs the VAE's own tiling, in space and, frame-wise,
in time (16 frames at a time, blended), and returns its bf16 frames: the pipeline's ComfyUI-style tiles
would hold the clip three times more in float32 (output, blend weights, products) and break on latents
smaller than the tiles.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from PIL import Image

from serve.catalog import LTX_LONG_OVERLAP_FRAMES, LTX_LONG_WINDOW_FRAMES, get_spec
from serve.families.common import text_video_kwargs
from serve.hooks import replaced
from serve.request import GenerationRequest, section_prompts
from serve.weights import WeightsSource

__all__ = ["configured", "load_pipeline", "pipeline_kwargs", "sigmas", "steps_per_section"]

# LTX-Video 0.9.8 13B distilled's schedule (its first pass), with the terminal 0 the pipeline expects.
DISTILLED_SIGMAS = (1.0, 0.9937, 0.9875, 0.9812, 0.975, 0.9094, 0.725, 0.4219, 0.0)


def load_pipeline(pipeline_cls: type, source: WeightsSource, load_kwargs: dict[str, Any]) -> Any:
    from diffusers import LTXEulerAncestralRFScheduler

    pipe = pipeline_cls.from_pretrained(str(source.path), **load_kwargs)
    if not isinstance(pipe.scheduler, LTXEulerAncestralRFScheduler):
        pipe.scheduler = LTXEulerAncestralRFScheduler.from_config(pipe.scheduler.config)
    pipe.vae.use_framewise_decoding = True  # the end's decode, 16 frames at a time in time
    return pipe


@contextlib.contextmanager
def configured(pipe: Any, request: GenerationRequest) -> Iterator[None]:
    """The end's decode through the VAE's own tiling (space and time), its frames in the VAE's dtype."""
    decode = pipe.vae_decode_tiled

    def vae_tiled(*args: Any, **kwargs: Any) -> Any:
        return decode(*args, **{**kwargs, "enable_vae_tiling": True})

    with replaced(pipe, "vae_decode_tiled", vae_tiled):
        yield


def sigmas(steps: int) -> list[float]:
    """The sigma schedule of `steps` steps, from 1 to 0 inclusive."""
    if steps == len(DISTILLED_SIGMAS) - 1:
        return list(DISTILLED_SIGMAS)
    return [1.0 - i / steps for i in range(steps + 1)]


def pipeline_kwargs(request: GenerationRequest, image: Image.Image | None) -> dict[str, Any]:
    spec = get_spec(request.model)
    kwargs = text_video_kwargs(request)
    del kwargs["num_inference_steps"]  # given by the sigmas
    kwargs.update(
        # One prompt per window, in order; the last goes on for the windows after it.
        prompt=section_prompts(request.prompt),
        # Whole windows; the engine keeps the first num_frames.
        num_frames=spec.frames_of_sections(spec.sections(request.num_frames)),
        frame_rate=request.fps,
        sigmas=sigmas(request.num_inference_steps),
        seed=None,  # every window draws from the request's generator
        temporal_tile_size=LTX_LONG_WINDOW_FRAMES,
        temporal_overlap=LTX_LONG_OVERLAP_FRAMES,
        decode_timestep=request.decode_timestep,
        decode_noise_scale=request.decode_noise_scale,
        # `configured` decodes with the VAE's tiling; called without it, one tile (the pipeline's 4 x 4
        # would not fit small latents).
        decode_horizontal_tiles=1,
        decode_vertical_tiles=1,
    )
    if image is not None:
        kwargs["cond_image"] = image.resize((request.width, request.height))
    return kwargs


def steps_per_section(request: GenerationRequest) -> list[int]:
    """Every window runs the whole schedule."""
    return [request.num_inference_steps] * get_spec(request.model).sections(request.num_frames)
