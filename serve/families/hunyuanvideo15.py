"""HunyuanVideo 1.5 text-to-video and image-to-video (Qwen2.5-VL + ByT5 text encoders, a guider object
for classifier-free guidance, a 16x VAE)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from PIL import Image

from serve.families.common import config_values, flow_shift_key, load_pipeline, text_video_kwargs
from serve.request import GenerationRequest

__all__ = ["configured", "load_pipeline", "pipeline_kwargs"]


def _register_blocks_for_step_caching() -> None:
    """diffusers' cache hooks find a model's blocks through a registry that lacks HunyuanVideo 1.5's;
    its dual-stream block returns (hidden_states, encoder_hidden_states) as HunyuanVideo's does."""
    from diffusers.hooks._helpers import TransformerBlockMetadata, TransformerBlockRegistry
    from diffusers.models.transformers.transformer_hunyuan_video15 import HunyuanVideo15TransformerBlock

    TransformerBlockRegistry.register(
        model_class=HunyuanVideo15TransformerBlock,
        metadata=TransformerBlockMetadata(return_hidden_states_index=0, return_encoder_hidden_states_index=1),
    )


_register_blocks_for_step_caching()


def pipeline_kwargs(request: GenerationRequest, image: Image.Image | None) -> dict[str, Any]:
    kwargs = text_video_kwargs(request)
    del kwargs["guidance_scale"]  # the pipeline's guider carries it (see `configured`)
    if image is not None:
        # The image-to-video pipeline takes its size from the image (see `configured`).
        kwargs["image"] = image.resize((request.width, request.height))
        del kwargs["height"], kwargs["width"]
    return kwargs


@contextlib.contextmanager
def configured(pipe: Any, request: GenerationRequest) -> Iterator[None]:
    """The request's guidance on a copy of the pipeline's guider, its flow shift on the scheduler, and,
    for image-to-video, its size instead of the aspect-ratio bucket the pipeline would pick from the image
    (the image is cropped to it), so that every model gives the size asked for."""
    guider = pipe.guider
    pipe.guider = guider.new(guidance_scale=request.guidance_scale)
    processor = pipe.video_processor
    with contextlib.ExitStack() as stack:
        stack.callback(setattr, pipe, "guider", guider)
        if request.flow_shift is not None:
            shift = {flow_shift_key(pipe.scheduler): request.flow_shift}
            stack.enter_context(config_values(pipe.scheduler, **shift))
        if request.image is not None:
            processor.calculate_default_height_width = lambda **_: (request.height, request.width)
            stack.callback(delattr, processor, "calculate_default_height_width")
        yield
