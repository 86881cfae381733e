"""Stable Video Diffusion (img2vid, img2vid-xt): image only, no prompt."""

from __future__ import annotations

from typing import Any

from PIL import Image

from serve.families.common import configured, load_pipeline
from serve.request import GenerationRequest

__all__ = ["configured", "load_pipeline", "pipeline_kwargs"]


def pipeline_kwargs(request: GenerationRequest, image: Image.Image | None) -> dict[str, Any]:
    assert image is not None, "validated requests for image-to-video models carry an image"
    # SVD ramps guidance linearly across frames from min to max; the request sets the maximum.
    return {
        "image": image.resize((request.width, request.height)),
        "height": request.height,
        "width": request.width,
        "num_frames": request.num_frames,
        "num_inference_steps": request.num_inference_steps,
        "min_guidance_scale": min(1.0, request.guidance_scale),
        "max_guidance_scale": request.guidance_scale,
        "fps": request.fps,
        "motion_bucket_id": request.motion_bucket_id,
        "noise_aug_strength": request.noise_aug_strength,
        "decode_chunk_size": request.decode_chunk_size or request.num_frames,
    }
