"""Step caching side by side: uncached vs First-Block Cache, interleaved in one run, per tiny DiT model.

For each model and threshold: wall time of a 50-step generation (median of the repeats, the order of
the two sides alternating), transformer forwards run in full vs cut to the first block, and how far the
cached frames are from the uncached ones (max and mean absolute difference, frames in [0, 1]). Tiny
random-weight checkpoints on the CPU: the forwards saved carry over to a GPU, the seconds do not
(a tiny forward is cheap next to the VAE and the Python around it).

Usage: python -m bench.cache_speed [--repeats N] [--steps N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from bench.common import write
from serve.catalog import CachePolicy, get_spec
from serve.engine import Engine, FloatFrames
from serve.request import RequestFields, build_request

MODELS = ("hunyuanvideo", "cogvideox-2b")
THRESHOLDS = (0.1, 0.2, 0.3)


def measure(model: str, steps: int, repeats: int) -> list[dict]:
    spec = get_spec(model)
    engine = Engine(spec, "tiny", num_threads=1)
    engine.load()

    def request(threshold: float | None):
        cache = (
            {}
            if threshold is None
            else {"cache_policy": CachePolicy.FIRST_BLOCK, "cache_threshold": threshold}
        )
        fields = RequestFields(model=model, prompt="a red fox", seed=1, num_inference_steps=steps, **cache)
        return build_request(spec, spec.tiny_limits, fields)

    def timed(threshold: float | None) -> tuple[float, FloatFrames]:
        start = time.perf_counter()
        out = engine.float_frames(request(threshold))
        return time.perf_counter() - start, out

    timed(None)  # warm-up
    rows = []
    for threshold in THRESHOLDS:
        plain_s, cached_s = [], []
        for repeat in range(repeats):
            sides = [None, threshold] if repeat % 2 == 0 else [threshold, None]
            for side in sides:
                seconds, out = timed(side)
                (plain_s if side is None else cached_s).append(seconds)
                if side is None:
                    plain = out
                else:
                    cached = out
        difference = np.abs(cached.frames - plain.frames)
        rows.append(
            {
                "model": model,
                "threshold": threshold,
                "steps": steps,
                "uncached_s": statistics.median(plain_s),
                "cached_s": statistics.median(cached_s),
                "forwards": cached.forwards.forwards,
                "skipped": cached.forwards.skipped,
                "forward_ratio": plain.forwards.forwards
                / max(1, cached.forwards.forwards - cached.forwards.skipped),
                "max_abs_diff": float(difference.max()),
                "mean_abs_diff": float(difference.mean()),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=4, help="runs of each side (even: both orders alike)")
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    rows = [row for model in MODELS for row in measure(model, args.steps, args.repeats)]
    lines = [
        f"# Step caching on tiny checkpoints (CPU, {args.steps} steps, "
        f"median of {args.repeats} interleaved runs)",
        "",
        "First-Block Cache vs every step in full; `full / computed`: how many fewer full forwards;",
        "the difference is of the float frames in [0, 1]. Wall times are CPU seconds of tiny models, where a",
        "forward is cheap next to the VAE: the forwards saved are what carries over to a GPU.",
        "",
        "| model | threshold | uncached (s) | cached (s) | forwards skipped | full / computed | max diff "
        "| mean diff |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        *[
            f"| {r['model']} | {r['threshold']} | {r['uncached_s']:.2f} | {r['cached_s']:.2f} | "
            f"{r['skipped']} of {r['forwards']} | {r['forward_ratio']:.2f}x | {r['max_abs_diff']:.4f} | "
            f"{r['mean_abs_diff']:.5f} |"
            for r in rows
        ],
        "",
    ]
    write("cache_speed", {"steps": args.steps, "repeats": args.repeats, "rows": rows}, "\n".join(lines))


if __name__ == "__main__":
    main()
