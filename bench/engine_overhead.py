"""Engine overhead: the direct pipeline call vs the same request through serve.engine, per tiny model.

Both run in one process on the same loaded pipeline, interleaved, so the ratio is measured side
by side. Usage: python bench/engine_overhead.py [--repeats N]
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PIL import Image

from bench.common import summarize, write
from serve.catalog import CATALOG, Task
from serve.engine import Engine
from serve.request import RequestFields, build_request


def _image() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (90, 160, 40)).save(buffer, "PNG")
    return buffer.getvalue()


def measure(model: str, repeats: int) -> dict:
    spec = CATALOG[model]
    engine = Engine(spec, "tiny")
    engine.load()
    fields = RequestFields(
        model=model, prompt="a red fox", seed=1, image=_image() if spec.task is Task.I2V else b""
    )
    request = build_request(spec, spec.tiny_limits, fields)
    engine.generate(request)  # warm-up
    direct, through_engine = [], []
    for _ in range(repeats):
        kwargs = engine.pipeline_call_kwargs(request)
        start = time.perf_counter()
        engine.pipe(**kwargs)
        direct.append(time.perf_counter() - start)
        start = time.perf_counter()
        engine.generate(request)
        through_engine.append(time.perf_counter() - start)
    d, e = summarize(direct), summarize(through_engine)
    return {"model": model, "direct": d, "engine": e, "ratio": e["median"] / d["median"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    rows = [measure(model, args.repeats) for model in CATALOG]
    lines = [
        "# Engine overhead (tiny models, CPU)",
        "",
        f"Median of {args.repeats} interleaved runs; direct = `pipe(**kwargs)`, engine = `Engine.generate`.",
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
