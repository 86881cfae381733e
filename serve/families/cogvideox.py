"""CogVideoX (2B, 5B) text-to-video and 5B image-to-video."""

from __future__ import annotations

from typing import Any

from PIL import Image

from serve.families.common import configured, load_pipeline, text_video_kwargs
from serve.request import GenerationRequest

__all__ = ["configured", "load_pipeline", "pipeline_kwargs"]


def pipeline_kwargs(request: GenerationRequest, image: Image.Image | None) -> dict[str, Any]:
    kwargs = text_video_kwargs(request)
    if image is not None:
        kwargs["image"] = image.resize((request.width, request.height))
    return kwargs
