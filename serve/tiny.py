"""Tiny random-weight checkpoints for every catalog model, built offline.

Each builder makes a very small, seeded instance of the model's real diffusers pipeline class with the
component classes (and scheduler configuration) of the published checkpoint, so the real loading path
`<PipelineClass>.from_pretrained(dir)` and the real `__call__` run on a CPU in about a second. Nothing is
downloaded: tokenizers are built in memory from tiny byte-level vocabularies.

Calling pitfalls of these pipelines under transformers 5 (the same apply to the real checkpoints):
- transformers 5 flattened `CLIPTextModel` (no `.text_model`), so `clip_skip` fails with an AttributeError.
  `I2VGenXLPipeline` defaults to `clip_skip=1`: call it with `clip_skip=None`. AnimateDiff and
  TextToVideoSD only fail when a `clip_skip` is passed.
- Stable Video Diffusion and I2VGen-XL resize the image to 224x224 for their image encoder, so the tiny
  vision encoders keep `image_size=224`.
- CogVideoX-5b-I2V uses learned positional embeddings, so it only generates at its sample size
  (480x720 for the real model, the tiny default for the tiny one).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderKLCogVideoX,
    AutoencoderKLHunyuanVideo,
    AutoencoderKLHunyuanVideo15,
    AutoencoderKLLTXVideo,
    AutoencoderKLTemporalDecoder,
    AutoencoderKLWan,
    CogVideoXDDIMScheduler,
    CogVideoXImageToVideoPipeline,
    CogVideoXPipeline,
    CogVideoXTransformer3DModel,
    DDIMScheduler,
    DiffusionPipeline,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    HeliosDMDScheduler,
    HeliosPyramidPipeline,
    HeliosTransformer3DModel,
    HunyuanVideo15ImageToVideoPipeline,
    HunyuanVideo15Pipeline,
    HunyuanVideo15Transformer3DModel,
    HunyuanVideoFramepackPipeline,
    HunyuanVideoFramepackTransformer3DModel,
    HunyuanVideoImageToVideoPipeline,
    HunyuanVideoPipeline,
    HunyuanVideoTransformer3DModel,
    I2VGenXLPipeline,
    I2VGenXLUNet,
    LTXEulerAncestralRFScheduler,
    LTXI2VLongMultiPromptPipeline,
    LTXPipeline,
    LTXVideoTransformer3DModel,
    MotionAdapter,
    PNDMScheduler,
    SkyReelsV2DiffusionForcingPipeline,
    SkyReelsV2Transformer3DModel,
    StableDiffusionPipeline,
    StableVideoDiffusionPipeline,
    TextToVideoSDPipeline,
    UNet2DConditionModel,
    UNet3DConditionModel,
    UNetSpatioTemporalConditionModel,
    UniPCMultistepScheduler,
    WanImageToVideoPipeline,
    WanPipeline,
    WanTransformer3DModel,
)
from diffusers.guiders import ClassifierFreeGuidance
from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video_image2video import DEFAULT_PROMPT_TEMPLATE
from transformers import (
    AddedToken,
    ByT5Tokenizer,
    CLIPImageProcessorPil,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTokenizer,
    CLIPVisionConfig,
    CLIPVisionModel,
    CLIPVisionModelWithProjection,
    LlamaConfig,
    LlamaModel,
    LlamaTokenizerFast,
    LlavaConfig,
    LlavaForConditionalGeneration,
    Qwen2_5_VLTextConfig,
    Qwen2_5_VLTextModel,
    Qwen2Tokenizer,
    SiglipImageProcessorPil,
    SiglipVisionConfig,
    SiglipVisionModel,
    T5Config,
    T5EncoderModel,
    T5TokenizerFast,
    UMT5Config,
    UMT5EncoderModel,
)

from serve.catalog import CATALOG, Task, get_spec
from serve.tiny_store import TINY_SEED

TinyPipeline = DiffusionPipeline | tuple[StableDiffusionPipeline, MotionAdapter]

_LATENT_SCALE = 8  # every tiny VAE keeps the real 8x spatial compression
_TEXT_DIM = 32  # hidden size of the tiny text encoders (the transformers' text_embed_dim)
_VISION_SIZE = 224  # SVD and I2VGen-XL resize images to this before their image encoder


# Tokenizers: tiny byte-level vocabularies, so every prompt tokenizes without unknown tokens.


def _byte_chars() -> list[str]:
    """GPT-2/CLIP's reversible map of the 256 byte values to printable characters."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    extra = (b for b in range(256) if b not in printable)
    mapping = {b: chr(b) for b in printable} | {b: chr(256 + i) for i, b in enumerate(extra)}
    return [mapping[b] for b in range(256)]


