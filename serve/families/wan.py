"""Wan 2.x: text-to-video, image-to-video, both in one model (Wan 2.2 TI2V), and Wan 2.2 A14B's two
experts (high noise, then low noise below the boundary)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from PIL import Image

from serve.families.common import config_values, flow_shift_key, load_pipeline, text_video_kwargs
from serve.request import GenerationRequest

__all__ = ["configured", "load_pipeline", "pipeline_kwargs"]


def pipeline_kwargs(request: GenerationRequest, image: Image.Image | None) -> dict[str, Any]:
    kwargs = text_video_kwargs(request)
    if image is not None:
        kwargs["image"] = image.resize((request.width, request.height))
    if request.guidance_scale_2 is not None:
        kwargs["guidance_scale_2"] = request.guidance_scale_2
    return kwargs


@contextlib.contextmanager
def configured(pipe: Any, request: GenerationRequest) -> Iterator[None]:
    """The request's expert boundary (on the pipeline's config, which its loop reads) and flow shift (on
    the scheduler's config, which `set_timesteps` reads) for this run; the checkpoint's again after."""
    with contextlib.ExitStack() as stack:
        if request.boundary_ratio is not None:
            stack.enter_context(config_values(pipe, boundary_ratio=request.boundary_ratio))
        if request.flow_shift is not None:
            stack.enter_context(
                config_values(pipe.scheduler, **{flow_shift_key(pipe.scheduler): request.flow_shift})
            )
        yield
