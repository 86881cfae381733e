"""I2VGen-XL image-to-video with a text prompt."""

from __future__ import annotations

from typing import Any

from PIL import Image

from serve.families.common import load_pipeline, text_video_kwargs
from serve.request import GenerationRequest

__all__ = ["load_pipeline", "pipeline_kwargs"]


def pipeline_kwargs(request: GenerationRequest, image: Image.Image | None) -> dict[str, Any]:
    assert image is not None, "validated requests for image-to-video models carry an image"
    kwargs = text_video_kwargs(request)
    kwargs.update(
        image=image,
        target_fps=request.fps,
        decode_chunk_size=request.decode_chunk_size or request.num_frames,
        # transformers 5 flattened CLIPTextModel; the pipeline's default clip_skip=1 reaches for the
        # removed `text_model` attribute, so the last hidden layer is used directly.
        clip_skip=None,
    )
    return kwargs
