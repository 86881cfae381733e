"""AnimateDiff: a Stable Diffusion 1.5 base model with a motion adapter."""

from __future__ import annotations

from typing import Any

from PIL import Image

from serve.families.common import configured, text_video_kwargs
from serve.request import GenerationRequest
from serve.weights import WeightsSource

__all__ = ["configured", "load_pipeline", "pipeline_kwargs"]


def load_pipeline(pipeline_cls: type, source: WeightsSource, load_kwargs: dict[str, Any]) -> Any:
    """Load the motion adapter, then the base model around it, with AnimateDiff's scheduler."""
    from diffusers import DDIMScheduler, MotionAdapter

    if source.adapter_path is None:
        raise ValueError("AnimateDiff needs the motion adapter's weights (adapter_path)")
    adapter_kwargs = {k: v for k, v in load_kwargs.items() if k == "torch_dtype"}
    adapter = MotionAdapter.from_pretrained(str(source.adapter_path), **adapter_kwargs)
    pipe = pipeline_cls.from_pretrained(str(source.path), motion_adapter=adapter, **load_kwargs)
    # The settings AnimateDiff's authors recommend; SD 1.5's own PNDM scheduler flickers.
    pipe.scheduler = DDIMScheduler.from_config(
        pipe.scheduler.config,
        beta_schedule="linear",
        clip_sample=False,
        timestep_spacing="linspace",
        steps_offset=1,
    )
    return pipe


def pipeline_kwargs(request: GenerationRequest, image: Image.Image | None) -> dict[str, Any]:
    return text_video_kwargs(request)
