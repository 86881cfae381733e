"""HunyuanVideo text-to-video (one process; the multi-GPU path lives in `parallel`) and image-to-video."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from typing import Any

from PIL import Image

from serve.families.common import load_pipeline, text_video_kwargs
from serve.request import GenerationRequest

__all__ = ["configured", "load_pipeline", "pipeline_kwargs"]


def pipeline_kwargs(request: GenerationRequest, image: Image.Image | None) -> dict[str, Any]:
    # HunyuanVideo is CFG-distilled: guidance_scale is an embedded guidance input, and true
    # classifier-free guidance (a second forward per step) only runs when true_cfg_scale > 1.
    kwargs = text_video_kwargs(request)
    kwargs["true_cfg_scale"] = request.true_cfg_scale or 1.0
    if image is not None:
        kwargs["image"] = image.resize((request.width, request.height))
    return kwargs


@contextlib.contextmanager
def configured(pipe: Any, request: GenerationRequest) -> Iterator[None]:
    """HunyuanVideo-I2V's pipeline calls its transformer outside any cache context (the text-to-video
    pipeline opens one per guidance branch): here each call gets one, "cond" and then, with true CFG,
    "uncond" (the order of its loop), so that step caching keeps one state per branch."""
    if request.image is None:
        yield
        return
    from diffusers.hooks.hooks import CacheContext, _set_cache_context

    true_cfg = (request.true_cfg_scale or 1.0) > 1 and request.negative_prompt is not None
    branches = itertools.cycle(["cond", "uncond"] if true_cfg else ["cond"])

    def enter_branch(transformer: Any, _: Any) -> None:
        branch = next(branches)
        if getattr(transformer, "_diffusers_hook", None) is not None:  # a cache is on
            _set_cache_context(transformer, CacheContext(branch))

    handle = pipe.transformer.register_forward_pre_hook(enter_branch)
    try:
        yield
    finally:
        handle.remove()
        if getattr(pipe.transformer, "_diffusers_hook", None) is not None:
            _set_cache_context(pipe.transformer, None)
