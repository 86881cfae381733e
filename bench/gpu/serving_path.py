"""Our HunyuanVideo serving path on a GPU at 720p x 129 frames, with random full-size weights.

What runs is the replica's own code: `parallel.worker.RankWorker` (xDiT's HunyuanVideo wrapper, the
attention backend it picks, one text encode, the step cache with its collective decision, the split VAE
decode) over `serve.engine.Engine` with the catalog's memory options for HunyuanVideo (FP8 weight storage,
VAE tiling, text encoders offloaded). Per layout (1 GPU; with two GPUs present, Ulysses 2 and a pipeline of
2 stages, parallel/pipeline.py, whose ranks hold half the blocks each and run without step cache, once with
the stages taking turns and once with PipeFusion's 2 patches after a warm-up step): load, then
`--steps` uncached steps stopping at the latents, then `--cached-steps` steps with the catalog's default
step cache and the VAE decode. Recorded: seconds per step (median of the steps after the first), stage
seconds, transformer forwards and skips, peak GPU memory, the attention backend, and TFLOP/s next to a
bf16 matmul rate measured in the same run.

Random weights stand in for the hub's (nothing can be fetched on a lent machine): the published
transformer and VAE architectures built with random values, and the tiny checkpoint's text encoders and
tokenizers. The transformer's text input projections are therefore 32 wide instead of 4096 and 768 (under
0.01% of a step's FLOPs), and the step cache's skip decisions on random weights say nothing about quality:
they only show that the decision runs on our path.

`--dry-run` runs the same code on the CPU (gloo, the tiny checkpoint as it is, fp32) in seconds for the
tests. Writes `<out>/serving_path.json` (rewritten after every measurement) and `<out>/serving_path.md`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parents[1])]  # hunyuan_step (FLOPs, matmul rate); serve/, parallel/

from hunyuan_step import FULL_CONFIG, forward_flops, matmul_tflops, video_tokens  # noqa: E402

MODEL = "hunyuanvideo"
TEXT_TOKENS = 256  # HunyuanVideo's max_sequence_length: the FLOP estimate's (upper) text length
# About 250 tokens through the tiny byte-level tokenizer, like a long real prompt.
PROMPT = (
    "A red fox trots through fresh snow at dawn, its breath steaming in the cold air; pine trees and "
    "a frozen lake behind it, golden light low on the horizon, the camera tracking alongside at eye level."
)


def build_checkpoint(root: Path, dry: bool) -> Path:
    """The tiny checkpoint without transformer weights; unless `dry`, with the published transformer config
    and a random VAE of the published shape."""
    from serve.tiny import write_tiny_checkpoint

    path = write_tiny_checkpoint(MODEL, root)
    for weights in (path / "transformer").glob("*.safetensors*"):
        weights.unlink()  # random_weights builds it, on the device
    if dry:
        return path
    from diffusers import AutoencoderKLHunyuanVideo

    tiny_transformer = json.loads((path / "transformer" / "config.json").read_text())
    config = {
        **tiny_transformer,
        **FULL_CONFIG,
        "rope_axes_dim": list(FULL_CONFIG["rope_axes_dim"]),
        # The tiny text encoders' width: only the two input projections differ from the published model.
        "text_embed_dim": tiny_transformer["text_embed_dim"],
        "pooled_projection_dim": tiny_transformer["pooled_projection_dim"],
    }
    (path / "transformer" / "config.json").write_text(json.dumps(config, indent=2))
    torch.manual_seed(0)
    AutoencoderKLHunyuanVideo().to(torch.bfloat16).save_pretrained(path / "vae")  # the published VAE's shape
    return path


def random_weights(transformer_class: type, device: torch.device) -> type:
    """`transformer_class` whose `from_pretrained` builds the config's model with random weights on `device`
    (seeded: every rank builds the same weights)."""

    class RandomWeights(transformer_class):  # type: ignore[misc, valid-type]
        @classmethod
        def from_pretrained(cls, path: str, subfolder: str, torch_dtype: torch.dtype, **_: Any) -> Any:
            config = cls.load_config(path, subfolder=subfolder)
            previous = torch.get_default_dtype()
            torch.set_default_dtype(torch_dtype)
            torch.manual_seed(0)
            try:
                with device:
                    model = cls.from_config(config)
            finally:
                torch.set_default_dtype(previous)
            return model.eval().requires_grad_(False)

    return RandomWeights


def _request(steps: int, cached: bool, dry: bool) -> Any:
    from serve.catalog import CachePolicy, get_spec
    from serve.request import RequestFields, build_request

    spec = get_spec(MODEL)
    cache = spec.default_cache
    fields = RequestFields(
        model=MODEL,
        prompt=PROMPT,
        seed=0,
        num_inference_steps=steps,
        cache_policy=cache.policy if cached else CachePolicy.OFF,
        cache_threshold=cache.threshold if cached else None,
    )
    return build_request(spec, spec.limits_for(dry), fields)


def _step_seconds(events: list[Any]) -> list[float]:
    """Seconds of each denoising step, from the progress events' elapsed times."""
    from serve.events import Stage

    elapsed = [e.elapsed_seconds for e in events if e.stage is Stage.DENOISING]
    return [b - a for a, b in zip([0.0, *elapsed], elapsed, strict=False)]


