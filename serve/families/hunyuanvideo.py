"""HunyuanVideo text-to-video (single process; the multi-GPU path lives in `parallel`)."""

from __future__ import annotations

from typing import Any

from PIL import Image

from serve.families.common import configured, load_pipeline, text_video_kwargs
from serve.request import GenerationRequest

__all__ = ["configured", "load_pipeline", "pipeline_kwargs"]


def pipeline_kwargs(request: GenerationRequest, image: Image.Image | None) -> dict[str, Any]:
    # HunyuanVideo is CFG-distilled: guidance_scale is an embedded guidance input, and true
    # classifier-free guidance (a second forward per step) only runs when true_cfg_scale > 1.
    kwargs = text_video_kwargs(request)
    kwargs["true_cfg_scale"] = request.true_cfg_scale or 1.0
    return kwargs
