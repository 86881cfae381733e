"""Engine overhead: the direct pipeline call vs the same request through serve.engine, per tiny model.

Both run in one process on the same loaded pipeline, the same way (under `torch.inference_mode`, with
a freshly seeded generator), interleaved with the order alternating every repeat, so neither side
gains from running second (warm caches) and the ratio shows what the engine adds: the progress hook,
seeding and the conversion to uint8 frames. Usage: python -m bench.engine_overhead [--repeats N]
"""

from __future__ import annotations

import argparse
import time

import torch

from bench.common import summarize, write
from bench.workload import conditioning_image
from serve.catalog import CATALOG, Task
from serve.engine import Engine
from serve.request import RequestFields, build_request


def measure(model: str, repeats: int) -> dict:
    spec = CATALOG[model]
    engine = Engine(spec, "tiny")
    engine.load()
    fields = RequestFields(
        model=model,
        prompt="a red fox",
        seed=1,
        image=conditioning_image(64, 64) if spec.task is Task.I2V else b"",
    )
    request = build_request(spec, spec.tiny_limits, fields)
    engine.generate(request)  # warm-up

    def run_direct() -> float:
        kwargs = engine.pipeline_call_kwargs(request)
        start = time.perf_counter()
        with torch.inference_mode():
            engine.pipe(**kwargs)
        return time.perf_counter() - start

    def run_engine() -> float:
        start = time.perf_counter()
        engine.generate(request)
        return time.perf_counter() - start

    direct, through_engine = [], []
    for repeat in range(repeats):
        if repeat % 2 == 0:
            direct.append(run_direct())
            through_engine.append(run_engine())
        else:
            through_engine.append(run_engine())
            direct.append(run_direct())
    d, e = summarize(direct), summarize(through_engine)
    return {"model": model, "direct": d, "engine": e, "ratio": e["median"] / d["median"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=10, help="runs of each side (even: both orders alike)")
    args = parser.parse_args()
    rows = [measure(model, args.repeats) for model in CATALOG]
    lines = [
        "# Engine overhead (tiny models, CPU)",
        "",
        f"Median of {args.repeats} interleaved runs, the order alternating; direct = `pipe(**kwargs)` under "
        "`torch.inference_mode`, engine = `Engine.generate` (progress hook, seeding, uint8 frames).",
        "",
        "| model | direct (ms) | engine (ms) | ratio |",
        "|---|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['model']} | {row['direct']['median'] * 1000:.1f} | {row['engine']['median'] * 1000:.1f} "
            f"| {row['ratio']:.3f} |"
        )
    write("engine_overhead", {"repeats": args.repeats, "models": rows}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
