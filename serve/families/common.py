"""What most families share: plain loading and the text-to-video arguments."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from serve.request import GenerationRequest
from serve.weights import WeightsSource


def load_pipeline(pipeline_cls: type, source: WeightsSource, load_kwargs: dict[str, Any]) -> Any:
    """`from_pretrained` of the weights directory."""
    return pipeline_cls.from_pretrained(str(source.path), **load_kwargs)


def text_video_kwargs(request: GenerationRequest) -> dict[str, Any]:
    """Arguments every prompt-driven video pipeline takes under the same names."""
    return {
        "prompt": request.prompt,
        "negative_prompt": request.negative_prompt,
        "num_frames": request.num_frames,
        "height": request.height,
        "width": request.width,
        "num_inference_steps": request.num_inference_steps,
        "guidance_scale": request.guidance_scale,
    }


@contextlib.contextmanager
def configured(pipe: Any, request: GenerationRequest) -> Iterator[None]:
    """Per-request settings of the pipeline itself, undone afterwards: none for most families."""
    yield


@contextlib.contextmanager
def config_values(owner: Any, **values: Any) -> Iterator[None]:
    """Set config entries of a pipeline or scheduler (what its `__call__` or `set_timesteps` reads) for
    the duration; the checkpoint's values again afterwards."""
    saved = {key: owner.config[key] for key in values}
    owner.register_to_config(**values)
    try:
        yield
    finally:
        owner.register_to_config(**saved)


def flow_shift_key(scheduler: Any) -> str:
    """Where a flow-matching scheduler keeps its shift: UniPC (Wan's) or flow-matching Euler."""
    return "flow_shift" if "flow_shift" in scheduler.config else "shift"
