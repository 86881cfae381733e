"""Every supported model: where its weights live, how it runs, its defaults and limits."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Task(StrEnum):
    """What a model turns into a video."""

    T2V = "t2v"
    I2V = "i2v"
    TI2V = "ti2v"  # text to video, or image (and text) to video: the image is optional


TAKES_IMAGE = frozenset({Task.I2V, Task.TI2V})
NEEDS_IMAGE = frozenset({Task.I2V})


class Knob(StrEnum):
    """Model-specific request fields beyond the common ones."""

    NEGATIVE_PROMPT = "negative_prompt"
    MOTION_BUCKET_ID = "motion_bucket_id"
    NOISE_AUG_STRENGTH = "noise_aug_strength"
    DECODE_CHUNK_SIZE = "decode_chunk_size"
    TRUE_CFG_SCALE = "true_cfg_scale"
    GUIDANCE_SCALE_2 = "guidance_scale_2"
    BOUNDARY_RATIO = "boundary_ratio"
    FLOW_SHIFT = "flow_shift"
    DECODE_TIMESTEP = "decode_timestep"
    DECODE_NOISE_SCALE = "decode_noise_scale"


class CachePolicy(StrEnum):
    """Step caching: how a denoising step may reuse the transformer's work of an earlier one."""

    OFF = "off"
    FIRST_BLOCK = "first_block"


class StepCache(BaseModel):
    """A step-cache policy and its threshold (FIRST_BLOCK: the first block's relative change to skip at)."""

    model_config = ConfigDict(frozen=True)
    policy: CachePolicy = Field(CachePolicy.OFF, description="off, or first_block (First-Block Cache)")
    threshold: float = Field(
        0.05,
        ge=0.0,
        le=1.0,
        description="first_block: skip the other blocks while the first block's residual changed by less "
        "than this (relative mean absolute difference); 0 never skips",
    )


NO_CACHE = StepCache()
# First-Block Cache starting points for the real models (the range ParaAttention publishes for video
# DiTs); bench/cache_speed.py measures forwards saved and the change in the output for a threshold.
_HUNYUAN_CACHE = StepCache(policy=CachePolicy.FIRST_BLOCK, threshold=0.06)
_COGVIDEOX_CACHE = StepCache(policy=CachePolicy.FIRST_BLOCK, threshold=0.05)
# Transformer families whose blocks diffusers' cache hooks know (TransformerBlockRegistry).
_DIT_CACHE_POLICIES = frozenset({CachePolicy.FIRST_BLOCK})


class IntRange(BaseModel):
    """Inclusive integer range; `step` constrains values to `min + k * step`."""

    model_config = ConfigDict(frozen=True)
    min: int
    max: int
    step: int = 1

    def contains(self, value: int) -> bool:
        return self.min <= value <= self.max and (value - self.min) % self.step == 0

    def describe(self) -> str:
        text = f"[{self.min}, {self.max}]"
        return text if self.step == 1 else f"{text} in steps of {self.step} from {self.min}"


class FloatRange(BaseModel):
    """Inclusive float range."""

    model_config = ConfigDict(frozen=True)
    min: float
    max: float

    def contains(self, value: float) -> bool:
        return self.min <= value <= self.max

    def describe(self) -> str:
        return f"[{self.min:g}, {self.max:g}]"


class MemoryOptions(BaseModel):
    """diffusers memory savers; the catalog holds each model's recommendation."""

    model_config = ConfigDict(frozen=True)
    cpu_offload: bool = Field(False, description="enable_model_cpu_offload (needs an accelerator)")
    vae_tiling: bool = Field(False, description="decode the VAE in tiles")
    vae_slicing: bool = Field(False, description="decode the VAE one sample/frame chunk at a time")
    attention_slicing: bool = Field(False, description="compute attention in slices (UNet models)")
    fp8_weights: bool = Field(
        False, description="store transformer/UNet weights as float8_e4m3fn, compute in torch_dtype"
    )
    fp8_gemms: bool = Field(
        False, description="run the transformer's matmuls in FP8 (torchao; CUDA capability 8.9+ only)"
    )
    text_encoder_quantization: Literal["none", "8bit", "nf4"] = Field(
        "none", description="load the text encoder with bitsandbytes 8-bit or nf4 weights"
    )
    text_encoder_offload: bool = Field(
        False,
        description="keep the text encoders in host memory, on the GPU only while they encode "
        "(serve/text_encoder_offload.py): their GPU memory goes to the denoising loop",
    )

    @model_validator(mode="after")
    def _one_fp8_mode(self) -> MemoryOptions:
        if self.fp8_weights and self.fp8_gemms:
            raise ValueError("fp8_weights (FP8 storage) and fp8_gemms (FP8 compute) exclude each other")
        return self

    @model_validator(mode="after")
    def _one_text_encoder_saver(self) -> MemoryOptions:
        if self.text_encoder_offload and self.cpu_offload:
            raise ValueError(
                "text_encoder_offload is part of cpu_offload (which offloads every model): set one"
            )
        if self.text_encoder_offload and self.text_encoder_quantization != "none":
            raise ValueError(
                "text_encoder_offload and text_encoder_quantization exclude each other (bitsandbytes weights "
                "cannot move between host and GPU): keep the encoder quantized on the GPU, or offload it"
            )
        return self


class Limits(BaseModel):
    """Defaults and allowed ranges of the common request fields."""

    model_config = ConfigDict(frozen=True)
    num_frames: IntRange
    default_num_frames: int
    fps: IntRange = IntRange(min=1, max=60)
    default_fps: int
    height: IntRange
    width: IntRange
    default_height: int
    default_width: int
    num_inference_steps: IntRange = IntRange(min=1, max=150)
    default_num_inference_steps: int
    guidance_scale: FloatRange = FloatRange(min=0.0, max=30.0)
    default_guidance_scale: float


# Between the prompts of consecutive sections, for models with `prompt_per_section`.
SECTION_PROMPT_SEPARATOR = "|"