def _clip_tokenizer() -> CLIPTokenizer:
    """CLIP BPE tokenizer over single bytes, laid out like the real vocabulary (specials last)."""
    chars = _byte_chars()
    tokens = [*chars, *(c + "</w>" for c in chars), "<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=[], model_max_length=77)


def _t5_tokenizer() -> T5TokenizerFast:
    """T5 unigram tokenizer over printable ASCII (other characters map to <unk>)."""
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(chr(c), -3.0) for c in range(ord("!"), ord("~") + 1)]
    return T5TokenizerFast(vocab=pieces, extra_ids=0, model_max_length=512)


def _llama_tokenizer() -> LlamaTokenizerFast:
    """Llama BPE tokenizer whose vocabulary is the byte-fallback tokens (plus a pad token)."""
    tokens = ["<unk>", "<s>", "</s>", "<pad>", "▁", *(f"<0x{b:02X}>" for b in range(256))]
    return LlamaTokenizerFast(vocab={t: i for i, t in enumerate(tokens)}, merges=[], pad_token="<pad>")


def _llava_tokenizer() -> LlamaTokenizerFast:
    """The byte-fallback Llama tokenizer plus Llava-Llama-3's chat markers and image token, with the fixed
    words of HunyuanVideo-I2V's prompt template as single tokens: the template then puts its image token
    at the published position (5, after the BOS) and leaves the prompt its published room."""
    tokens = ["<unk>", "<s>", "</s>", "<pad>", "▁", *(f"<0x{b:02X}>" for b in range(256))]
    tokenizer = LlamaTokenizerFast(
        vocab={t: i for i, t in enumerate(tokens)}, merges=[], pad_token="<pad>", add_bos_token=True
    )
    markers = ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<image>"]
    tokenizer.add_special_tokens({"additional_special_tokens": markers})
    template = DEFAULT_PROMPT_TEMPLATE["template"]
    instruction = template.split("<image>")[1].split("<|eot_id|>")[0]
    words = ["system", "user", "assistant", "\n\n", instruction]
    tokenizer.add_tokens([AddedToken(word, normalized=False) for word in words])
    return tokenizer


