"""LTX-Video: text-to-video, or image-to-video with an image (LTXImageToVideoPipeline over the same
components)."""

from __future__ import annotations

from typing import Any

from PIL import Image

from serve.families.common import configured, load_pipeline, text_video_kwargs
from serve.request import GenerationRequest

__all__ = ["configured", "load_pipeline", "pipeline_kwargs"]


def pipeline_kwargs(request: GenerationRequest, image: Image.Image | None) -> dict[str, Any]:
    kwargs = text_video_kwargs(request)
    kwargs["frame_rate"] = request.fps  # LTX conditions its positions on the frame rate
    kwargs["decode_timestep"] = request.decode_timestep
    kwargs["decode_noise_scale"] = request.decode_noise_scale
    if image is not None:
        kwargs["image"] = image.resize((request.width, request.height))
    return kwargs