class ModelSpec(BaseModel):
    """One catalog entry."""

    model_config = ConfigDict(frozen=True)
    name: str = Field(description="the name requests use")
    repo_id: str = Field(
        description="Hugging Face repo of the weights (the base model where an adapter is used)"
    )
    adapter_repo_id: str | None = Field(None, description="motion adapter repo (AnimateDiff)")
    component_repo_ids: tuple[str, ...] = Field(
        (),
        description="repos the family assembles the pipeline from besides repo_id, which then holds only a "
        "component (FramePack: its transformer; the base pipeline, then the image encoder)",
    )
    pipeline_class: str = Field(description="diffusers pipeline class name")
    image_pipeline_class: str | None = Field(
        None,
        description="ti2v: the pipeline class for requests with an image, built from the same components",
    )
    family: str = Field(description="module in serve.families that maps a request to pipeline kwargs")
    task: Task
    torch_dtype: str = Field("bfloat16", description="compute dtype on an accelerator")
    variant: str | None = Field(None, description="weights variant to load, e.g. fp16")
    knobs: frozenset[Knob] = frozenset()
    knob_defaults: dict[Knob, float] = Field(
        default_factory=dict,
        description="this model's defaults of its knobs (unset: the general default, else the checkpoint's)",
    )
    limits: Limits = Field(description="limits of the real model")
    tiny_limits: Limits = Field(description="limits of the tiny random-weight checkpoint")
    memory: MemoryOptions = MemoryOptions()
    gpu_memory_gb: float = Field(
        description="estimated peak GPU memory at defaults with the memory options, text encoders on the GPU "
        "(gpu_memory_estimate_gb takes off what a GPU does not hold)"
    )
    text_encoder_gb: float = Field(
        0.0,
        ge=0,
        description="GPU memory of the text encoders within gpu_memory_gb: what text_encoder_offload and the "
        "ranks other than 0 of a multi-GPU replica do not hold",
    )
    transformer_blocks_gb: float = Field(
        0.0,
        ge=0,
        description="GPU memory of the transformer blocks' weights within gpu_memory_gb, with the catalog's "
        "memory options: what pipeline stages divide among them (parallel/pipeline.py)",
    )
    denoiser: Literal["transformer", "unet"] = Field(
        "unet", description="the denoiser's kind: DiT transformer blocks (cached, compiled) or a UNet"
    )
    experts: int = Field(
        1, ge=1, le=2, description="denoisers taking turns over the steps (Wan 2.2 A14B: high and low noise)"
    )
    sequence_parallel: bool = Field(
        False,
        description="xDiT (xfuser) has a sequence-parallel transformer for it: a replica may span GPUs",
    )
    cache_policies: frozenset[CachePolicy] = Field(
        frozenset(), description="step-cache policies besides off (none for the UNet families)"
    )
    default_cache: StepCache = Field(NO_CACHE, description="step caching of the real model by default")
    section_frames: int | None = Field(
        None,
        ge=1,
        description="long-clip models: frames each section adds, decoded and delivered as soon as it is "
        "made (the clip plays while the rest generates); None: one window, delivered whole",
    )
    first_section_frames: int | None = Field(
        None,
        ge=1,
        description="frames of the first section where it differs from the later ones (SkyReels-V2 diffusion "
        "forcing: a whole window first, then the window less its overlap with the history); None: "
        "section_frames",
    )
    section_delivery: Literal["as_made", "at_end"] = Field(
        "as_made",
        description="long-clip models: as_made, each section is final (decoded, in time order) as soon as it "
        "is made and streams; at_end, the clip is final only when the last section is made (FramePack's "
        "anti-drifting sampling makes the last section first; LTX long multi-prompt fuses its windows' "
        "latents and decodes once): progress still counts sections, the file comes whole",
    )
    prompt_per_section: bool = Field(
        False,
        description="the prompt may give each section its own, separated by "
        f"{SECTION_PROMPT_SEPARATOR!r} (the last applies to the sections after it)",
    )
    description: str = ""

    @property
    def in_sections(self) -> bool:
        """It makes its clip section by section (a long-clip model): progress counts sections."""
        return self.section_frames is not None

    @property
    def progressive(self) -> bool:
        """It makes its clip section by section in time order, so the file can grow while it runs."""
        return self.in_sections and self.section_delivery == "as_made"

    def sections(self, num_frames: int) -> int:
        """Sections a clip of `num_frames` takes (1 for a one-window model)."""
        if not self.section_frames:
            return 1
        first = self.first_section_frames or self.section_frames
        return 1 + -(-max(num_frames - first, 0) // self.section_frames)

    def frames_of_sections(self, sections: int) -> int:
        """Frames of a clip of `sections` whole sections (a long-clip model)."""
        assert self.section_frames, f"{self.name} is not made in sections"
        return (self.first_section_frames or self.section_frames) + (sections - 1) * self.section_frames

    def limits_for(self, tiny: bool) -> Limits:
        return self.tiny_limits if tiny else self.limits

    def gpu_memory_estimate_gb(
        self, memory: MemoryOptions | None = None, rank: int = 0, pipeline_degree: int = 1
    ) -> float:
        """Estimated peak of one GPU at the defaults: less the text encoders where that GPU does not hold them
        (`text_encoder_offload`, or a rank other than 0 of a multi-GPU replica), and less the blocks of the
        other stages of a pipeline-parallel replica."""
        options = memory or self.memory
        without_encoders = rank > 0 or options.text_encoder_offload
        other_stages = self.transformer_blocks_gb * (1 - 1 / pipeline_degree)
        return self.gpu_memory_gb - (self.text_encoder_gb if without_encoders else 0.0) - other_stages

    @model_validator(mode="after")
    def _image_pipeline_for_ti2v(self) -> ModelSpec:
        if (self.task is Task.TI2V) != (self.image_pipeline_class is not None):
            raise ValueError(f"{self.name}: image_pipeline_class is set exactly for ti2v models")
        return self

    @model_validator(mode="after")
    def _default_cache_supported(self) -> ModelSpec:
        policy = self.default_cache.policy
        if policy is not CachePolicy.OFF and policy not in self.cache_policies:
            raise ValueError(f"{self.name}: default cache policy {policy} is not one of its cache_policies")
        return self


# Sides every tiny checkpoint generates at: the VAEs compress 8x; the transformers add a 2x2 patch, while the
# UNets pad odd latent sizes themselves.
_TINY_DIT_SIDE = IntRange(min=16, max=128, step=16)
_TINY_UNET_SIDE = IntRange(min=16, max=512, step=8)


def _tiny(
    frames: IntRange,
    default_frames: int,
    fps: int,
    size: int = 32,
    steps: int = 2,
    guidance: float = 5.0,
    side: IntRange = _TINY_UNET_SIDE,
) -> Limits:
    """Limits for a tiny checkpoint: small sizes so a CPU generates in about a second."""
    return Limits(
        num_frames=frames,
        default_num_frames=default_frames,
        default_fps=fps,
        height=side,
        width=side,
        default_height=size,
        default_width=size,
        num_inference_steps=IntRange(min=1, max=150),
        default_num_inference_steps=steps,
        default_guidance_scale=guidance,
    )


_COGVIDEOX_LIMITS = Limits(
    num_frames=IntRange(min=9, max=49, step=8),
    default_num_frames=49,
    default_fps=8,
    height=IntRange(min=256, max=768, step=16),
    width=IntRange(min=256, max=1360, step=16),
    default_height=480,
    default_width=720,
    default_num_inference_steps=50,
    default_guidance_scale=6.0,
)
# The VAE decodes latent frames in pairs after the first few: only 8k+1 frames come out as asked.
_COGVIDEOX_TINY = _tiny(IntRange(min=9, max=17, step=8), 9, 8, side=_TINY_DIT_SIDE)
# Learned positional embeddings: CogVideoX-5b-I2V generates only at its sample size.
_COGVIDEOX_I2V_TINY = _tiny(IntRange(min=9, max=17, step=8), 9, 8, side=IntRange(min=32, max=32))
_COGVIDEOX_MEMORY = MemoryOptions(vae_tiling=True, vae_slicing=True)

_SVD_KNOBS = frozenset({Knob.MOTION_BUCKET_ID, Knob.NOISE_AUG_STRENGTH, Knob.DECODE_CHUNK_SIZE})


def _svd_limits(frames: int) -> Limits:
    return Limits(
        num_frames=IntRange(min=2, max=frames),
        default_num_frames=frames,
        default_fps=7,
        height=IntRange(min=256, max=1024, step=64),
        width=IntRange(min=256, max=1024, step=64),
        default_height=576,
        default_width=1024,
        default_num_inference_steps=25,
        guidance_scale=FloatRange(min=1.0, max=10.0),
        default_guidance_scale=3.0,
    )


# Wan 2.x: UMT5 text encoder, flow-matching UniPC, VAE 8x (Wan 2.2 TI2V: 16x) spatial and 4x temporal
# compression, 2x2 patches; frames come as 4k+1. Published defaults (Wan-AI model cards): 480p or 720p
# at 16 fps; the A14B models hand the steps below `boundary_ratio` x 1000 to their low-noise expert.
_WAN_KNOBS = frozenset({Knob.NEGATIVE_PROMPT, Knob.FLOW_SHIFT})
_WAN_EXPERT_KNOBS = _WAN_KNOBS | {Knob.GUIDANCE_SCALE_2, Knob.BOUNDARY_RATIO}
_WAN_CACHE = StepCache(policy=CachePolicy.FIRST_BLOCK, threshold=0.05)
_WAN_14B_MEMORY = MemoryOptions(vae_tiling=True, fp8_weights=True, text_encoder_offload=True)


def _wan_limits(
    height: int,
    width: int,
    frames: int = 81,
    fps: int = 16,
    steps: int = 50,
    guidance: float = 5.0,
    side: int = 16,
) -> Limits:
    return Limits(
        num_frames=IntRange(min=1, max=frames, step=4),
        default_num_frames=frames,
        default_fps=fps,
        height=IntRange(min=256, max=1280, step=side),
        width=IntRange(min=256, max=1280, step=side),
        default_height=height,
        default_width=width,
        default_num_inference_steps=steps,
        default_guidance_scale=guidance,
    )


def _wan_tiny(side: IntRange = _TINY_DIT_SIDE, size: int = 32) -> Limits:
    return _tiny(IntRange(min=1, max=17, step=4), 9, 16, size=size, side=side)


def _wan(
    name: str,
    repo: str,
    task: Task,
    limits: Limits,
    gpu_memory_gb: float,
    description: str,
    experts: int = 1,
    knob_defaults: dict[Knob, float] | None = None,
    memory: MemoryOptions = _WAN_14B_MEMORY,
    tiny_limits: Limits | None = None,
) -> ModelSpec:
    """A Wan 2.x entry: what the family shares, and what each checkpoint sets."""
    return ModelSpec(
        name=name,
        repo_id=repo,
        pipeline_class="WanImageToVideoPipeline" if task is Task.I2V else "WanPipeline",
        image_pipeline_class="WanImageToVideoPipeline" if task is Task.TI2V else None,
        family="wan",
        task=task,
        knobs=_WAN_EXPERT_KNOBS if experts == 2 else _WAN_KNOBS,
        knob_defaults=knob_defaults or {},
        limits=limits,
        tiny_limits=tiny_limits or _wan_tiny(),
        memory=memory,
        denoiser="transformer",
        experts=experts,
        sequence_parallel=True,
        cache_policies=_DIT_CACHE_POLICIES,
        default_cache=_WAN_CACHE,
        gpu_memory_gb=gpu_memory_gb,
        text_encoder_gb=11.4,  # UMT5-XXL in bf16
        description=description,
    )


_WAN_MODELS = [
    _wan(
        "wan2.1-t2v-1.3b",
        "Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
        Task.T2V,
        _wan_limits(480, 832),
        gpu_memory_gb=20.0,
        memory=MemoryOptions(vae_tiling=True),
        description="Wan 2.1 1.3B text-to-video, 832x480, 81 frames at 16 fps; fits consumer GPUs",
    ),
    _wan(
        "wan2.1-t2v-14b",
        "Wan-AI/Wan2.1-T2V-14B-Diffusers",
        Task.T2V,
        _wan_limits(720, 1280),
        gpu_memory_gb=40.0,
        description="Wan 2.1 14B text-to-video, 1280x720, 81 frames at 16 fps; multi-GPU with xDiT",
    ),
    _wan(
        "wan2.1-i2v-14b-720p",
        "Wan-AI/Wan2.1-I2V-14B-720P-Diffusers",
        Task.I2V,
        _wan_limits(720, 1280),
        gpu_memory_gb=42.0,
        description="Wan 2.1 14B image-to-video (CLIP image encoder), 1280x720, 81 frames at 16 fps",
    ),
    _wan(
        "wan2.2-t2v-a14b",
        "Wan-AI/Wan2.2-T2V-A14B-Diffusers",
        Task.T2V,
        _wan_limits(720, 1280, steps=40, guidance=4.0),
        gpu_memory_gb=54.0,
        experts=2,
        knob_defaults={Knob.GUIDANCE_SCALE_2: 3.0},
        description="Wan 2.2 A14B text-to-video: high- and low-noise 14B experts, 1280x720, 81 frames",
    ),
    _wan(
        "wan2.2-i2v-a14b",
        "Wan-AI/Wan2.2-I2V-A14B-Diffusers",
        Task.I2V,
        _wan_limits(720, 1280, steps=40, guidance=3.5),
        gpu_memory_gb=54.0,
        experts=2,
        knob_defaults={Knob.GUIDANCE_SCALE_2: 3.5},
        description="Wan 2.2 A14B image-to-video: high- and low-noise 14B experts, 1280x720, 81 frames",
    ),
    _wan(
        "wan2.2-ti2v-5b",
        "Wan-AI/Wan2.2-TI2V-5B-Diffusers",
        Task.TI2V,
        _wan_limits(704, 1280, frames=121, fps=24, side=32),
        gpu_memory_gb=24.0,
        memory=MemoryOptions(vae_tiling=True, text_encoder_offload=True),
        tiny_limits=_wan_tiny(IntRange(min=32, max=128, step=32)),
        description="Wan 2.2 TI2V 5B: text- or image-to-video in one model, 1280x704, 121 frames at 24 fps",
    ),
]

# LTX-Video: T5, a VAE compressing 32x in space and 8x in time (frames 8k+1, sides multiples of 32), a
# VAE decoder conditioned on a timestep (the noise it is asked to remove while decoding).
_LTX = ModelSpec(
    name="ltx-video",
    repo_id="Lightricks/LTX-Video",
    pipeline_class="LTXPipeline",
    image_pipeline_class="LTXImageToVideoPipeline",
    family="ltx",
    task=Task.TI2V,
    knobs=frozenset({Knob.NEGATIVE_PROMPT, Knob.DECODE_TIMESTEP, Knob.DECODE_NOISE_SCALE}),
    knob_defaults={Knob.DECODE_TIMESTEP: 0.03, Knob.DECODE_NOISE_SCALE: 0.025},
    limits=Limits(
        num_frames=IntRange(min=9, max=257, step=8),
        default_num_frames=121,
        default_fps=24,
        height=IntRange(min=256, max=1280, step=32),
        width=IntRange(min=256, max=1280, step=32),
        default_height=480,
        default_width=704,
        default_num_inference_steps=50,
        default_guidance_scale=3.0,
    ),
    tiny_limits=_tiny(
        IntRange(min=9, max=17, step=8), 9, 24, guidance=3.0, side=IntRange(min=32, max=128, step=32)
    ),
    memory=MemoryOptions(vae_tiling=True),
    denoiser="transformer",
    cache_policies=_DIT_CACHE_POLICIES,
    default_cache=StepCache(policy=CachePolicy.FIRST_BLOCK, threshold=0.05),
    gpu_memory_gb=18.0,
    text_encoder_gb=9.5,  # T5-XXL in bf16
    description="LTX-Video 2B: text- or image-to-video, 704x480, 121 frames at 24 fps, faster than real time",
)

# HunyuanVideo (and its I2V model): frames 4k+1 up to 129 (5.4 s at 24 fps), sides multiples of 16.
_HUNYUAN_LIMITS = Limits(
    num_frames=IntRange(min=1, max=129, step=4),
    default_num_frames=129,
    default_fps=24,
    height=IntRange(min=256, max=1280, step=16),
    width=IntRange(min=256, max=1280, step=16),
    default_height=720,
    default_width=1280,
    default_num_inference_steps=50,
    default_guidance_scale=6.0,
)


def _hunyuan(
    name: str, repo: str, task: Task, pipeline_class: str, text_encoder_gb: float, description: str
) -> ModelSpec:
    """HunyuanVideo 13B: text-to-video (split across GPUs by xDiT) and image-to-video (one process: xDiT's
    HunyuanVideo transformer has no image conditioning)."""
    return ModelSpec(
        name=name,
        repo_id=repo,
        pipeline_class=pipeline_class,
        family="hunyuanvideo",
        task=task,
        knobs=frozenset({Knob.NEGATIVE_PROMPT, Knob.TRUE_CFG_SCALE}),
        limits=_HUNYUAN_LIMITS,
        tiny_limits=_tiny(IntRange(min=1, max=17, step=4), 9, 24, side=_TINY_DIT_SIDE),
        memory=MemoryOptions(vae_tiling=True, fp8_weights=True, text_encoder_offload=True),
        denoiser="transformer",
        cache_policies=_DIT_CACHE_POLICIES,
        default_cache=_HUNYUAN_CACHE,
        sequence_parallel=task is Task.T2V,
        gpu_memory_gb=45.0,
        transformer_blocks_gb=12.6,  # the 60 blocks' ~12.6B parameters in FP8 storage (fp8_weights)
        text_encoder_gb=text_encoder_gb,
        description=description,
    )


# HunyuanVideo 1.5 (8.3B): Qwen2.5-VL-7B + ByT5 text encoders, a 16x VAE (sides multiples of 16), frames
# 4k+1 up to 121 (5 s at 24 fps), 720p checkpoints for t2v and i2v (hunyuanvideo-community's diffusers
# conversions).
_HUNYUAN15_LIMITS = _HUNYUAN_LIMITS.model_copy(
    update={"num_frames": IntRange(min=1, max=121, step=4), "default_num_frames": 121}
)


def _hunyuan15(name: str, repo: str, task: Task, pipeline_class: str, description: str) -> ModelSpec:
    return ModelSpec(
        name=name,
        repo_id=repo,
        pipeline_class=pipeline_class,
        family="hunyuanvideo15",
        task=task,
        knobs=frozenset({Knob.NEGATIVE_PROMPT, Knob.FLOW_SHIFT}),
        limits=_HUNYUAN15_LIMITS,
        tiny_limits=_tiny(
            IntRange(min=1, max=17, step=4), 9, 24, guidance=6.0, side=IntRange(min=16, max=128, step=16)
        ),
        memory=MemoryOptions(vae_tiling=True, fp8_weights=True, text_encoder_offload=True),
        denoiser="transformer",
        cache_policies=_DIT_CACHE_POLICIES,
        default_cache=_HUNYUAN_CACHE,
        sequence_parallel=True,
        gpu_memory_gb=40.0,
        text_encoder_gb=16.0,  # Qwen2.5-VL-7B's language model and ByT5 in bf16
        description=description,
    )


_HUNYUAN15_MODELS = [
    _hunyuan15(
        "hunyuanvideo-1.5",
        "hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-720p_t2v",
        Task.T2V,
        "HunyuanVideo15Pipeline",
        "HunyuanVideo 1.5 (8.3B) text-to-video, 1280x720, 121 frames at 24 fps",
    ),
    _hunyuan15(
        "hunyuanvideo-1.5-i2v",
        "hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-720p_i2v",
        Task.I2V,
        "HunyuanVideo15ImageToVideoPipeline",
        "HunyuanVideo 1.5 (8.3B) image-to-video (SigLIP image encoder), 1280x720, 121 frames at 24 fps",
    ),
]

# Helios (diffusers' HeliosPyramidPipeline): a 14B Wan-based DiT that makes a long clip 33 frames (9 latent
# frames) at a time, each section conditioned on a compressed history of the ones before it (constant
# memory per section), decoded as soon as it is denoised. Three pyramid stages double the latent side
# twice, so sides are multiples of 64. The distilled checkpoint (DMD) takes 2 steps per stage and no
# classifier-free guidance; its first section runs twice the steps (amplified).
HELIOS_SECTION_FRAMES = 33
HELIOS_STAGES = 3


def _helios_limits(
    max_sections: int,
    default_sections: int,
    height: IntRange,
    width: IntRange,
    size: tuple[int, int],
    steps: int = 2,
) -> Limits:
    """Any frame count up to `max_sections` whole sections; steps per pyramid stage; no guidance (DMD)."""
    return Limits(
        num_frames=IntRange(min=1, max=max_sections * HELIOS_SECTION_FRAMES),
        default_num_frames=default_sections * HELIOS_SECTION_FRAMES,
        default_fps=24,
        height=height,
        width=width,
        default_height=size[0],
        default_width=size[1],
        num_inference_steps=IntRange(min=1, max=50),
        default_num_inference_steps=steps,
        guidance_scale=FloatRange(min=0.0, max=1.0),
        default_guidance_scale=1.0,
    )


_HELIOS = ModelSpec(
    name="helios",
    repo_id="BestWishYsh/Helios-Distilled",
    pipeline_class="HeliosPyramidPipeline",
    family="helios",
    task=Task.T2V,
    limits=_helios_limits(
        44, 8, IntRange(min=256, max=768, step=64), IntRange(min=256, max=1280, step=64), (384, 640)
    ),  # 60.5 s at 24 fps
    tiny_limits=_helios_limits(
        8, 4, IntRange(min=64, max=128, step=64), IntRange(min=64, max=128, step=64), (64, 64), steps=1
    ),
    memory=MemoryOptions(text_encoder_offload=True),
    denoiser="transformer",
    section_frames=HELIOS_SECTION_FRAMES,
    gpu_memory_gb=42.0,
    text_encoder_gb=11.4,  # UMT5-XXL in bf16
    description="Helios-Distilled 14B: long text-to-video, 33-frame sections at 24 fps up to a minute, "
    "384x640; each section streams as it is made (num_inference_steps: per pyramid stage)",
)


def _tiny_long_clip_limits(
    max_frames: int,
    default_frames: int,
    fps: int,
    side: int,
    guidance: FloatRange,
    default_guidance: float,
    sides: IntRange = _TINY_DIT_SIDE,
    steps: IntRange = Limits.model_fields["num_inference_steps"].default,
) -> Limits:
    """A tiny long-clip checkpoint's limits: any frame count up to `max_frames`, 2 steps, small squares."""
    return Limits(
        num_frames=IntRange(min=1, max=max_frames),
        default_num_frames=default_frames,
        default_fps=fps,
        height=sides,
        width=sides,
        default_height=side,
        default_width=side,
        num_inference_steps=steps,
        default_num_inference_steps=2,
        guidance_scale=guidance,
        default_guidance_scale=default_guidance,
    )


# FramePack (diffusers' HunyuanVideoFramepackPipeline): HunyuanVideo's 13B DiT retrained to predict a
# section from the start image and a compressed history, so a minute at 30 fps costs the same per section
# as the first. Each section adds 36 frames (the first 37: the start image's frame too), so a clip of n
# frames takes ceil(n / 36) sections. FramePack-F1 ("vanilla" sampling) makes them forward in time;
# the original ("inverted_anti_drifting") makes the last section first and the first last, each from the
# start image and the sections after it, which keeps a long clip from drifting, at the price that no
# frame is final before the last section is made.
FRAMEPACK_SECTION_FRAMES = 36
_FRAMEPACK_LIMITS = Limits(
    num_frames=IntRange(min=1, max=1800),  # 60 s at 30 fps
    default_num_frames=150,
    default_fps=30,
    height=IntRange(min=256, max=1280, step=16),
    width=IntRange(min=256, max=1280, step=16),
    default_height=544,
    default_width=704,
    default_num_inference_steps=25,
    guidance_scale=FloatRange(min=1.0, max=32.0),
    default_guidance_scale=10.0,
)
# Two sections at 32x32 by default: a tenth of the CPU time of four at 64x64, for every test that takes
# the defaults; tests of long clips ask for their sections.
_FRAMEPACK_TINY_LIMITS = _tiny_long_clip_limits(
    5 * FRAMEPACK_SECTION_FRAMES, 2 * FRAMEPACK_SECTION_FRAMES, 30, 32, FloatRange(min=1.0, max=32.0), 10.0
)
_FRAMEPACK_F1 = ModelSpec(
    name="hunyuanvideo-framepack-f1",
    repo_id="lllyasviel/FramePack_F1_I2V_HY_20250503",
    component_repo_ids=("hunyuanvideo-community/HunyuanVideo", "lllyasviel/flux_redux_bfl"),
    pipeline_class="HunyuanVideoFramepackPipeline",
    family="framepack",
    task=Task.I2V,
    limits=_FRAMEPACK_LIMITS,
    tiny_limits=_FRAMEPACK_TINY_LIMITS,
    memory=MemoryOptions(vae_tiling=True, text_encoder_offload=True),
    denoiser="transformer",
    section_frames=FRAMEPACK_SECTION_FRAMES,
    gpu_memory_gb=45.0,
    text_encoder_gb=15.7,  # Llama 3 8B + CLIP-L in bf16, as HunyuanVideo's
    description="FramePack-F1 (HunyuanVideo 13B): image-to-video forward in time, 36-frame sections at "
    "30 fps up to a minute; streamed a section behind the one being made",
)
_FRAMEPACK = _FRAMEPACK_F1.model_copy(
    update={
        "name": "hunyuanvideo-framepack",
        "repo_id": "lllyasviel/FramePackI2V_HY",
        "section_delivery": "at_end",
        # It also keeps the decoded clip on the GPU, blending each section in front of it (a copy): at
        # the defaults (150 frames take 5 sections: 181 frames at 704x544 in bf16) 0.42 GB twice; at
        # 60 s, 4.1 GB twice.
        "gpu_memory_gb": 45.8,
        "description": "FramePack (HunyuanVideo 13B, anti-drifting): image-to-video made backward from the "
        "end, 36-frame sections at 30 fps up to a minute; delivered whole when the last section is made",
    }
)
# SkyReels-V2 diffusion forcing 720P (Wan 2.1 architecture, 14B): the clip is made in windows of
# `SKYREELS_DF_BASE_FRAMES`, each after the first conditioned on the last `SKYREELS_DF_OVERLAP_FRAMES` of the
# one before (its latents: diffusion forcing keeps them clean while the rest is denoised). In latent
# frames (4 pixel frames each, the first 1): windows of 31, overlaps of 5, so every later window adds 26
# latent frames = 104 pixel frames. Synchronous mode (ar_step 0): every window runs the whole schedule.
SKYREELS_DF_BASE_FRAMES = 121
SKYREELS_DF_OVERLAP_FRAMES = 17
SKYREELS_DF_SECTION_FRAMES = ((SKYREELS_DF_BASE_FRAMES - 1) // 4 - (SKYREELS_DF_OVERLAP_FRAMES - 1) // 4) * 4
_SKYREELS_DF_SIDE = IntRange(min=256, max=1280, step=16)
_SKYREELS_DF = ModelSpec(
    name="skyreels-v2-df-720p",
    repo_id="Skywork/SkyReels-V2-DF-14B-720P-Diffusers",
    pipeline_class="SkyReelsV2DiffusionForcingPipeline",
    image_pipeline_class="SkyReelsV2DiffusionForcingImageToVideoPipeline",
    family="skyreels_df",
    task=Task.TI2V,
    knobs=_WAN_KNOBS,
    knob_defaults={Knob.FLOW_SHIFT: 8.0},  # SkyReels' own default for diffusion forcing at 720P
    limits=Limits(
        num_frames=IntRange(min=1, max=1440),  # 60 s at 24 fps: 14 windows
        default_num_frames=SKYREELS_DF_BASE_FRAMES + 2 * SKYREELS_DF_SECTION_FRAMES,  # 13.7 s
        default_fps=24,
        height=_SKYREELS_DF_SIDE,
        width=_SKYREELS_DF_SIDE,
        default_height=720,
        default_width=1280,
        num_inference_steps=IntRange(min=1, max=100),
        default_num_inference_steps=30,
        guidance_scale=FloatRange(min=0.0, max=20.0),
        default_guidance_scale=6.0,
    ),
    tiny_limits=_tiny_long_clip_limits(
        SKYREELS_DF_BASE_FRAMES + 4 * SKYREELS_DF_SECTION_FRAMES,  # 5 windows
        SKYREELS_DF_BASE_FRAMES,
        24,
        32,
        FloatRange(min=0.0, max=20.0),
        6.0,
    ),
    memory=MemoryOptions(fp8_weights=True, text_encoder_offload=True),
    denoiser="transformer",
    section_frames=SKYREELS_DF_SECTION_FRAMES,
    first_section_frames=SKYREELS_DF_BASE_FRAMES,
    gpu_memory_gb=40.0,
    text_encoder_gb=11.4,  # UMT5-XXL in bf16
    description="SkyReels-V2 diffusion forcing 14B 720P: text- or image-to-video, 1280x720 at 24 fps up to a "
    "minute, in 121-frame windows that each add 104 frames; each streams as it is made",
)
# LTX-Video long multi-prompt (LTXI2VLongMultiPromptPipeline, with LTX-Video 0.9.8 13B distilled): one latent
# video denoised in sliding windows of `LTX_LONG_WINDOW_FRAMES` overlapping by `LTX_LONG_OVERLAP_FRAMES`; each
# later window starts from the last one's tail and has its own prompt. In latent frames (8 pixel frames each,
# the first 1): windows of 10 overlapping by 3, so every later window adds 7 = 56 pixel frames. The windows
# are fused in latent space and decoded once at the end by a VAE whose decoder is not causal in time: no
# window's frames are final before the last, so the clip is delivered whole.
LTX_LONG_WINDOW_FRAMES = 80
LTX_LONG_OVERLAP_FRAMES = 24
_LTX_TIME_COMPRESSION = 8
_LTX_LONG_WINDOW_LATENTS = LTX_LONG_WINDOW_FRAMES // _LTX_TIME_COMPRESSION
_LTX_LONG_STEPS = IntRange(min=1, max=50)
LTX_LONG_FIRST_FRAMES = (_LTX_LONG_WINDOW_LATENTS - 1) * _LTX_TIME_COMPRESSION + 1  # 73
LTX_LONG_SECTION_FRAMES = (
    _LTX_LONG_WINDOW_LATENTS - LTX_LONG_OVERLAP_FRAMES // _LTX_TIME_COMPRESSION
) * _LTX_TIME_COMPRESSION  # 56
_LTX_LONG = ModelSpec(
    name="ltx-video-long",
    repo_id="Lightricks/LTX-Video-0.9.8-13B-distilled",
    pipeline_class="LTXI2VLongMultiPromptPipeline",
    image_pipeline_class="LTXI2VLongMultiPromptPipeline",  # the same pipeline, given the first frame
    family="ltx_long",
    task=Task.TI2V,
    knobs=frozenset({Knob.NEGATIVE_PROMPT, Knob.DECODE_TIMESTEP, Knob.DECODE_NOISE_SCALE}),
    knob_defaults={Knob.DECODE_TIMESTEP: 0.05, Knob.DECODE_NOISE_SCALE: 0.025},
    limits=Limits(
        num_frames=IntRange(min=1, max=1441),  # 60 s at 24 fps: 26 windows
        default_num_frames=297,  # 12.4 s: 5 windows
        default_fps=24,
        height=IntRange(min=256, max=1280, step=32),
        width=IntRange(min=256, max=1280, step=32),
        default_height=704,
        default_width=1216,
        num_inference_steps=_LTX_LONG_STEPS,
        default_num_inference_steps=8,  # distilled
        guidance_scale=FloatRange(min=1.0, max=10.0),
        default_guidance_scale=1.0,  # distilled: no classifier-free guidance
    ),
    tiny_limits=_tiny_long_clip_limits(
        LTX_LONG_FIRST_FRAMES + 4 * LTX_LONG_SECTION_FRAMES,  # 5 windows
        LTX_LONG_FIRST_FRAMES,
        24,
        32,
        FloatRange(min=1.0, max=10.0),
        1.0,
        sides=IntRange(min=32, max=128, step=32),
        steps=_LTX_LONG_STEPS,
    ),
    # The prompt is encoded again for every window: one host-to-device copy of T5 (9.5 GB) each.
    memory=MemoryOptions(vae_tiling=True, text_encoder_offload=True),
    denoiser="transformer",
    section_frames=LTX_LONG_SECTION_FRAMES,
    first_section_frames=LTX_LONG_FIRST_FRAMES,
    section_delivery="at_end",
    prompt_per_section=True,
    # 13B DiT (26 GB in bf16) + T5-XXL + a window's activations, and at the end the decoded clip in bf16
    # about three times over while the VAE's time tiles are joined: 297 frames at 1216x704 are 1.5 GB
    # (x3: 4.6 GB); 60 s (1481 frames decoded) 7.6 GB (x3: 23 GB).
    gpu_memory_gb=42.0,
    text_encoder_gb=9.5,  # T5-XXL in bf16
    description="LTX-Video 0.9.8 13B distilled, long multi-prompt: text- or image-to-video, 1216x704 at "
    "24 fps up to a minute, in 80-frame windows that each add 56 frames, one prompt per window ('|' between "
    "them); delivered whole at the end",
)
LONG_CLIP_MODELS = [_HELIOS, _FRAMEPACK_F1, _FRAMEPACK, _SKYREELS_DF, _LTX_LONG]


CATALOG: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        ModelSpec(
            name="cogvideox-2b",
            repo_id="THUDM/CogVideoX-2b",
            pipeline_class="CogVideoXPipeline",
            family="cogvideox",
            task=Task.T2V,
            torch_dtype="float16",
            knobs=frozenset({Knob.NEGATIVE_PROMPT}),
            limits=_COGVIDEOX_LIMITS,
            tiny_limits=_COGVIDEOX_TINY,
            memory=_COGVIDEOX_MEMORY,
            denoiser="transformer",
            cache_policies=_DIT_CACHE_POLICIES,
            default_cache=_COGVIDEOX_CACHE,
            gpu_memory_gb=18.0,
            text_encoder_gb=9.5,
            description="CogVideoX 2B text-to-video, 720x480, 49 frames at 8 fps",
        ),
        ModelSpec(
            name="cogvideox-5b",
            repo_id="THUDM/CogVideoX-5b",
            pipeline_class="CogVideoXPipeline",
            family="cogvideox",
            task=Task.T2V,
            knobs=frozenset({Knob.NEGATIVE_PROMPT}),
            limits=_COGVIDEOX_LIMITS,
            tiny_limits=_COGVIDEOX_TINY,
            memory=_COGVIDEOX_MEMORY,
            denoiser="transformer",
            cache_policies=_DIT_CACHE_POLICIES,
            default_cache=_COGVIDEOX_CACHE,
            gpu_memory_gb=26.0,
            text_encoder_gb=9.5,
            description="CogVideoX 5B text-to-video, 720x480, 49 frames at 8 fps",
        ),
        ModelSpec(
            name="cogvideox-5b-i2v",
            repo_id="THUDM/CogVideoX-5b-I2V",
            pipeline_class="CogVideoXImageToVideoPipeline",
            family="cogvideox",
            task=Task.I2V,
            knobs=frozenset({Knob.NEGATIVE_PROMPT}),
            # Learned positional embeddings: the I2V model only generates at its training size.
            limits=_COGVIDEOX_LIMITS.model_copy(
                update={"height": IntRange(min=480, max=480), "width": IntRange(min=720, max=720)}
            ),
            tiny_limits=_COGVIDEOX_I2V_TINY,
            memory=_COGVIDEOX_MEMORY,
            denoiser="transformer",
            cache_policies=_DIT_CACHE_POLICIES,
            default_cache=_COGVIDEOX_CACHE,
            gpu_memory_gb=26.0,
            text_encoder_gb=9.5,
            description="CogVideoX 5B image-to-video (image + prompt), 720x480, 49 frames at 8 fps",
        ),
        _hunyuan(
            "hunyuanvideo",
            "hunyuanvideo-community/HunyuanVideo",
            Task.T2V,
            "HunyuanVideoPipeline",
            text_encoder_gb=15.3,
            description="HunyuanVideo 13B text-to-video, 1280x720, up to 129 frames; multi-GPU with xDiT",
        ),
        _hunyuan(
            "hunyuanvideo-i2v",
            "hunyuanvideo-community/HunyuanVideo-I2V",
            Task.I2V,
            "HunyuanVideoImageToVideoPipeline",
            text_encoder_gb=16.0,  # Llava-Llama-3-8B (language model and CLIP vision tower) in bf16
            description=(
                "HunyuanVideo-I2V 13B image-to-video (the image's latent replaces the first frame's), "
                "1280x720, up to 129 frames"
            ),
        ),
        ModelSpec(
            name="svd",
            repo_id="stabilityai/stable-video-diffusion-img2vid",
            pipeline_class="StableVideoDiffusionPipeline",
            family="svd",
            task=Task.I2V,
            torch_dtype="float16",
            variant="fp16",
            knobs=_SVD_KNOBS,
            limits=_svd_limits(14),
            tiny_limits=_tiny(IntRange(min=2, max=14), 4, 7, size=64, guidance=3.0),
            memory=MemoryOptions(),
            gpu_memory_gb=14.0,
            description="Stable Video Diffusion image-to-video, 1024x576, 14 frames",
        ),
        ModelSpec(
            name="svd-xt",
            repo_id="stabilityai/stable-video-diffusion-img2vid-xt",
            pipeline_class="StableVideoDiffusionPipeline",
            family="svd",
            task=Task.I2V,
            torch_dtype="float16",
            variant="fp16",
            knobs=_SVD_KNOBS,
            limits=_svd_limits(25),
            tiny_limits=_tiny(IntRange(min=2, max=25), 4, 7, size=64, guidance=3.0),
            memory=MemoryOptions(),
            gpu_memory_gb=18.0,
            description="Stable Video Diffusion XT image-to-video, 1024x576, 25 frames",
        ),
        ModelSpec(
            name="modelscope-t2v",
            repo_id="damo-vilab/text-to-video-ms-1.7b",
            pipeline_class="TextToVideoSDPipeline",
            family="modelscope",
            task=Task.T2V,
            torch_dtype="float16",
            variant="fp16",
            knobs=frozenset({Knob.NEGATIVE_PROMPT}),
            limits=Limits(
                num_frames=IntRange(min=1, max=64),
                default_num_frames=16,
                default_fps=8,
                height=IntRange(min=128, max=512, step=8),
                width=IntRange(min=128, max=512, step=8),
                default_height=256,
                default_width=256,
                default_num_inference_steps=25,
                default_guidance_scale=9.0,
            ),
            tiny_limits=_tiny(IntRange(min=1, max=32), 4, 8),
            memory=MemoryOptions(vae_slicing=True),
            gpu_memory_gb=8.0,
            text_encoder_gb=0.7,
            description="ModelScope text-to-video 1.7B, 256x256, 16 frames",
        ),
        ModelSpec(
            name="i2vgen-xl",
            repo_id="ali-vilab/i2vgen-xl",
            pipeline_class="I2VGenXLPipeline",
            family="i2vgenxl",
            task=Task.I2V,
            torch_dtype="float16",
            variant="fp16",
            knobs=frozenset({Knob.NEGATIVE_PROMPT, Knob.DECODE_CHUNK_SIZE}),
            limits=Limits(
                num_frames=IntRange(min=2, max=32),
                default_num_frames=16,
                default_fps=16,
                height=IntRange(min=256, max=1280, step=64),
                width=IntRange(min=256, max=1280, step=64),
                default_height=704,
                default_width=1280,
                default_num_inference_steps=50,
                default_guidance_scale=9.0,
            ),
            tiny_limits=_tiny(IntRange(min=2, max=16), 4, 16),
            memory=MemoryOptions(vae_slicing=True),
            gpu_memory_gb=20.0,
            text_encoder_gb=0.7,
            description="I2VGen-XL image-to-video with a text prompt, 1280x704, 16 frames",
        ),
        ModelSpec(
            name="animatediff",
            repo_id="stable-diffusion-v1-5/stable-diffusion-v1-5",
            adapter_repo_id="guoyww/animatediff-motion-adapter-v1-5-2",
            pipeline_class="AnimateDiffPipeline",
            family="animatediff",
            task=Task.T2V,
            torch_dtype="float16",
            knobs=frozenset({Knob.NEGATIVE_PROMPT}),
            limits=Limits(
                num_frames=IntRange(min=1, max=32),
                default_num_frames=16,
                default_fps=8,
                height=IntRange(min=256, max=1024, step=8),
                width=IntRange(min=256, max=1024, step=8),
                default_height=512,
                default_width=512,
                default_num_inference_steps=25,
                default_guidance_scale=7.5,
            ),
            tiny_limits=_tiny(IntRange(min=1, max=16), 4, 8),
            memory=MemoryOptions(vae_slicing=True),
            gpu_memory_gb=10.0,
            text_encoder_gb=0.25,
            description="AnimateDiff: a Stable Diffusion 1.5 base (configurable) + motion adapter v1.5.2",
        ),
        *_WAN_MODELS,
        _LTX,
        *_HUNYUAN15_MODELS,
        *LONG_CLIP_MODELS,
    ]
}


def get_spec(name: str) -> ModelSpec:
    """The catalog entry for `name`; KeyError names the known models."""
    try:
        return CATALOG[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(CATALOG))}") from None