def _qwen2_tokenizer() -> Qwen2Tokenizer:
    """Qwen2 BPE tokenizer over single bytes with the chat markers, and a chat template of Qwen's form
    (HunyuanVideo 1.5 encodes a system message and the prompt as a chat)."""
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tokenizer = Qwen2Tokenizer(
        vocab={t: i for i, t in enumerate([*_byte_chars(), *specials])},
        merges=[],
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )
    tokenizer.chat_template = (
        "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    return tokenizer


# Encoders.


def _clip_text_encoder(tokenizer: CLIPTokenizer) -> CLIPTextModel:
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=_TEXT_DIM,
        intermediate_size=64,
        projection_dim=_TEXT_DIM,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(config)


def _t5_text_encoder(tokenizer: T5TokenizerFast, umt5: bool = False) -> T5EncoderModel | UMT5EncoderModel:
    """A tiny T5 encoder; `umt5`: UMT5 (Wan's), whose layers each have their own relative positions."""
    config_cls, model_cls = (UMT5Config, UMT5EncoderModel) if umt5 else (T5Config, T5EncoderModel)
    config = config_cls(
        vocab_size=len(tokenizer),
        d_model=_TEXT_DIM,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        feed_forward_proj="gated-gelu",
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return model_cls(config)


def _llama_config(tokenizer: LlamaTokenizerFast, max_positions: int) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=_TEXT_DIM,
        intermediate_size=64,
        num_hidden_layers=3,  # HunyuanVideo reads the hidden state 2 layers before the last
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _llama_text_encoder(tokenizer: LlamaTokenizerFast) -> LlamaModel:
    return LlamaModel(_llama_config(tokenizer, max_positions=512))


def _llava_text_encoder(tokenizer: LlamaTokenizerFast) -> LlavaForConditionalGeneration:
    """Llava as HunyuanVideo-I2V's: a Llama that reads CLIP vision tokens in place of its <image> token,
    576 of them (the published 336 px at patch 14: 24 x 24), here from 48 px at patch 2."""
    text = _llama_config(tokenizer, max_positions=1024)  # the prompt's 359 tokens, the image's 576
    vision = CLIPVisionConfig(
        hidden_size=_TEXT_DIM,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=48,
        patch_size=2,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_seq_length=576,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",  # without CLIP's class token
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlavaForConditionalGeneration(config)


def _qwen_text_encoder(tokenizer: Qwen2Tokenizer) -> Qwen2_5_VLTextModel:
    config = Qwen2_5_VLTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=_TEXT_DIM,
        intermediate_size=64,
        num_hidden_layers=3,  # HunyuanVideo 1.5 reads the hidden state 2 layers before the last
        num_attention_heads=2,
        num_key_value_heads=2,
        rope_scaling={"mrope_section": [2, 2, 4], "rope_type": "default", "type": "default"},
        rope_theta=1e6,
        max_position_embeddings=2048,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    return Qwen2_5_VLTextModel(config)


def _clip_vision_config() -> CLIPVisionConfig:
    return CLIPVisionConfig(
        hidden_size=_TEXT_DIM,
        intermediate_size=64,
        projection_dim=_TEXT_DIM,  # the UNets' cross_attention_dim
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=_VISION_SIZE,
        patch_size=32,
    )


def _clip_vision_encoder() -> CLIPVisionModelWithProjection:
    return CLIPVisionModelWithProjection(_clip_vision_config())


def _sd_vae(sample_size: int) -> AutoencoderKL:
    """Stable Diffusion-style image VAE: 4 latent channels, 8x spatial compression."""
    return AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=sample_size,
    )


# Schedulers, configured like the published checkpoints.


def _sd_scheduler_config() -> dict[str, object]:
    return {
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "steps_offset": 1,
        "set_alpha_to_one": False,
    }


def _cogvideox_scheduler(snr_shift_scale: float) -> CogVideoXDDIMScheduler:
    return CogVideoXDDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=True,
        steps_offset=0,
        prediction_type="v_prediction",
        timestep_spacing="trailing",
        rescale_betas_zero_snr=True,
        snr_shift_scale=snr_shift_scale,
    )


# One builder per family.


def _size(model: str) -> tuple[int, int, int]:
    """The tiny default (height, width, num_frames) of a catalog model."""
    limits = get_spec(model).tiny_limits
    return limits.default_height, limits.default_width, limits.default_num_frames


def _sample_size(model: str) -> int:
    """The VAE/UNet `sample_size` (pixels; it only steers tiling): the longer default side."""
    height, width, _ = _size(model)
    return max(height, width)


def _cogvideox(model: str) -> CogVideoXPipeline | CogVideoXImageToVideoPipeline:
    """CogVideoX: 2b uses sin-cos positions, 5b rotary ones, 5b-I2V rotary + learned (fixed size)."""
    height, width, frames = _size(model)
    image_to_video = get_spec(model).task is Task.I2V
    is_2b = model == "cogvideox-2b"
    tokenizer = _t5_tokenizer()
    text_encoder = _t5_text_encoder(tokenizer)
    vae = AutoencoderKLCogVideoX(
        block_out_channels=(8, 8, 8, 8),
        latent_channels=16,
        layers_per_block=1,
        norm_num_groups=4,
        temporal_compression_ratio=4,
        sample_height=height,
        sample_width=width,
        scaling_factor=1.15258426 if is_2b else 0.7,
    )
    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=2,
        attention_head_dim=16,  # rotary embeddings split it 4/6/6 over frames/height/width
        in_channels=32 if image_to_video else 16,
        out_channels=16,
        time_embed_dim=16,
        text_embed_dim=_TEXT_DIM,
        num_layers=2,  # First-Block Cache needs a first block and at least one more
        sample_width=width // _LATENT_SCALE,
        sample_height=height // _LATENT_SCALE,
        sample_frames=frames,
        patch_size=2,
        temporal_compression_ratio=4,
        max_text_seq_length=226,
        use_rotary_positional_embeddings=not is_2b,
        use_learned_positional_embeddings=image_to_video,
    )
    scheduler = _cogvideox_scheduler(snr_shift_scale=3.0 if is_2b else 1.0)
    cls = CogVideoXImageToVideoPipeline if image_to_video else CogVideoXPipeline
    return cls(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer, scheduler=scheduler
    )


