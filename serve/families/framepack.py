"""FramePack (HunyuanVideoFramepackPipeline): image-to-video a section at a time.

Each section is conditioned on the start image and a compressed history of the sections made before it
(so its cost does not grow with the clip), decoded with an overlap of one window and blended into the
clip (`_soft_append`). FramePack-F1 makes the sections forward in time: serve/sections.py hands out
everything but that overlap as soon as a section is appended, so the clip streams a section behind.
FramePack (anti-drifting) makes them backward from the end, so its clip is final only after the last.

Weights: a checkpoint directory holding the whole pipeline (the tiny one, or one assembled with
`save_pretrained`) loads as is. The published repos hold only the transformer; the text encoders and
VAE come from HunyuanVideo's repo and the SigLIP image encoder from FLUX.1 Redux's, as FramePack's
authors load them (all three must be in the Hugging Face cache).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image

from serve.catalog import get_spec
from serve.families.common import configured
from serve.request import GenerationRequest
from serve.weights import WeightsSource, from_hf_cache

__all__ = ["SECTION_KIND", "configured", "load_pipeline", "pipeline_kwargs", "steps_per_section"]

MODEL = "hunyuanvideo-framepack-f1"  # both FramePack models load their other components from the same repos
SECTION_KIND = "soft_append"  # each section's frames are final once the next one is blended in
LATENT_WINDOW = 9  # latent frames per section
WINDOW_FRAMES = (LATENT_WINDOW - 1) * 4 + 1  # 33: the pipeline makes ceil(num_frames / 33) sections


def load_pipeline(pipeline_cls: type, source: WeightsSource, load_kwargs: dict[str, Any]) -> Any:
    if (Path(source.path) / "model_index.json").is_file():
        return pipeline_cls.from_pretrained(str(source.path), **load_kwargs)
    from diffusers import HunyuanVideoFramepackTransformer3DModel
    from transformers import SiglipImageProcessor, SiglipVisionModel

    base_repo, image_encoder_repo = get_spec(MODEL).component_repo_ids
    dtype = {"torch_dtype": load_kwargs["torch_dtype"]} if "torch_dtype" in load_kwargs else {}
    transformer = HunyuanVideoFramepackTransformer3DModel.from_pretrained(str(source.path), **dtype)
    redux = str(from_hf_cache(image_encoder_repo))
    return pipeline_cls.from_pretrained(
        str(from_hf_cache(base_repo)),
        transformer=transformer,
        image_encoder=SiglipVisionModel.from_pretrained(redux, subfolder="image_encoder", **dtype),
        feature_extractor=SiglipImageProcessor.from_pretrained(redux, subfolder="feature_extractor"),
        **load_kwargs,
    )


def pipeline_kwargs(request: GenerationRequest, image: Image.Image | None) -> dict[str, Any]:
    if image is None:
        raise ValueError("FramePack is image-to-video: the request has no image")
    return {
        "image": image.resize((request.width, request.height)),
        "prompt": request.prompt,
        "height": request.height,
        "width": request.width,
        # The pipeline counts sections in windows of 33 frames; each adds 36 (serve/catalog.py): ask for
        # the sections the clip needs; the engine keeps the first num_frames.
        "num_frames": WINDOW_FRAMES * get_spec(request.model).sections(request.num_frames),
        "num_inference_steps": request.num_inference_steps,
        "guidance_scale": request.guidance_scale,  # distilled guidance, as FramePack's own default 10
        "latent_window_size": LATENT_WINDOW,
        # F1: forward in time; the original: backward from the end ("anti-drifting").
        "sampling_type": "vanilla" if get_spec(request.model).progressive else "inverted_anti_drifting",
    }


def steps_per_section(request: GenerationRequest) -> list[int]:
    """Every section runs the whole schedule."""
    return [request.num_inference_steps] * get_spec(request.model).sections(request.num_frames)
