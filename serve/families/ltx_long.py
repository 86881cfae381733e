"""LTX-Video long multi-prompt (LTXI2VLongMultiPromptPipeline): a long clip in overlapping windows over one
latent video, a prompt per window, optionally from a first frame.

The windows are fused in latent space and the whole clip is decoded once at the end, so it is delivered
whole (the catalog's `section_delivery`). That decode runs the VAE's own tiling, in space and, frame-wise,
in time (16 frames at a time, blended), so its activations do not grow with the clip; the pipeline's
ComfyUI-style 4 x 4 tiles on top of it would only repeat the work (and break on latents smaller than
the tiles).
"""

from __future__ import annotations

from typing import Any

from PIL import Image

from serve.catalog import LTX_LONG_OVERLAP_FRAMES, LTX_LONG_WINDOW_FRAMES, get_spec
from serve.families.common import configured, text_video_kwargs
from serve.request import GenerationRequest, section_prompts
from serve.weights import WeightsSource

__all__ = ["configured", "load_pipeline", "pipeline_kwargs", "steps_per_section"]


def load_pipeline(pipeline_cls: type, source: WeightsSource, load_kwargs: dict[str, Any]) -> Any:
    pipe = pipeline_cls.from_pretrained(str(source.path), **load_kwargs)
    pipe.vae.use_framewise_decoding = True  # the end's decode, window by window in time (with vae tiling)
    return pipe


def pipeline_kwargs(request: GenerationRequest, image: Image.Image | None) -> dict[str, Any]:
    spec = get_spec(request.model)
    kwargs = text_video_kwargs(request)
    kwargs.update(
        # One prompt per window, in order; the last goes on for the windows after it.
        prompt=section_prompts(request.prompt),
        # Whole windows; the engine keeps the first num_frames.
        num_frames=spec.frames_of_sections(spec.sections(request.num_frames)),
        frame_rate=request.fps,
        # Each window draws its noise from a generator of its own, seeded with seed + its first latent frame.
        seed=request.seed,
        temporal_tile_size=LTX_LONG_WINDOW_FRAMES,
        temporal_overlap=LTX_LONG_OVERLAP_FRAMES,
        decode_timestep=request.decode_timestep,
        decode_noise_scale=request.decode_noise_scale,
        decode_horizontal_tiles=1,
        decode_vertical_tiles=1,
    )
    if image is not None:
        kwargs["cond_image"] = image.resize((request.width, request.height))
    return kwargs


def steps_per_section(request: GenerationRequest) -> list[int]:
    """Every window runs the schedule but its last step (the pipeline's loop stops one short)."""
    return [request.num_inference_steps - 1] * get_spec(request.model).sections(request.num_frames)