def _hunyuan_vae() -> AutoencoderKLHunyuanVideo:
    """HunyuanVideo's causal 3D VAE (8x in space, 4x in time), tiny."""
    return AutoencoderKLHunyuanVideo(
        latent_channels=16,
        block_out_channels=(8, 8, 8, 8),
        layers_per_block=1,
        norm_num_groups=4,
        spatial_compression_ratio=8,
        temporal_compression_ratio=4,
    )


# What HunyuanVideo's tiny transformer and FramePack's (the same DiT, retrained) share.
_HUNYUAN_TRANSFORMER: dict[str, object] = {
    "in_channels": 16,
    "out_channels": 16,
    "num_attention_heads": 2,
    "attention_head_dim": 16,
    "num_layers": 1,
    "num_single_layers": 1,
    "num_refiner_layers": 1,
    "patch_size": 2,
    "patch_size_t": 1,
    "guidance_embeds": True,
    "text_embed_dim": _TEXT_DIM,
    "pooled_projection_dim": _TEXT_DIM,  # CLIP's pooled output, not its projection
    "rope_axes_dim": (4, 6, 6),
}


def _hunyuanvideo(model: str) -> HunyuanVideoPipeline | HunyuanVideoImageToVideoPipeline:
    """HunyuanVideo: Llama + CLIP text encoders, flow-matching Euler with shift 7. Image-to-video reads the
    image with the prompt through Llava, and the image's latent replaces the first frame's tokens (the
    published I2V checkpoint's "token_replace" conditioning)."""
    image_to_video = get_spec(model).task is Task.I2V
    tokenizer = _llava_tokenizer() if image_to_video else _llama_tokenizer()
    text_encoder = _llava_text_encoder(tokenizer) if image_to_video else _llama_text_encoder(tokenizer)
    tokenizer_2 = _clip_tokenizer()
    text_encoder_2 = _clip_text_encoder(tokenizer_2)
    vae = _hunyuan_vae()
    transformer = HunyuanVideoTransformer3DModel(
        **_HUNYUAN_TRANSFORMER,
        image_condition_type="token_replace" if image_to_video else None,
    )
    components = {
        "tokenizer": tokenizer,
        "text_encoder": text_encoder,
        "tokenizer_2": tokenizer_2,
        "text_encoder_2": text_encoder_2,
        "vae": vae,
        "transformer": transformer,
        "scheduler": FlowMatchEulerDiscreteScheduler(shift=7.0),
    }
    if not image_to_video:
        return HunyuanVideoPipeline(**components)
    processor = CLIPImageProcessorPil(size={"shortest_edge": 48}, crop_size={"height": 48, "width": 48})
    return HunyuanVideoImageToVideoPipeline(**components, image_processor=processor)


