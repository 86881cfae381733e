"""Tiny checkpoints: reproducible, loaded the real way, and generating exactly what their limits allow."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import diffusers
import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import AnimateDiffPipeline, DiffusionPipeline, MotionAdapter

from serve.catalog import CATALOG, ModelSpec, Task
from serve.families import get_family
from serve.tiny import TINY_SEED, build_tiny_pipeline, write_tiny_checkpoint, write_tiny_checkpoints
from tests.support import tiny_engine, tiny_request

MODELS = sorted(CATALOG)

# Component classes of the published checkpoints (their model_index.json). The image processor is the
# PIL-backed CLIP one: transformers 5 falls back to it without torchvision, and naming it keeps the files
# the same with or without torchvision.
_CLIP_IMAGE = {"image_encoder": "CLIPVisionModelWithProjection", "feature_extractor": "CLIPImageProcessorPil"}
_COGVIDEOX = {
    "transformer": "CogVideoXTransformer3DModel",
    "vae": "AutoencoderKLCogVideoX",
    "text_encoder": "T5EncoderModel",
    "tokenizer": "T5Tokenizer",
    "scheduler": "CogVideoXDDIMScheduler",
}
_SD_TEXT = {"text_encoder": "CLIPTextModel", "tokenizer": "CLIPTokenizer", "vae": "AutoencoderKL"}
EXPECTED_COMPONENTS: dict[str, dict[str, str]] = {
    "CogVideoXPipeline": _COGVIDEOX,
    "CogVideoXImageToVideoPipeline": _COGVIDEOX,
    "HunyuanVideoPipeline": {
        "transformer": "HunyuanVideoTransformer3DModel",
        "vae": "AutoencoderKLHunyuanVideo",
        "text_encoder": "LlamaModel",
        "tokenizer": "LlamaTokenizer",  # transformers 5's name for LlamaTokenizerFast
        "text_encoder_2": "CLIPTextModel",
        "tokenizer_2": "CLIPTokenizer",
        "scheduler": "FlowMatchEulerDiscreteScheduler",
    },
    "StableVideoDiffusionPipeline": {
        "unet": "UNetSpatioTemporalConditionModel",
        "vae": "AutoencoderKLTemporalDecoder",
        "scheduler": "EulerDiscreteScheduler",
        **_CLIP_IMAGE,
    },
    "TextToVideoSDPipeline": {"unet": "UNet3DConditionModel", "scheduler": "DDIMScheduler", **_SD_TEXT},
    "I2VGenXLPipeline": {"unet": "I2VGenXLUNet", "scheduler": "DDIMScheduler", **_SD_TEXT, **_CLIP_IMAGE},
    "StableDiffusionPipeline": {"unet": "UNet2DConditionModel", "scheduler": "PNDMScheduler", **_SD_TEXT},
    "HunyuanVideoFramepackPipeline": {
        "transformer": "HunyuanVideoFramepackTransformer3DModel",
        "vae": "AutoencoderKLHunyuanVideo",
        "text_encoder": "LlamaModel",
        "tokenizer": "LlamaTokenizer",
        "text_encoder_2": "CLIPTextModel",
        "tokenizer_2": "CLIPTokenizer",
        "scheduler": "FlowMatchEulerDiscreteScheduler",
        "image_encoder": "SiglipVisionModel",
        "feature_extractor": "SiglipImageProcessorPil",
    },
    "HeliosPyramidPipeline": {
        "transformer": "HeliosTransformer3DModel",
        "vae": "AutoencoderKLWan",
        "text_encoder": "UMT5EncoderModel",
        "tokenizer": "T5Tokenizer",
        "scheduler": "HeliosDMDScheduler",
    },
    "SkyReelsV2DiffusionForcingPipeline": {
        "transformer": "SkyReelsV2Transformer3DModel",
        "vae": "AutoencoderKLWan",
        "text_encoder": "UMT5EncoderModel",
        "tokenizer": "T5Tokenizer",
        "scheduler": "UniPCMultistepScheduler",
    },
}
_WAN = {
    "transformer": "WanTransformer3DModel",
    "vae": "AutoencoderKLWan",
    "text_encoder": "UMT5EncoderModel",
    "tokenizer": "T5Tokenizer",  # transformers 5's name for T5TokenizerFast
    "scheduler": "UniPCMultistepScheduler",
}
_WAN_EXPERTS = {**_WAN, "transformer_2": "WanTransformer3DModel"}
_HUNYUAN15 = {
    "transformer": "HunyuanVideo15Transformer3DModel",
    "vae": "AutoencoderKLHunyuanVideo15",
    "text_encoder": "Qwen2_5_VLTextModel",
    "tokenizer": "Qwen2Tokenizer",
    "text_encoder_2": "T5EncoderModel",
    "tokenizer_2": "ByT5Tokenizer",
    "scheduler": "FlowMatchEulerDiscreteScheduler",
    "guider": "ClassifierFreeGuidance",
}
# Wan's checkpoints differ by model, not by pipeline class: a second expert, a CLIP image encoder.
EXPECTED_BY_MODEL: dict[str, dict[str, str]] = {
    "wan2.1-t2v-1.3b": _WAN,
    "wan2.1-t2v-14b": _WAN,
    "wan2.1-i2v-14b-720p": {
        **_WAN,
        "image_encoder": "CLIPVisionModel",
        "image_processor": "CLIPImageProcessorPil",
    },
    "wan2.2-t2v-a14b": _WAN_EXPERTS,
    "wan2.2-i2v-a14b": _WAN_EXPERTS,
    "wan2.2-ti2v-5b": _WAN,
    "hunyuanvideo-1.5": _HUNYUAN15,
    "hunyuanvideo-i2v": {
        "transformer": "HunyuanVideoTransformer3DModel",
        "vae": "AutoencoderKLHunyuanVideo",
        "text_encoder": "LlavaForConditionalGeneration",
        "tokenizer": "LlamaTokenizer",
        "text_encoder_2": "CLIPTextModel",
        "tokenizer_2": "CLIPTokenizer",
        "scheduler": "FlowMatchEulerDiscreteScheduler",
        "image_processor": "CLIPImageProcessorPil",
    },
    "hunyuanvideo-1.5-i2v": {
        **_HUNYUAN15,
        "image_encoder": "SiglipVisionModel",
        "feature_extractor": "SiglipImageProcessorPil",
    },
    "ltx-video": {
        "transformer": "LTXVideoTransformer3DModel",
        "vae": "AutoencoderKLLTXVideo",
        "text_encoder": "T5EncoderModel",
        "tokenizer": "T5Tokenizer",
        "scheduler": "FlowMatchEulerDiscreteScheduler",
    },
    "ltx-video-long": {
        "transformer": "LTXVideoTransformer3DModel",
        "vae": "AutoencoderKLLTXVideo",
        "text_encoder": "T5EncoderModel",
        "tokenizer": "T5Tokenizer",
        "scheduler": "LTXEulerAncestralRFScheduler",
    },
}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    # Tiny tensors gain nothing from a second thread, and OpenMP's barriers stall for seconds when other
    # processes (a Ray cluster, a parallel test run) share the two cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_tiny_checkpoints(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def load(checkpoints: dict[str, Path]) -> Callable[[str], DiffusionPipeline]:
    """Loads a written checkpoint the way the real weights are loaded (float32, CPU), once per model."""

    @functools.cache
    def _load(model: str) -> DiffusionPipeline:
        spec, path = CATALOG[model], checkpoints[model]
        if spec.adapter_repo_id is not None:
            adapter = MotionAdapter.from_pretrained(path / "motion_adapter")
            pipe = AnimateDiffPipeline.from_pretrained(path / "base", motion_adapter=adapter)
        else:
            pipe = getattr(diffusers, spec.pipeline_class).from_pretrained(path)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    return _load


def _generate(pipe: DiffusionPipeline, spec: ModelSpec, height: int, width: int, frames: int, steps: int = 2):
    if spec.in_sections:
        # A long clip's length is the engine's to make: whole sections from the pipeline, cut to `frames`
        # (as they are decoded where they stream, serve/sections.py); the tiny default steps.
        request = tiny_request(spec.name, height=height, width=width, num_frames=frames)
        return tiny_engine(spec.name).generate(request).frames[None].astype(np.float32) / 255.0
    kwargs = {
        "height": height,
        "width": width,
        "num_frames": frames,
        "num_inference_steps": steps,
        "output_type": "np",
        "generator": torch.Generator().manual_seed(0),
    }
    if spec.task is Task.I2V:
        kwargs["image"] = PIL.Image.new("RGB", (width, height), (200, 120, 40))
    if spec.pipeline_class != "StableVideoDiffusionPipeline":  # SVD takes no prompt
        kwargs["prompt"] = "a red fox running through snow"
    if spec.pipeline_class == "I2VGenXLPipeline":
        kwargs["clip_skip"] = None  # its default of 1 needs CLIPTextModel.text_model, gone in transformers 5
    sized_by_the_service = contextlib.nullcontext()
    if "height" not in inspect.signature(pipe.__call__).parameters:
        # HunyuanVideo 1.5 I2V takes its size from the image's aspect-ratio bucket; the service gives it
        # the request's size instead (serve/families/hunyuanvideo15.py), as here.
        del kwargs["height"], kwargs["width"]
        request = tiny_request(spec.name, height=height, width=width, num_frames=frames)
        sized_by_the_service = get_family(spec.family).configured(pipe, request)
    with sized_by_the_service:
        return np.asarray(pipe(**kwargs).frames)


def _digests(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def test_checkpoints_are_reproducible_byte_for_byte(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    first = _digests(next(iter(checkpoints.values())).parent)
    write_tiny_checkpoints(tmp_path)
    assert _digests(tmp_path) == first
    assert sum(name.endswith(".safetensors") for name in first) >= 3 * len(MODELS)


def test_another_seed_gives_other_weights_and_the_same_configs(
    checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    other = write_tiny_checkpoint("cogvideox-2b", tmp_path, seed=TINY_SEED + 1)
    same, theirs = _digests(checkpoints["cogvideox-2b"]), _digests(other)
    assert same.keys() == theirs.keys()
    for name in same:
        assert (same[name] == theirs[name]) == (not name.endswith(".safetensors")), name


@pytest.mark.parametrize("model", MODELS)
def test_checkpoint_declares_the_real_component_classes(model: str, checkpoints: dict[str, Path]) -> None:
    spec = CATALOG[model]
    root = checkpoints[model] / "base" if spec.adapter_repo_id else checkpoints[model]
    index = json.loads((root / "model_index.json").read_text())
    expected_class = "StableDiffusionPipeline" if spec.adapter_repo_id else spec.pipeline_class
    assert index["_class_name"] == expected_class
    declared = {name: value[1] for name, value in index.items() if isinstance(value, list) and value[1]}
    assert declared == EXPECTED_BY_MODEL.get(model, EXPECTED_COMPONENTS.get(expected_class))
    if spec.adapter_repo_id:
        adapter_config = json.loads((checkpoints[model] / "motion_adapter" / "config.json").read_text())
        assert adapter_config["_class_name"] == "MotionAdapter"


@pytest.mark.parametrize("model", MODELS)
def test_tiny_model_generates_its_default_video_in_two_steps(
    model: str, load: Callable[[str], DiffusionPipeline]
) -> None:
    spec, limits = CATALOG[model], CATALOG[model].tiny_limits
    pipe = load(model)
    assert type(pipe).__name__ == spec.pipeline_class
    frames = _generate(pipe, spec, limits.default_height, limits.default_width, limits.default_num_frames)
    assert frames.shape == (1, limits.default_num_frames, limits.default_height, limits.default_width, 3)
    assert np.isfinite(frames).all() and frames.min() >= 0.0 and frames.max() <= 1.0


@pytest.mark.parametrize("model", MODELS)
def test_frame_counts_across_the_tiny_limits_come_out_exactly(
    model: str, load: Callable[[str], DiffusionPipeline]
) -> None:
    spec, limits = CATALOG[model], CATALOG[model].tiny_limits
    low, high, step = limits.num_frames.min, limits.num_frames.max, limits.num_frames.step
    counts = sorted({low, low + step, limits.default_num_frames, high - step, high})
    assert all(limits.num_frames.contains(frames) for frames in counts)
    for frames in counts:
        video = _generate(load(model), spec, limits.default_height, limits.default_width, frames, steps=1)
        assert video.shape[1] == frames, f"asked for {frames} frames"


@pytest.mark.parametrize("model", MODELS)
def test_the_extreme_sides_of_the_tiny_limits_come_out_exactly(
    model: str, load: Callable[[str], DiffusionPipeline]
) -> None:
    spec, limits = CATALOG[model], CATALOG[model].tiny_limits
    frames = limits.default_num_frames
    for height, width in [(limits.height.min, limits.width.max), (limits.height.max, limits.width.min)]:
        video = _generate(load(model), spec, height, width, frames, steps=1)
        assert video.shape[1:4] == (frames, height, width)
    if limits.height.step > 1:
        height = limits.height.min + limits.height.step
        video = _generate(load(model), spec, height, limits.default_width, frames, steps=1)
        assert video.shape[1:4] == (frames, height, limits.default_width)


def test_cogvideox_frame_counts_off_the_8k_plus_1_grid_come_out_wrong(
    load: Callable[[str], DiffusionPipeline],
) -> None:
    # Why the CogVideoX limits step by 8: 13 frames are 4 latent frames, which the VAE decodes in pairs.
    video = _generate(load("cogvideox-2b"), CATALOG["cogvideox-2b"], 32, 32, 13, steps=1)
    assert video.shape[1] == 16


def test_cogvideox_i2v_generates_only_at_its_sample_size(load: Callable[[str], DiffusionPipeline]) -> None:
    spec = CATALOG["cogvideox-5b-i2v"]
    assert spec.tiny_limits.height.min == spec.tiny_limits.height.max == spec.tiny_limits.default_height
    with pytest.raises(ValueError, match="different resolution"):
        _generate(load("cogvideox-5b-i2v"), spec, spec.tiny_limits.default_height + 16, 32, 9, steps=1)


@pytest.mark.parametrize("model", ["cogvideox-2b", "svd"])
def test_in_memory_pipeline_generates_what_its_saved_checkpoint_does(
    model: str, load: Callable[[str], DiffusionPipeline]
) -> None:
    spec, limits = CATALOG[model], CATALOG[model].tiny_limits
    size = (limits.default_height, limits.default_width, limits.default_num_frames)
    in_memory = build_tiny_pipeline(model)
    in_memory.set_progress_bar_config(disable=True)
    np.testing.assert_array_equal(_generate(in_memory, spec, *size), _generate(load(model), spec, *size))


@pytest.mark.parametrize("model", ["cogvideox-2b", "hunyuanvideo"])
def test_video_vaes_compress_like_the_real_ones(model: str) -> None:
    vae = build_tiny_pipeline(model).vae
    with torch.no_grad():
        latents = vae.encode(torch.zeros(1, 3, 9, 32, 32)).latent_dist.mode()
    assert vae.config.temporal_compression_ratio == 4
    assert latents.shape == (1, 16, 3, 4, 4)  # 4x in time (after the first frame), 8x in space


def test_building_leaves_the_global_torch_rng_alone() -> None:
    before = torch.random.get_rng_state()
    build_tiny_pipeline("svd")
    assert torch.equal(torch.random.get_rng_state(), before)


def test_unknown_model_is_refused_with_the_known_names() -> None:
    with pytest.raises(KeyError, match="cogvideox-2b"):
        build_tiny_pipeline("no-such-model")
