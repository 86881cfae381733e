"""Helios (HeliosPyramidPipeline, distilled): a long clip made section by section.

`num_inference_steps` is the steps of each of the three pyramid stages; the distilled checkpoint runs
the first section with twice as many (its "amplified" first chunk), so a clip of n sections takes
3 x steps x (n + 1) denoising steps in all. `steps_per_section` says so, and the engine reports progress
as section i of n with it.
"""

from __future__ import annotations

from typing import Any

from PIL import Image

from serve.catalog import HELIOS_STAGES, get_spec
from serve.families.common import configured, load_pipeline, text_video_kwargs
from serve.request import GenerationRequest

__all__ = ["SECTION_KIND", "configured", "load_pipeline", "pipeline_kwargs", "steps_per_section"]

SECTION_KIND = "decode"  # each VAE decode is the next section (serve/sections.py)


def pipeline_kwargs(request: GenerationRequest, image: Image.Image | None) -> dict[str, Any]:
    # num_frames: the pipeline rounds up to whole sections; the engine keeps the first num_frames.
    kwargs = text_video_kwargs(request)
    steps = kwargs.pop("num_inference_steps")  # this pipeline's steps are per pyramid stage
    kwargs["pyramid_num_inference_steps_list"] = [steps] * HELIOS_STAGES
    kwargs["is_amplify_first_chunk"] = True
    return kwargs


def steps_per_section(request: GenerationRequest) -> list[int]:
    """Denoising steps (scheduler steps) of each section, in order."""
    per_section = HELIOS_STAGES * request.num_inference_steps
    sections = get_spec(request.model).sections(request.num_frames)
    return [2 * per_section] + [per_section] * (sections - 1)
