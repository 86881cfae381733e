"""Wan 2.x: text-to-video, image-to-video, both in one model (Wan 2.2 TI2V), and Wan 2.2 A14B's two
experts (high noise, then low noise below the boundary)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from PIL import Image

from serve.families.common import load_pipeline, text_video_kwargs
from serve.request import GenerationRequest

__all__ = ["configured", "load_pipeline", "pipeline_kwargs"]


def pipeline_kwargs(request: GenerationRequest, image: Image.Image | None) -> dict[str, Any]:
    kwargs = text_video_kwargs(request)
    if image is not None:
        kwargs["image"] = image.resize((request.width, request.height))
    if request.guidance_scale_2 is not None:
        kwargs["guidance_scale_2"] = request.guidance_scale_2
    return kwargs


def _shift_key(scheduler: Any) -> str:
    """Where the scheduler keeps the flow shift: UniPC (Wan's own) or flow-matching Euler."""
    return "flow_shift" if "flow_shift" in scheduler.config else "shift"


@contextlib.contextmanager
def configured(pipe: Any, request: GenerationRequest) -> Iterator[None]:
    """The request's expert boundary (on the pipeline's config, which its loop reads) and flow shift (on
    the scheduler's config, which `set_timesteps` reads) for this run; the checkpoint's again after."""
    changes: list[tuple[Any, dict[str, Any], dict[str, Any]]] = []
    if request.boundary_ratio is not None:
        changes.append((pipe, {"boundary_ratio": request.boundary_ratio}, {}))
    if request.flow_shift is not None:
        changes.append((pipe.scheduler, {_shift_key(pipe.scheduler): request.flow_shift}, {}))
    try:
        for owner, wanted, saved in changes:
            saved.update({key: owner.config[key] for key in wanted})
            owner.register_to_config(**wanted)
        yield
    finally:
        for owner, _, saved in changes:
            if saved:
                owner.register_to_config(**saved)
