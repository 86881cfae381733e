"""SkyReels-V2 diffusion forcing (t2v, and i2v with an image): a long clip in windows, each after the first
conditioned on the last latent frames of the one before.

The pipeline accumulates every window's latents and decodes the whole clip once at the end; serve/sections.py
("causal_latents") decodes each window's new latent frames as soon as the next window starts, continuing the
Wan VAE's causal cache, so the clip streams a window at a time and the final decode has only the last
window left. Synchronous diffusion forcing (ar_step 0): every window runs the whole schedule.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from PIL import Image

from serve.catalog import SKYREELS_DF_BASE_FRAMES, SKYREELS_DF_OVERLAP_FRAMES, get_spec
from serve.families.common import load_pipeline, text_video_kwargs
from serve.families.wan import configured
from serve.hooks import replaced
from serve.request import GenerationRequest

__all__ = ["SECTION_KIND", "configured", "load_pipeline", "pipeline_kwargs", "step_hook", "steps_per_section"]

SECTION_KIND = "causal_latents"  # a window's latents are final once the next window starts
ADD_NOISE_CONDITION = 20  # SkyReels' setting for long clips: the history re-noised a little, for smooth joins


def pipeline_kwargs(request: GenerationRequest, image: Image.Image | None) -> dict[str, Any]:
    kwargs = text_video_kwargs(request)
    spec = get_spec(request.model)
    sections = spec.sections(request.num_frames)
    if image is None:
        # Latent frames hold 4 pixel frames (the first one 1): the next 4k+1; the engine keeps num_frames.
        kwargs["num_frames"] = (request.num_frames + 2) // 4 * 4 + 1
    else:
        # diffusers 0.42's image pipeline plans every window's steps for a whole window (the text pipeline
        # for the window's own length), which fails on a shorter last window: make whole windows.
        kwargs["num_frames"] = spec.frames_of_sections(sections)
    kwargs["base_num_frames"] = SKYREELS_DF_BASE_FRAMES
    if sections > 1:
        kwargs["overlap_history"] = SKYREELS_DF_OVERLAP_FRAMES
        kwargs["addnoise_condition"] = ADD_NOISE_CONDITION
    kwargs["ar_step"] = 0
    kwargs["fps"] = request.fps
    if image is not None:
        kwargs["image"] = image.resize((request.width, request.height))
    return kwargs


def steps_per_section(request: GenerationRequest) -> list[int]:
    """Every window runs the whole schedule (synchronous diffusion forcing)."""
    return [request.num_inference_steps] * get_spec(request.model).sections(request.num_frames)


@contextlib.contextmanager
def step_hook(pipe: Any, on_step: Callable[[int, int], None]) -> Iterator[None]:
    """Call `on_step(done, total)` after every denoising step, via the pipeline's progress bar.

    Not via the scheduler as for the other families: diffusion forcing steps a deep copy of the scheduler
    per latent frame, so `scheduler.step` runs once per frame, and a wrapper on it would be copied along and
    step the original instead of each copy. The progress bar advances once per step of the schedule.
    """
    make_bar = pipe.progress_bar
    done = 0

    def progress_bar(*args: Any, **kwargs: Any) -> Any:
        bar = make_bar(*args, **kwargs)
        advance = bar.update

        def update(n: int = 1) -> Any:
            nonlocal done
            result = advance(n)
            done += n
            on_step(done, max(done, bar.total or 0))
            return result

        bar.update = update
        return bar

    with replaced(pipe, "progress_bar", progress_bar):
        yield
