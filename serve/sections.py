"""Long clips, section by section: where a run is (section i of n) and each section's frames as soon as
the pipeline decodes them.

A long-clip pipeline (Helios) denoises one section, decodes it with its VAE, and goes on to the next,
conditioned on the history; the VAE decode call is the moment a section exists. `section_frames` hooks
that call: the section's frames go to a callback at once (to be encoded and sent while the rest is
made), and the pipeline keeps none of them: its own concatenation of the clip stays empty.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

SectionCallback = Callable[[int, np.ndarray], None]


class SectionPlan(BaseModel):
    """The denoising steps of each section of one run, in order, and the frames the clip keeps."""

    model_config = ConfigDict(frozen=True)
    steps: list[int]
    num_frames: int

    @property
    def total_steps(self) -> int:
        return sum(self.steps)

    @property
    def total_sections(self) -> int:
        return len(self.steps)

    def section_of(self, steps_done: int) -> int:
        """The section (from 1) that the `steps_done`-th step belongs to."""
        ends = list(itertools.accumulate(self.steps))
        return min(bisect.bisect_left(ends, max(steps_done, 1)) + 1, self.total_sections)


@contextlib.contextmanager
def section_frames(pipe: Any, plan: SectionPlan, on_section: SectionCallback) -> Iterator[None]:
    """Call `on_section(index, frames)` with each decoded section: float frames in [0, 1], shape
    (frames, height, width, 3), cut where the clip's `plan.num_frames` end. The pipeline's output then
    carries no frames."""
    vae = pipe.vae
    processor = pipe.video_processor
    decode = vae.decode
    postprocess = processor.postprocess_video
    made = 0
    index = 0

    def decode_section(*args: Any, **kwargs: Any) -> Any:
        nonlocal made, index
        output = decode(*args, **kwargs)
        video = output[0] if isinstance(output, tuple) else output.sample
        frames = postprocess(video, output_type="np")[0][: max(0, plan.num_frames - made)]
        index += 1
        made += len(frames)
        on_section(index, np.asarray(frames, dtype=np.float32))
        # The pipeline gets a section of no frames back: it keeps none of the clip (on the GPU) while it
        # makes the rest, so its memory stays that of one section however long the clip.
        emptied = video[:, :, :0]
        return (emptied, *output[1:]) if isinstance(output, tuple) else type(output)(sample=emptied)

    with (
        _replaced(vae, "decode", decode_section),
        _replaced(processor, "postprocess_video", lambda v, *a, **k: v[:0]),
    ):
        yield


@contextlib.contextmanager
def _replaced(owner: Any, name: str, value: Any) -> Iterator[None]:
    """`owner.name = value` for the duration; then what was there (another hook's wrapper, or the class's
    method showing through again)."""
    wrapped = owner.__dict__.get(name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        if wrapped is None:
            delattr(owner, name)
        else:
            setattr(owner, name, wrapped)