def _measure(worker: Any, request: Any, decode: bool) -> dict[str, Any]:
    events: list[Any] = []
    output = worker.run(request, events.append, decode=decode)
    steps = _step_seconds(events)
    later = sorted(steps[1:] or steps)
    stages = output.stages
    return {
        "steps": request.num_inference_steps,
        "cache": request.cache.model_dump(mode="json"),
        "step_seconds": [round(s, 4) for s in steps],
        "seconds_per_step": round(later[len(later) // 2], 4),
        "text_encode_seconds": round(stages.text_encode, 4),
        "vae_decode_seconds": round(stages.vae_decode, 4) if decode else None,
        "inference_seconds": round(output.inference_seconds, 3),
        "transformer_forwards": output.forwards.forwards,
        "transformer_forwards_skipped": output.forwards.skipped,
        "peak_memory_bytes": output.peak_memory_bytes,
        "frames": len(output.frames),
    }


def layouts(world_sizes: list[int], gpus: int, pipeline: bool) -> list[dict[str, Any]]:
    """The replica layouts to measure: each world size that fits as Ulysses, and as a pipeline of stages."""
    found = []
    for world_size in (w for w in world_sizes if w <= gpus):
        if world_size == 1:
            found.append({"layout": "1", "world_size": 1, "parallel": {}})
            continue
        found.append(
            {
                "layout": f"ulysses{world_size}",
                "world_size": world_size,
                "parallel": {"ulysses_degree": world_size},
            }
        )
        if pipeline:  # the stages taking turns, then PipeFusion's patches after one warm-up step
            for patches in (1, world_size):
                found.append(
                    {
                        "layout": f"pipeline{world_size}" + (f"-patches{patches}" if patches > 1 else ""),
                        "world_size": world_size,
                        "parallel": {"pipeline_degree": world_size, "pipeline_patches": patches},
                    }
                )
    return found


def rank_main(
    rank: int, layout: dict[str, Any], init: str, args: argparse.Namespace, checkpoint: str
) -> None:
    """One rank: set up the worker as a replica does, measure, and (rank 0) write the record beside the
    checkpoint (not into the output folder, which a lent machine returns only 8 files of)."""
    import parallel.worker
    from serve.catalog import MemoryOptions, get_spec
    from serve.config import ParallelOptions

    device = torch.device("cpu" if args.dry_run else "cuda")
    choose = parallel.worker._transformer_class  # stands in for the hub weights: see the module docstring
    parallel.worker._transformer_class = lambda *how: random_weights(choose(*how), device)
    spec = get_spec(MODEL)
    memory = MemoryOptions() if args.dry_run else spec.memory
    options = ParallelOptions(**layout["parallel"])
    worker = parallel.worker.RankWorker(spec, checkpoint, memory, options, rank, init)
    world_size = options.world_size
    record: dict[str, Any] = {
        "layout": layout["layout"],
        "world_size": world_size,
        "memory_options": memory.model_dump(),
    }
    try:
        record["load_seconds"] = round(worker.setup(), 2)
        record["attention_backend"] = worker.attention_backend_used
        record["vae_split"] = str(worker.vae_split)
        uncached = _request(args.steps, cached=False, dry=args.dry_run)
        record["size"] = {"height": uncached.height, "width": uncached.width, "frames": uncached.num_frames}
        record["uncached"] = _measure(worker, uncached, decode=False)
        cached = options.pipeline_degree == 1  # a pipeline runs without step cache
        record["cached_with_vae_decode"] = _measure(
            worker, _request(args.cached_steps, cached=cached, dry=args.dry_run), decode=True
        )
    except torch.OutOfMemoryError as exc:
        record["error"] = f"out of memory: {str(exc).splitlines()[0]}"
    finally:
        worker.shutdown()
    if rank == 0:
        _record_path(checkpoint, layout).write_text(json.dumps(record, indent=2))


def _record_path(checkpoint: str | Path, layout: dict[str, Any]) -> Path:
    return Path(checkpoint).parent / f"{layout['layout']}.json"


def _spawned(rank: int, layout: dict[str, Any], init: str, args: argparse.Namespace, checkpoint: str) -> None:
    rank_main(rank, layout, init, args, checkpoint)


def run_layout(layout: dict[str, Any], args: argparse.Namespace, checkpoint: Path) -> dict[str, Any]:
    from serve.ports import free_port

    init = f"tcp://127.0.0.1:{free_port()}"
    if layout["world_size"] == 1:
        rank_main(0, layout, init, args, str(checkpoint))
    else:
        import torch.multiprocessing as mp

        mp.spawn(_spawned, args=(layout, init, args, str(checkpoint)), nprocs=layout["world_size"], join=True)
    return json.loads(_record_path(checkpoint, layout).read_text())


def add_rates(record: dict[str, Any], matmul: float, dry: bool) -> None:
    """TFLOP/s of the uncached steps (whole replica) and their share of the measured matmul rate."""
    if "uncached" not in record:
        return
    size = record["size"]
    config = FULL_CONFIG
    if dry:
        from hunyuan_step import TINY_CONFIG

        config = TINY_CONFIG
    tokens = video_tokens(config, size["height"], size["width"], size["frames"])
    flops = forward_flops(config, tokens, TEXT_TOKENS)["total"]
    seconds = record["uncached"]["seconds_per_step"]
    tflops = flops / seconds / 1e12
    record["pflop_per_step"] = round(flops / 1e15, 3)
    record["tflops"] = float(f"{tflops:.4g}")
    record["fraction_of_matmul_rate"] = round(tflops / (matmul * record["world_size"]), 3)
    cached = record["cached_with_vae_decode"]
    computed = cached["transformer_forwards"] - cached["transformer_forwards_skipped"]
    record["forward_reduction"] = round(cached["transformer_forwards"] / max(1, computed), 3)


def _gpus(record: dict[str, Any]) -> str:
    layout = record.get("layout", "1")
    return str(record["world_size"]) if layout == "1" else f"{record['world_size']} ({layout})"


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# HunyuanVideo serving path on the GPU (random full-size weights)",
        "",
        f"{results['environment']}; {results['matmul_dtype']} matmul {results['matmul_tflops']} TFLOP/s "
        "(same run).",
        "",
        "| GPUs (layout) | size | attention | s/step | TFLOP/s | of matmul | text encode s | VAE decode s | "
        "forwards (skipped) | peak GiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for record in results["runs"]:
        if "uncached" not in record:
            lines.append(f"| {_gpus(record)} | - | - | {record.get('error', 'not run')} |||||||")
            continue
        size, cached = record["size"], record["cached_with_vae_decode"]
        peak = max(record["uncached"]["peak_memory_bytes"], cached["peak_memory_bytes"]) / 2**30
        lines.append(
            f"| {_gpus(record)} | {size['width']}x{size['height']}x{size['frames']} | "
            f"{record['attention_backend']} | {record['uncached']['seconds_per_step']} | "
            f"{record['tflops']} | "
            f"{record['fraction_of_matmul_rate']} | {cached['text_encode_seconds']} | "
            f"{cached['vae_decode_seconds']} | {cached['transformer_forwards']} "
            f"({cached['transformer_forwards_skipped']}) | {peak:.1f} |"
        )
    return "\n".join(lines) + "\n"


def _environment(device: torch.device) -> str:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{props.name}, {props.total_memory / 2**30:.0f} GiB, torch {torch.__version__}"
    return f"CPU (dry run), torch {torch.__version__}"


def run(args: argparse.Namespace) -> dict[str, Any]:
    dry = args.dry_run
    device = torch.device("cpu" if dry or not torch.cuda.is_available() else "cuda")
    if device.type == "cpu" and not dry:
        raise SystemExit("no GPU: use --dry-run")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dtype = torch.float32 if dry else torch.bfloat16
    matmul = matmul_tflops(device, dtype, 256 if dry else 8192)
    results: dict[str, Any] = {
        "benchmark": "hunyuanvideo serving path (RankWorker), random full-size weights",
        "dry_run": dry,
        "environment": _environment(device),
        "matmul_tflops": float(f"{matmul:.4g}"),
        "matmul_dtype": str(dtype).removeprefix("torch."),
        "runs": [],
    }
    # A dry run takes every layout on gloo, so the multi-GPU code paths are exercised too.
    gpus = torch.cuda.device_count() if device.type == "cuda" else 2
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="videogen-gpu-") as scratch:
        checkpoint = build_checkpoint(Path(scratch) / MODEL, dry)
        for layout in layouts(args.world_sizes, gpus, args.pipeline):
            if time.monotonic() - started > args.max_seconds:
                results["runs"].append({**layout, "error": "time budget spent"})
                continue
            record = run_layout(layout, args, checkpoint)
            add_rates(record, matmul, dry)
            results["runs"].append(record)
            (out / "serving_path.json").write_text(json.dumps(results, indent=2))
            print(json.dumps(record), flush=True)
    results["wall_seconds"] = round(time.monotonic() - started, 1)
    (out / "serving_path.json").write_text(json.dumps(results, indent=2))
    (out / "serving_path.md").write_text(markdown(results))
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/gpu-bench", help="directory for serving_path.json/.md")
    parser.add_argument("--steps", type=int, default=2, help="uncached steps (the first is not timed)")
    parser.add_argument("--cached-steps", type=int, default=2, help="steps with the default step cache")
    parser.add_argument("--world-sizes", type=int, nargs="+", default=[1, 2], help="GPUs per replica")
    parser.add_argument("--max-seconds", type=float, default=300.0, help="start no new layout after")
    parser.add_argument(
        "--no-pipeline", dest="pipeline", action="store_false", help="no pipeline-parallel layouts"
    )
    parser.add_argument("--dry-run", action="store_true", help="the tiny checkpoint on the CPU, for tests")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    results = run(parse_args(argv))
    print(markdown(results))
    return 0 if any("uncached" in record for record in results["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
