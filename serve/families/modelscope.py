"""ModelScope text-to-video 1.7B (diffusers' TextToVideoSDPipeline)."""

from __future__ import annotations

from typing import Any

from PIL import Image

from serve.families.common import configured, load_pipeline, text_video_kwargs
from serve.request import GenerationRequest

__all__ = ["configured", "load_pipeline", "pipeline_kwargs"]


def pipeline_kwargs(request: GenerationRequest, image: Image.Image | None) -> dict[str, Any]:
    return text_video_kwargs(request)
