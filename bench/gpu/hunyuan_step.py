"""Seconds per denoising step of the full-size HunyuanVideo transformer on one GPU, with random weights.

Builds the published transformer's architecture (12.8B parameters) directly on the GPU in bf16, then for
each variant (bf16; FP8 weight storage computed in bf16; FP8 GEMMs through torchao where the GPU has them)
and each size (1280x720 x 129 frames and smaller) times denoising steps: one transformer forward (the
model is CFG-distilled) plus the flow-matching Euler update. Records seconds per step, peak GPU memory,
the step's FLOP count (analytic; ~12 PFLOP at 720p x 129) and the achieved TFLOP/s next to a measured
bf16 matmul rate. Results are rewritten to `<out>/hunyuan_step.json` after every run, so a run cut short
still leaves what it measured.

`--dry-run` runs the same code on the CPU with a tiny configuration (fp32) in seconds; the unit tests use it.
The lent machine has torch but not diffusers: bench/gpu/run.sh installs carried wheels first.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

# hunyuanvideo-community/HunyuanVideo transformer/config.json
FULL_CONFIG: dict[str, Any] = {
    "in_channels": 16,
    "out_channels": 16,
    "num_attention_heads": 24,
    "attention_head_dim": 128,
    "num_layers": 20,
    "num_single_layers": 40,
    "num_refiner_layers": 2,
    "mlp_ratio": 4.0,
    "patch_size": 2,
    "patch_size_t": 1,
    "qk_norm": "rms_norm",
    "guidance_embeds": True,
    "text_embed_dim": 4096,
    "pooled_projection_dim": 768,
    "rope_theta": 256.0,
    "rope_axes_dim": (16, 56, 56),
}
TINY_CONFIG: dict[str, Any] = {
    **FULL_CONFIG,
    "num_attention_heads": 2,
    "attention_head_dim": 16,
    "num_layers": 1,
    "num_single_layers": 1,
    "num_refiner_layers": 1,
    "text_embed_dim": 32,
    "pooled_projection_dim": 32,
    "rope_axes_dim": (4, 6, 6),
}
# name -> (height, width, frames); the first is the published operating point.
SIZES: dict[str, tuple[int, int, int]] = {
    "720p-129f": (720, 1280, 129),
    "544p-129f": (544, 960, 129),
    "480p-61f": (480, 848, 61),
    "360p-33f": (352, 640, 33),
}
TINY_SIZES: dict[str, tuple[int, int, int]] = {"32px-9f": (32, 32, 9), "64px-17f": (64, 64, 17)}
VARIANTS = ("bf16", "fp8-storage", "fp8-gemm")
REFERENCE_PFLOP_720P = 12.0  # one forward at 720p x 129 frames (118,800 video tokens), published estimate
SPATIAL, TEMPORAL = 8, 4  # the VAE's compression


def video_tokens(config: dict[str, Any], height: int, width: int, frames: int) -> int:
    """Tokens of the video latent after patching (118,800 at 720p x 129 frames)."""
    latent_frames = (frames - 1) // TEMPORAL + 1
    patch = SPATIAL * config["patch_size"]
    return (latent_frames // config["patch_size_t"]) * (height // patch) * (width // patch)


def forward_flops(config: dict[str, Any], video: int, text: int) -> dict[str, float]:
    """Multiply-adds x 2 of one transformer forward in its blocks: attention and the token-wise Linears.

    Double blocks keep separate weights for video and text tokens (q, k, v, out and a 4x MLP each);
    single blocks run q, k, v, a 4x MLP and a fused output projection over all tokens. Attention is
    QK^T and AV over all `video + text` tokens in every block. Embedders, the text refiner and the
    modulation Linears (one token each) are left out: well under 1% at video sizes.
    """
    d = config["num_attention_heads"] * config["attention_head_dim"]
    mlp = int(d * config["mlp_ratio"])
    tokens = video + text
    double_per_token = 4 * d * d + 2 * d * mlp
    single_per_token = 3 * d * d + d * mlp + (d + mlp) * d
    linear = 2 * (
        config["num_layers"] * double_per_token * tokens
        + config["num_single_layers"] * single_per_token * tokens
    )
    blocks = config["num_layers"] + config["num_single_layers"]
    attention = blocks * 4 * tokens * tokens * d
    return {"attention": float(attention), "linear": float(linear), "total": float(attention + linear)}


def _unmasked_processor() -> Any:
    """HunyuanVideo's attention without the padding mask, so SDPA may pick its flash kernel.

    The bench feeds unpadded text (every token valid), where the mask is all True and dropping it is
    exact; xDiT serves the same way (it strips text padding and attends without a mask).
    """
    from diffusers.models.transformers.transformer_hunyuan_video import HunyuanVideoAttnProcessor2_0

    class UnmaskedAttnProcessor(HunyuanVideoAttnProcessor2_0):
        def __call__(
            self,
            attn: Any,
            hidden_states: torch.Tensor,
            encoder_hidden_states: torch.Tensor | None = None,
            attention_mask: torch.Tensor | None = None,
            image_rotary_emb: torch.Tensor | None = None,
        ) -> Any:
            return super().__call__(attn, hidden_states, encoder_hidden_states, None, image_rotary_emb)

    return UnmaskedAttnProcessor()


def build_transformer(config: dict[str, Any], device: torch.device, dtype: torch.dtype, seed: int = 0) -> Any:
    """The transformer with random weights, created directly on `device` in `dtype` (no fp32 copy)."""
    from diffusers import HunyuanVideoTransformer3DModel

    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = HunyuanVideoTransformer3DModel(**config)
    finally:
        torch.set_default_dtype(previous)
    model = model.eval().requires_grad_(False)
    processor = _unmasked_processor()
    for block in [*model.transformer_blocks, *model.single_transformer_blocks]:
        block.attn.set_processor(processor)
    return model


def apply_variant(model: Any, variant: str, dtype: torch.dtype) -> dict[str, Any]:
    """Turn a freshly built model into `variant` in place; returns facts about it."""
    parameter_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    facts: dict[str, Any] = {"parameter_bytes_built": parameter_bytes}
    if variant == "fp8-storage":
        model.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=dtype)
    elif variant == "fp8-gemm":
        if not (torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 9)):
            raise RuntimeError("FP8 GEMMs need a CUDA GPU of compute capability >= 8.9")
        from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_

        def in_blocks(module: torch.nn.Module, name: str) -> bool:
            return isinstance(module, torch.nn.Linear) and name.startswith(
                ("transformer_blocks.", "single_transformer_blocks.")
            )

        quantize_(model, Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()), filter_fn=in_blocks)
    facts["parameter_bytes"] = sum(p.numel() * p.element_size() for p in model.parameters())
    return facts


def make_inputs(
    config: dict[str, Any],
    size: tuple[int, int, int],
    text_tokens: int,
    device: torch.device,
    dtype: torch.dtype,
) -> dict[str, torch.Tensor]:
    """Random latents and text conditioning for one video of `size` (height, width, frames)."""
    height, width, frames = size
    generator = torch.Generator(device="cpu").manual_seed(1)
    latent_frames = (frames - 1) // TEMPORAL + 1
    shape = (1, config["in_channels"], latent_frames, height // SPATIAL, width // SPATIAL)

    def randn(*dims: int) -> torch.Tensor:
        return torch.randn(*dims, generator=generator).to(device=device, dtype=dtype)

    return {
        "hidden_states": randn(*shape),
        "encoder_hidden_states": randn(1, text_tokens, config["text_embed_dim"]),
        "encoder_attention_mask": torch.ones(1, text_tokens, device=device, dtype=torch.int64),
        "pooled_projections": randn(1, config["pooled_projection_dim"]),
        "guidance": torch.tensor([6000.0], device=device, dtype=dtype),
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(
    model: Any, inputs: dict[str, torch.Tensor], steps: int, warmup: int, device: torch.device
) -> tuple[list[float], bool]:
    """Seconds of each timed step (transformer forward + Euler update) after `warmup`; all finite?"""
    latents = inputs["hidden_states"]
    sigmas = torch.linspace(1.0, 0.0, warmup + steps + 1).tolist()
    times: list[float] = []
    conditioning = {k: v for k, v in inputs.items() if k != "hidden_states"}
    with torch.inference_mode():
        for i in range(warmup + steps):
            _sync(device)
            start = time.perf_counter()
            timestep = torch.tensor([sigmas[i] * 1000.0], device=device, dtype=latents.dtype)
            noise_pred = model(hidden_states=latents, timestep=timestep, return_dict=False, **conditioning)[0]
            latents = latents + (sigmas[i + 1] - sigmas[i]) * noise_pred
            _sync(device)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return times, bool(torch.isfinite(latents).all())


def matmul_tflops(device: torch.device, dtype: torch.dtype, n: int, repeats: int = 10) -> float:
    """Measured dense matmul rate (n x n x n, random data, median of `repeats` after 3 warm-ups)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    samples = []
    for i in range(3 + repeats):
        _sync(device)
        start = time.perf_counter()
        torch.matmul(a, b)
        _sync(device)
        if i >= 3:
            samples.append(time.perf_counter() - start)
    samples.sort()
    return 2 * n**3 / samples[len(samples) // 2] / 1e12


def _environment(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
    }
    try:
        import diffusers

        info["diffusers"] = diffusers.__version__
    except ImportError:
        pass
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        info.update(
            gpu=properties.name,
            gpu_memory_bytes=properties.total_memory,
            capability=".".join(map(str, torch.cuda.get_device_capability(device))),
        )
    return info


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every (variant, size) asked for, within the time budget; returns (and keeps writing) the results."""
    dry = args.dry_run
    device = torch.device("cpu" if dry or not torch.cuda.is_available() else "cuda")
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    config = TINY_CONFIG if dry else FULL_CONFIG
    sizes = TINY_SIZES if dry else SIZES
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "hunyuan_step.json"
    started = time.monotonic()
    results: dict[str, Any] = {
        "benchmark": "hunyuanvideo transformer denoising step, random weights",
        "dry_run": dry,
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()},
        "environment": _environment(device),
        "text_tokens": args.text_tokens,
        "reference_pflop_720p": REFERENCE_PFLOP_720P,
        "matmul_tflops": float(f"{matmul_tflops(device, dtype, 256 if dry else 8192):.4g}"),
        "matmul_dtype": str(dtype).removeprefix("torch."),
        "runs": [],
    }
    path.write_text(json.dumps(results, indent=2))
    for variant in args.variants:
        if time.monotonic() - started > args.max_seconds:
            break
        run_facts: dict[str, Any] = {}
        try:
            model = build_transformer(config, device, dtype)
            run_facts = apply_variant(model, variant, dtype)
        except Exception as exc:  # a variant this machine cannot run is recorded, not fatal
            results["runs"].append({"variant": variant, "skipped": f"{type(exc).__name__}: {exc}"})
            path.write_text(json.dumps(results, indent=2))
            continue
        for name in args.sizes or list(sizes):
            if time.monotonic() - started > args.max_seconds:
                results["runs"].append({"variant": variant, "size": name, "skipped": "time budget spent"})
                continue
            results["runs"].append(
                _one_run(model, config, variant, name, sizes[name], args, device, dtype, run_facts)
            )
            path.write_text(json.dumps(results, indent=2))
            print(_row(results["runs"][-1]), flush=True)
        del model
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    results["wall_seconds"] = round(time.monotonic() - started, 1)
    path.write_text(json.dumps(results, indent=2))
    return results


def _one_run(
    model: Any,
    config: dict[str, Any],
    variant: str,
    name: str,
    size: tuple[int, int, int],
    args: argparse.Namespace,
    device: torch.device,
    dtype: torch.dtype,
    facts: dict[str, Any],
) -> dict[str, Any]:
    height, width, frames = size
    tokens = video_tokens(config, height, width, frames)
    flops = forward_flops(config, tokens, args.text_tokens)
    record: dict[str, Any] = {
        "variant": variant,
        "size": name,
        "height": height,
        "width": width,
        "frames": frames,
        "video_tokens": tokens,
        "compute_dtype": str(dtype).removeprefix("torch."),
        "flop_per_step": flops["total"],
        "pflop_per_step": round(flops["total"] / 1e15, 3),
        "attention_share": round(flops["attention"] / flops["total"], 3),
        **facts,
    }
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        inputs = make_inputs(config, size, args.text_tokens, device, dtype)
        times, finite = time_steps(model, inputs, args.steps, args.warmup, device)
    except torch.OutOfMemoryError as exc:
        record["error"] = f"out of memory: {str(exc).splitlines()[0]}"
        return record
    seconds = sorted(times)[len(times) // 2]
    record.update(
        seconds_per_step=round(seconds, 4),
        step_seconds=[round(t, 4) for t in times],
        tflops=float(f"{flops['total'] / seconds / 1e12:.4g}"),
        output_finite=finite,
    )
    if device.type == "cuda":
        record["peak_memory_bytes"] = int(torch.cuda.max_memory_allocated(device))
    return record


def _row(run: dict[str, Any]) -> str:
    if "seconds_per_step" not in run:
        return f"{run['variant']:12s} {run['size']:10s} {run.get('error', run.get('skipped'))}"
    peak = run.get("peak_memory_bytes", 0) / 2**30
    return (
        f"{run['variant']:12s} {run['size']:10s} {run['seconds_per_step']:9.3f} s/step "
        f"{run['tflops']:8.1f} TFLOP/s {run['pflop_per_step']:8.3f} PFLOP/step peak {peak:6.1f} GiB"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/gpu-bench", help="directory for hunyuan_step.json")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--sizes", nargs="+", help=f"size names (default all): {', '.join(SIZES)}")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per run (the median is reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--text-tokens", type=int, default=256, help="prompt tokens (all valid)")
    parser.add_argument("--max-seconds", type=float, default=480.0, help="start no new run after this")
    parser.add_argument("--dry-run", action="store_true", help="tiny config on the CPU, for tests")
    args = parser.parse_args(argv)
    known = TINY_SIZES if args.dry_run else SIZES
    for name in args.sizes or []:
        if name not in known:
            parser.error(f"unknown size {name!r}; known: {', '.join(known)}")
    if args.dry_run:
        args.text_tokens = min(args.text_tokens, 8)
    return args


def main(argv: list[str] | None = None) -> int:
    results = run(parse_args(argv))
    done = [r for r in results["runs"] if "seconds_per_step" in r]
    print(f"{len(done)} runs measured; matmul {results['matmul_tflops']} TFLOP/s; {results['environment']}")
    return 0 if done else 1


if __name__ == "__main__":
    sys.exit(main())
