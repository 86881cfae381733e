"""Parallel degrees of a multi-GPU replica and their validation against the model.

xDiT's HunyuanVideo wrapper splits attention heads over the Ulysses ranks, the video tokens over all
sequence-parallel ranks (`ulysses x ring`) and, with `cfg_degree=2`, the two true-CFG branches over two
rank groups; `pipeline_degree` cuts the blocks into stages (parallel/pipeline.py). The errors below name the
field at fault and list the combinations that would work.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from parallel.vae import min_latent_rows
from serve.catalog import CachePolicy
from serve.config import ParallelOptions
from serve.errors import InvalidArgument
from serve.request import GenerationRequest


class ParallelConfigError(ValueError):
    """A ParallelOptions that cannot run this model on this many GPUs."""


class TransformerGeometry(BaseModel):
    """What the degrees are checked against: the transformer's heads and patching, the VAE's compression."""

    model_config = ConfigDict(frozen=True)
    num_attention_heads: int = Field(ge=1, description="attention heads (split over Ulysses ranks)")
    patch_size: int = Field(ge=1, description="spatial patch of the transformer, in latent pixels")
    patch_size_t: int = Field(ge=1, description="temporal patch of the transformer, in latent frames")
    spatial_compression: int = Field(8, ge=1, description="VAE pixels per latent pixel")
    temporal_compression: int = Field(4, ge=1, description="VAE frames per latent frame (after the first)")
    num_blocks: int = Field(0, ge=0, description="transformer blocks a pipeline can cut (0: not known)")

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> TransformerGeometry:
        """Read `transformer/config.json` (and `vae/config.json`) of a diffusers checkpoint directory."""
        root = Path(path)
        transformer = json.loads((root / "transformer" / "config.json").read_text())
        vae_file = root / "vae" / "config.json"
        vae = json.loads(vae_file.read_text()) if vae_file.is_file() else {}
        patch = transformer["patch_size"]
        if isinstance(patch, list):  # Wan: (frames, height, width)
            patch_t, patch = patch[0], patch[1]
        else:
            patch_t = transformer["patch_size_t"]
        return cls(
            num_attention_heads=transformer["num_attention_heads"],
            patch_size=patch,
            patch_size_t=patch_t,
            # HunyuanVideo's VAE names them one way, Wan's another.
            spatial_compression=vae.get("spatial_compression_ratio", vae.get("scale_factor_spatial", 8)),
            temporal_compression=vae.get("temporal_compression_ratio", vae.get("scale_factor_temporal", 4)),
            num_blocks=transformer.get("num_layers", 0) + transformer.get("num_single_layers", 0),
        )

    def video_tokens(self, num_frames: int, height: int, width: int) -> int:
        """Tokens the transformer attends over for one video (text tokens not counted)."""
        latent_frames = (num_frames - 1) // self.temporal_compression + 1
        patch = self.spatial_compression * self.patch_size
        return (latent_frames // self.patch_size_t) * (height // patch) * (width // patch)


# The published HunyuanVideo (hunyuanvideo-community/HunyuanVideo): 24 heads of 128, 2x2 patches, 20
# dual-stream and 40 single-stream blocks.
HUNYUANVIDEO = TransformerGeometry(num_attention_heads=24, patch_size=2, patch_size_t=1, num_blocks=60)


def _describe(options: ParallelOptions) -> str:
    text = f"ulysses={options.ulysses_degree} ring={options.ring_degree} cfg={options.cfg_degree}"
    return text + (f" pipeline={options.pipeline_degree}" if options.pipeline_degree > 1 else "")


def valid_combinations(
    world_size: int, geometry: TransformerGeometry, true_cfg: bool = False, pipeline_degree: int = 1
) -> list[ParallelOptions]:
    """Every ParallelOptions with `pipeline_degree` stages that runs this model on `world_size` ranks
    (Ulysses-heavy first)."""
    combos = []
    for cfg in (1, 2) if true_cfg else (1,):
        if world_size % (cfg * pipeline_degree):
            continue
        sequence = world_size // (cfg * pipeline_degree)
        for ulysses in range(sequence, 0, -1):
            if sequence % ulysses == 0 and geometry.num_attention_heads % ulysses == 0:
                combos.append(
                    ParallelOptions(
                        ulysses_degree=ulysses,
                        ring_degree=sequence // ulysses,
                        cfg_degree=cfg,
                        pipeline_degree=pipeline_degree,
                    )
                )
    return combos


def _valid_list(
    world_size: int, geometry: TransformerGeometry, true_cfg: bool, pipeline_degree: int = 1
) -> str:
    combos = valid_combinations(world_size, geometry, true_cfg, pipeline_degree)
    return "; ".join(_describe(c) for c in combos) or "none"


def validate(
    options: ParallelOptions,
    geometry: TransformerGeometry,
    world_size: int | None = None,
    true_cfg: bool = False,
) -> ParallelOptions:
    """Check the degrees against the model (and the GPUs when `world_size` is given); returns `options`.

    `true_cfg` says whether the deployment's requests use true classifier-free guidance (HunyuanVideo is
    CFG-distilled: only `true_cfg_scale > 1` with a negative prompt runs the second branch cfg=2 splits).
    """
    size = world_size or options.world_size
    stages = options.pipeline_degree
    if world_size is not None and options.world_size != world_size:
        raise ParallelConfigError(
            f"{_describe(options)} needs {options.world_size} GPUs (ulysses x ring x cfg x pipeline) but the "
            f"replica has {world_size}; valid for {world_size}: "
            f"{_valid_list(world_size, geometry, true_cfg, stages)}"
        )
    if geometry.num_blocks and stages > geometry.num_blocks:
        raise ParallelConfigError(
            f"pipeline_degree={stages} is more stages than the model's {geometry.num_blocks} blocks"
        )
    if geometry.num_attention_heads % options.ulysses_degree:
        raise ParallelConfigError(
            f"ulysses_degree={options.ulysses_degree} does not divide the model's "
            f"{geometry.num_attention_heads} attention heads; valid for {size} GPUs: "
            f"{_valid_list(size, geometry, true_cfg, stages)}"
        )
    if options.cfg_degree == 2 and not true_cfg:
        raise ParallelConfigError(
            "cfg_degree=2 splits the true-CFG branches, but HunyuanVideo is CFG-distilled and runs one "
            f"branch unless true CFG is used; valid for {size} GPUs without true CFG: "
            f"{_valid_list(size, geometry, False, stages)}"
        )
    return options


def uses_true_cfg(request: GenerationRequest) -> bool:
    """Whether HunyuanVideoPipeline runs two branches per step for this request."""
    return (request.true_cfg_scale or 1.0) > 1.0 and bool(request.negative_prompt)


def validate_request(
    options: ParallelOptions, geometry: TransformerGeometry, request: GenerationRequest
) -> None:
    """Per-request checks: video tokens split evenly, cfg=2 gets two branches; raises InvalidArgument."""
    sequence = options.ulysses_degree * options.ring_degree
    tokens = geometry.video_tokens(request.num_frames, request.height, request.width)
    if tokens % sequence:
        raise InvalidArgument(
            "height",
            f"{request.width}x{request.height} x {request.num_frames} frames gives {tokens} video tokens, "
            f"which do not split evenly over ulysses x ring = {sequence} ranks; pick a size whose token "
            f"count is a multiple of {sequence}",
        )
    if tokens < options.pipeline_patches:
        raise InvalidArgument(
            "height",
            f"{request.width}x{request.height} x {request.num_frames} frames gives {tokens} video tokens, "
            f"fewer than the replica's pipeline_patches={options.pipeline_patches}; ask for a larger video",
        )
    latent_rows = request.height // geometry.spatial_compression
    if options.parallel_vae and options.world_size > 1 and latent_rows < min_latent_rows(options.world_size):
        raise InvalidArgument(
            "height",
            f"height {request.height} gives {latent_rows} latent rows, fewer than the "
            f"{min_latent_rows(options.world_size)} the VAE decode split over {options.world_size} ranks "
            f"needs (parallel_vae); use a height of at least "
            f"{min_latent_rows(options.world_size) * geometry.spatial_compression}",
        )
    if options.pipeline_degree > 1 and request.cache.policy is not CachePolicy.OFF:
        raise InvalidArgument(
            "cache_policy",
            f"{request.cache.policy.value} cannot run on a pipeline-parallel replica (pipeline_degree="
            f"{options.pipeline_degree}: the first block lives on the first stage only); send off",
        )
    if options.cfg_degree == 2 and not uses_true_cfg(request):
        raise InvalidArgument(
            "true_cfg_scale",
            "this deployment splits the true-CFG branches over rank groups (cfg_degree=2): requests need "
            "true_cfg_scale > 1 and a negative_prompt",
        )


# A ring-capable kernel that every CUDA build of torch has (cuDNN's fused attention returns the log-sum-exp).
RING_DEFAULT_BACKEND = "cudnn"


def attention_backend(options: ParallelOptions, on_gpu: bool) -> str | None:
    """The `attention_backend` to give xfuser: None lets it pick (never with ring > 1 on a GPU).

    On the CPU only the CPU flash kernel works (parallel.cpu_compat). On a GPU the configured one; unset
    with ring attention, cuDNN, since xfuser's own first pick (FA4 where installed) refuses ring.
    """
    if not on_gpu:
        from parallel.cpu_compat import CPU_ATTENTION_BACKEND

        return CPU_ATTENTION_BACKEND
    if options.attention_backend is not None:
        return options.attention_backend.upper()
    return RING_DEFAULT_BACKEND.upper() if options.ring_degree > 1 else None