def _wan(model: str) -> WanPipeline | WanImageToVideoPipeline:
    """Wan 2.x: UMT5 + flow-matching UniPC; 2.1 I2V adds a CLIP image encoder, 2.2 A14B a second
    (low-noise) expert, 2.2 TI2V the 16x VAE with per-token timesteps."""
    spec = get_spec(model)
    wan22_5b = spec.image_pipeline_class is not None  # TI2V: the Wan 2.2 VAE, 48 latent channels
    clip_image = spec.task is Task.I2V and spec.experts == 1  # Wan 2.1 I2V
    tokenizer = _t5_tokenizer()
    if wan22_5b:
        latent_channels = 48
        vae = AutoencoderKLWan(
            base_dim=8,
            z_dim=latent_channels,
            in_channels=12,
            out_channels=12,
            is_residual=True,
            patch_size=2,
            latents_mean=[0.0] * latent_channels,
            latents_std=[1.0] * latent_channels,
            dim_mult=[1, 1, 1, 1],
            num_res_blocks=1,
            scale_factor_spatial=16,
            scale_factor_temporal=4,
            temperal_downsample=[False, True, True],
        )
    else:
        latent_channels = 16
        vae = _wan21_vae()
    # I2V (not TI2V): the image's latents and a mask of the frames it fixes join the noise channels.
    image_channels = latent_channels + 4 if spec.task is Task.I2V else 0

    def transformer() -> WanTransformer3DModel:
        return WanTransformer3DModel(
            patch_size=(1, 2, 2),
            num_attention_heads=2,
            attention_head_dim=16,
            in_channels=latent_channels + image_channels,
            out_channels=latent_channels,
            text_dim=_TEXT_DIM,
            freq_dim=32,
            ffn_dim=32,
            num_layers=2,  # First-Block Cache needs a first block and at least one more
            cross_attn_norm=True,
            qk_norm="rms_norm_across_heads",
            rope_max_seq_len=32,
            image_dim=_TEXT_DIM if clip_image else None,
        )

    components: dict[str, object] = {
        "tokenizer": tokenizer,
        "text_encoder": _t5_text_encoder(tokenizer, umt5=True),
        "vae": vae,
        "scheduler": UniPCMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000, flow_shift=3.0
        ),
        "transformer": transformer(),
        "transformer_2": transformer() if spec.experts == 2 else None,
        # The published boundaries: 0.875 (T2V A14B) and 0.9 (I2V A14B) of the training timesteps.
        "boundary_ratio": (0.9 if spec.task is Task.I2V else 0.875) if spec.experts == 2 else None,
        "expand_timesteps": wan22_5b,
    }
    if spec.task is Task.I2V:
        # Wan 2.1 I2V reads the penultimate hidden states of a plain CLIPVisionModel (no projection).
        components["image_encoder"] = CLIPVisionModel(_clip_vision_config()) if clip_image else None
        components["image_processor"] = CLIPImageProcessorPil() if clip_image else None
        return WanImageToVideoPipeline(**components)
    return WanPipeline(**components)


def _ltx(model: str) -> LTXPipeline | LTXI2VLongMultiPromptPipeline:
    """LTX-Video: T5; a VAE of 32x spatial (8x from its blocks, 4x from its patches) and 8x temporal
    compression whose decoder is timestep-conditioned, as in LTX-Video 0.9.1 and later. The long
    multi-prompt pipeline takes the same components, with the rectified-flow ancestral scheduler it is
    run with."""
    tokenizer = _t5_tokenizer()
    vae = AutoencoderKLLTXVideo(
        latent_channels=8,
        block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, True, False),
        decoder_spatio_temporal_scaling=(True, True, True, False),
        decoder_inject_noise=(False, False, False, False, False),
        upsample_residual=(False, False, False, False),
        upsample_factor=(1, 1, 1, 1),
        timestep_conditioning=True,
        patch_size=4,
        patch_size_t=1,
        encoder_causal=True,
        decoder_causal=False,
    )
    transformer = LTXVideoTransformer3DModel(
        in_channels=8,
        out_channels=8,
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=2,
        attention_head_dim=16,
        cross_attention_dim=_TEXT_DIM,
        num_layers=2,  # First-Block Cache needs a first block and at least one more
        caption_channels=_TEXT_DIM,
    )
    components = {
        "tokenizer": tokenizer,
        "text_encoder": _t5_text_encoder(tokenizer),
        "vae": vae,
        "transformer": transformer,
    }
    if get_spec(model).pipeline_class == "LTXI2VLongMultiPromptPipeline":
        return LTXI2VLongMultiPromptPipeline(**components, scheduler=LTXEulerAncestralRFScheduler())
    return LTXPipeline(**components, scheduler=FlowMatchEulerDiscreteScheduler())


