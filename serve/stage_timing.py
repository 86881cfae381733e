"""Where a generation's seconds go: the text encoders and the VAE decode, timed from inside the pipeline.

The pipelines share no stage callbacks, but every family encodes prompts (and images) with modules named
`text_encoder*` / `image_encoder` and decodes with `vae.decode`: hooks there time those stages, and the
denoising loop is what remains of the pipeline call. A long clip decoded in pieces outside `vae.decode`
(serve/causal_decode.py) runs the VAE's decoder module directly: its forward is timed too, when not
already inside `vae.decode`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from serve.hooks import replaced


@dataclass
class StageSeconds:
    """Seconds spent in the encoders and in the VAE decode of one pipeline call."""

    text_encode: float = 0.0
    vae_decode: float = 0.0


def _encoders(pipe: Any) -> list[torch.nn.Module]:
    return [
        module
        for name, module in pipe.components.items()
        if isinstance(module, torch.nn.Module)
        and (name.startswith("text_encoder") or name == "image_encoder")
    ]


@contextlib.contextmanager
def stage_clock(pipe: Any) -> Iterator[StageSeconds]:
    """Time the encoders and the VAE decode of `pipe` for the duration; yields the running totals."""
    seconds = StageSeconds()
    started: dict[int, float] = {}

    def before(module: torch.nn.Module, _: Any) -> None:
        started[id(module)] = time.perf_counter()

    def after(module: torch.nn.Module, _: Any, __: Any) -> None:
        seconds.text_encode += time.perf_counter() - started.pop(id(module))

    handles = []
    for module in _encoders(pipe):
        handles += [module.register_forward_pre_hook(before), module.register_forward_hook(after)]
    vae = pipe.vae
    decode = vae.decode
    decoding = 0  # calls of vae.decode running (the decoder's own hooks then count nothing)

    def timed_decode(*args: Any, **kwargs: Any) -> Any:
        nonlocal decoding
        start = time.perf_counter()
        decoding += 1
        try:
            return decode(*args, **kwargs)
        finally:
            decoding -= 1
            seconds.vae_decode += time.perf_counter() - start

    def before_decoder(module: torch.nn.Module, _: Any) -> None:
        if not decoding:
            started[id(module)] = time.perf_counter()

    def after_decoder(module: torch.nn.Module, _: Any, __: Any) -> None:
        if id(module) in started:
            seconds.vae_decode += time.perf_counter() - started.pop(id(module))

    decoder = getattr(vae, "decoder", None)
    if isinstance(decoder, torch.nn.Module):
        handles += [
            decoder.register_forward_pre_hook(before_decoder),
            decoder.register_forward_hook(after_decoder),
        ]

    try:
        with replaced(vae, "decode", timed_decode):
            yield seconds
    finally:
        for handle in handles:
            handle.remove()