def _hunyuanvideo15(model: str) -> HunyuanVideo15Pipeline | HunyuanVideo15ImageToVideoPipeline:
    """HunyuanVideo 1.5: Qwen2.5-VL (a chat-formatted prompt) + ByT5 (quoted text to draw), a guider
    object, a VAE of 16x spatial and 4x temporal compression; I2V adds a SigLIP image encoder."""
    image_to_video = get_spec(model).task is Task.I2V
    latent_channels = 8
    tokenizer = _qwen2_tokenizer()
    tokenizer_2 = ByT5Tokenizer()
    transformer = HunyuanVideo15Transformer3DModel(
        in_channels=2 * latent_channels + 1,  # noise, the conditioning latents and their mask
        out_channels=latent_channels,
        num_attention_heads=2,
        attention_head_dim=16,
        num_layers=2,  # First-Block Cache needs a first block and at least one more
        num_refiner_layers=1,
        mlp_ratio=2.0,
        patch_size=1,
        patch_size_t=1,
        text_embed_dim=_TEXT_DIM,
        text_embed_2_dim=_TEXT_DIM,
        image_embed_dim=_TEXT_DIM,
        rope_axes_dim=(4, 6, 6),
        target_size=32,
        task_type="i2v" if image_to_video else "t2v",
    )
    vae = AutoencoderKLHunyuanVideo15(
        latent_channels=latent_channels,
        block_out_channels=(16,) * 5,  # the encoder's last block averages groups of 16 / (2 x 8) channels
        layers_per_block=1,
        spatial_compression_ratio=16,
        temporal_compression_ratio=4,
        downsample_match_channel=False,
        upsample_match_channel=False,
    )
    components: dict[str, object] = {
        "tokenizer": tokenizer,
        "text_encoder": _qwen_text_encoder(tokenizer),
        "tokenizer_2": tokenizer_2,
        "text_encoder_2": _t5_text_encoder(tokenizer_2),
        "transformer": transformer,
        "vae": vae,
        "scheduler": FlowMatchEulerDiscreteScheduler(shift=7.0),
        "guider": ClassifierFreeGuidance(guidance_scale=6.0),
    }
    if not image_to_video:
        return HunyuanVideo15Pipeline(**components)
    # The pipeline takes 729 vision tokens (SigLIP at 384 px, patch 14: 27 x 27): 54 px, patch 2 here.
    vision = SiglipVisionConfig(
        hidden_size=_TEXT_DIM,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=54,
        patch_size=2,
    )
    return HunyuanVideo15ImageToVideoPipeline(
        **components,
        image_encoder=SiglipVisionModel(vision),
        feature_extractor=SiglipImageProcessorPil(size={"height": 54, "width": 54}),
    )


def _framepack(model: str) -> HunyuanVideoFramepackPipeline:
    """FramePack-F1: HunyuanVideo's encoders and VAE, a history-conditioned DiT with a SigLIP image
    projection and clean-latent embedders."""
    tokenizer, tokenizer_2 = _llama_tokenizer(), _clip_tokenizer()
    vae = _hunyuan_vae()
    transformer = HunyuanVideoFramepackTransformer3DModel(
        **_HUNYUAN_TRANSFORMER,
        has_image_proj=True,
        image_proj_dim=_TEXT_DIM,  # the SigLIP encoder's hidden size
        has_clean_x_embedder=True,
    )
    vision = SiglipVisionConfig(
        hidden_size=_TEXT_DIM, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        image_size=32, patch_size=4,
    )  # fmt: skip
    return HunyuanVideoFramepackPipeline(
        text_encoder=_llama_text_encoder(tokenizer),
        tokenizer=tokenizer,
        transformer=transformer,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
        text_encoder_2=_clip_text_encoder(tokenizer_2),
        tokenizer_2=tokenizer_2,
        image_encoder=SiglipVisionModel(vision),
        feature_extractor=SiglipImageProcessorPil(size={"height": 32, "width": 32}),
    )


def _wan21_vae() -> AutoencoderKLWan:
    """Wan 2.1's VAE (8x space, 4x time, causal in time), tiny: Wan 2.1, Helios and SkyReels-V2 use it."""
    return AutoencoderKLWan(
        base_dim=8, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
    )


# The DiT shape the Wan-derived long-clip models share (Helios, SkyReels-V2): 2 blocks of 2 heads x 16.
_WAN_SHAPED_DIT = {
    "patch_size": (1, 2, 2),
    "num_attention_heads": 2,
    "attention_head_dim": 16,
    "in_channels": 16,
    "out_channels": 16,
    "text_dim": _TEXT_DIM,
    "freq_dim": 32,
    "ffn_dim": 32,
    "num_layers": 2,
}


def _helios(model: str) -> HeliosPyramidPipeline:
    """Helios distilled: Wan's VAE and UMT5, a history-conditioned DiT, the DMD pyramid scheduler."""
    tokenizer = _t5_tokenizer()
    vae = _wan21_vae()
    transformer = HeliosTransformer3DModel(
        **_WAN_SHAPED_DIT,
        rope_dim=(8, 4, 4),
        is_amplify_history=True,
    )
    # gamma < 1/3: the pyramid's block noise needs a positive-definite covariance over each 2x2 patch,
    # (1 + gamma) I - gamma J, whose least eigenvalue is 1 - 3 gamma.
    scheduler = HeliosDMDScheduler(shift=1.0, stages=3, gamma=0.3)
    return HeliosPyramidPipeline(
        tokenizer=tokenizer,
        text_encoder=_t5_text_encoder(tokenizer, umt5=True),
        vae=vae,
        scheduler=scheduler,
        transformer=transformer,
        is_distilled=True,
    )


def _skyreels_df(model: str) -> SkyReelsV2DiffusionForcingPipeline:
    """SkyReels-V2 diffusion forcing: Wan 2.1's VAE and UMT5, a Wan-shaped DiT with per-frame timesteps and an
    fps embedding, flow-matching UniPC. One set of components serves t2v and (from_pipe) i2v."""
    tokenizer = _t5_tokenizer()
    vae = _wan21_vae()
    transformer = SkyReelsV2Transformer3DModel(
        **_WAN_SHAPED_DIT,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=64,  # a window's 31 latent frames
        inject_sample_info=True,  # the fps embedding the published checkpoints have
    )
    return SkyReelsV2DiffusionForcingPipeline(
        tokenizer=tokenizer,
        text_encoder=_t5_text_encoder(tokenizer, umt5=True),
        vae=vae,
        scheduler=UniPCMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000, flow_shift=8.0
        ),
        transformer=transformer,
    )


def _svd(model: str) -> StableVideoDiffusionPipeline:
    """Stable Video Diffusion (and XT): image-conditioned spatio-temporal UNet, temporal VAE decoder."""
    max_frames = get_spec(model).limits.num_frames.max  # the UNet's default num_frames: 14 or 25
    vae = AutoencoderKLTemporalDecoder(
        down_block_types=("DownEncoderBlock2D",) * 4,
        block_out_channels=(32, 32, 32, 32),  # its norms use 32 groups
        layers_per_block=1,
        latent_channels=4,
        sample_size=_sample_size(model),
    )
    unet = UNetSpatioTemporalConditionModel(
        sample_size=_sample_size(model) // _LATENT_SCALE,
        in_channels=8,
        out_channels=4,
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
        block_out_channels=(32, 32),  # its norms use 32 groups
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=24,  # fps, motion bucket and noise augmentation
        layers_per_block=1,
        cross_attention_dim=_TEXT_DIM,
        num_attention_heads=(2, 2),
        num_frames=max_frames,
    )
    image_encoder = _clip_vision_encoder()
    scheduler = EulerDiscreteScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="v_prediction",
        interpolation_type="linear",
        use_karras_sigmas=True,
        sigma_min=0.002,
        sigma_max=700.0,
        timestep_spacing="leading",
        timestep_type="continuous",
        steps_offset=1,
    )
    return StableVideoDiffusionPipeline(
        vae=vae,
        image_encoder=image_encoder,
        unet=unet,
        scheduler=scheduler,
        feature_extractor=CLIPImageProcessorPil(),
    )


def _unet3d_kwargs(sample_size: int) -> dict[str, object]:
    """Shared by ModelScope's UNet3DConditionModel and I2VGen-XL's I2VGenXLUNet."""
    return {
        "sample_size": sample_size,
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": ("CrossAttnDownBlock3D", "DownBlock3D"),
        "up_block_types": ("UpBlock3D", "CrossAttnUpBlock3D"),
        "block_out_channels": (16, 32),
        "layers_per_block": 1,
        "norm_num_groups": 4,
        "cross_attention_dim": _TEXT_DIM,
        "attention_head_dim": 8,
    }


def _modelscope(model: str) -> TextToVideoSDPipeline:
    """ModelScope text-to-video: CLIP text encoder, 3D UNet, image VAE decoding frame by frame."""
    tokenizer = _clip_tokenizer()
    return TextToVideoSDPipeline(
        vae=_sd_vae(_sample_size(model)),
        text_encoder=_clip_text_encoder(tokenizer),
        tokenizer=tokenizer,
        unet=UNet3DConditionModel(**_unet3d_kwargs(_sample_size(model) // _LATENT_SCALE)),
        scheduler=DDIMScheduler(**_sd_scheduler_config(), clip_sample=False),
    )


def _i2vgenxl(model: str) -> I2VGenXLPipeline:
    """I2VGen-XL: image + prompt; v-prediction DDIM with zero terminal SNR."""
    tokenizer = _clip_tokenizer()
    scheduler = DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.0001,
        beta_end=0.02,
        beta_schedule="squaredcos_cap_v2",
        clip_sample=False,
        set_alpha_to_one=True,
        steps_offset=1,
        prediction_type="v_prediction",
        rescale_betas_zero_snr=True,
        timestep_spacing="leading",
    )
    return I2VGenXLPipeline(
        vae=_sd_vae(_sample_size(model)),
        text_encoder=_clip_text_encoder(tokenizer),
        tokenizer=tokenizer,
        image_encoder=_clip_vision_encoder(),
        feature_extractor=CLIPImageProcessorPil(),
        unet=I2VGenXLUNet(**_unet3d_kwargs(_sample_size(model) // _LATENT_SCALE)),
        scheduler=scheduler,
    )


def _animatediff(model: str) -> tuple[StableDiffusionPipeline, MotionAdapter]:
    """AnimateDiff: a Stable Diffusion 1.5-style base pipeline and a matching motion adapter."""
    block_out_channels = (16, 32)
    tokenizer = _clip_tokenizer()
    unet = UNet2DConditionModel(
        sample_size=_sample_size(model) // _LATENT_SCALE,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=block_out_channels,
        layers_per_block=2,
        norm_num_groups=4,
        cross_attention_dim=_TEXT_DIM,
        attention_head_dim=8,
    )
    base = StableDiffusionPipeline(
        vae=_sd_vae(_sample_size(model)),
        text_encoder=_clip_text_encoder(tokenizer),
        tokenizer=tokenizer,
        unet=unet,
        scheduler=PNDMScheduler(**_sd_scheduler_config(), skip_prk_steps=True),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    adapter = MotionAdapter(
        block_out_channels=block_out_channels,
        motion_layers_per_block=2,
        motion_mid_block_layers_per_block=1,
        motion_num_attention_heads=2,
        motion_norm_num_groups=4,
        motion_max_seq_length=32,
        use_motion_mid_block=True,
    )
    return base, adapter


def _eval(*parts: DiffusionPipeline | torch.nn.Module) -> None:
    """Put every model in eval mode, as from_pretrained leaves loaded ones (T5 has dropout)."""
    for part in parts:
        modules = part.components.values() if isinstance(part, DiffusionPipeline) else [part]
        for module in modules:
            if isinstance(module, torch.nn.Module):
                module.eval()


_BUILDERS: dict[str, Callable[[str], TinyPipeline]] = {
    "cogvideox": _cogvideox,
    "hunyuanvideo": _hunyuanvideo,
    "svd": _svd,
    "modelscope": _modelscope,
    "i2vgenxl": _i2vgenxl,
    "animatediff": _animatediff,
    "wan": _wan,
    "ltx": _ltx,
    "ltx_long": _ltx,
    "hunyuanvideo15": _hunyuanvideo15,
    "helios": _helios,
    "framepack": _framepack,
    "skyreels_df": _skyreels_df,
}


def build_tiny_pipeline(model: str, seed: int = TINY_SEED) -> TinyPipeline:
    """A tiny random-weight pipeline for a catalog model, in memory.

    AnimateDiff gives `(base StableDiffusionPipeline, MotionAdapter)`, as its real weights come in two repos.
    """
    spec = get_spec(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        built = _BUILDERS[spec.family](model)
    _eval(*(built if isinstance(built, tuple) else (built,)))
    return built


def write_tiny_checkpoint(model: str, out_dir: Path, seed: int = TINY_SEED) -> Path:
    """Save a tiny checkpoint under `out_dir/<model>` and return that directory.

    AnimateDiff writes `base/` (a Stable Diffusion pipeline) and `motion_adapter/` inside it.
    """
    target = Path(out_dir) / model
    built = build_tiny_pipeline(model, seed)
    if isinstance(built, tuple):
        base, adapter = built
        base.save_pretrained(target / "base")
        adapter.save_pretrained(target / "motion_adapter")
    else:
        built.save_pretrained(target)
    return target


def write_tiny_checkpoints(
    out_dir: Path, models: Iterable[str] | None = None, seed: int = TINY_SEED
) -> dict[str, Path]:
    """Save tiny checkpoints for `models` (default: the whole catalog); model name -> checkpoint dir."""
    names = CATALOG if models is None else models
    return {model: write_tiny_checkpoint(model, out_dir, seed) for model in names}
