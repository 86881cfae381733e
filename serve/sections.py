"""Long clips, section by section: where a run is (section i of n) and each section's frames as soon as
the pipeline decodes them.

A long-clip pipeline (Helios, FramePack F1, SkyReels-V2 DF) denoises one section, decodes it with its VAE
(SkyReels: at the end, unless hooked here), and goes on
to the next, conditioned on the history. `section_frames` hooks the moment a section's frames are final:
they go to a callback at once (to be encoded and sent while the rest is made), and the pipeline keeps
none of them beyond what the next section needs.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from serve.hooks import no_frames, replaced

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


class _Emitter:
    """Hands out frames of the clip in order, as float frames in [0, 1], cut where the clip ends."""

    def __init__(self, pipe: Any, plan: SectionPlan, on_section: SectionCallback) -> None:
        self.postprocess = pipe.video_processor.postprocess_video  # the class's, before any hook
        self.plan = plan
        self.on_section = on_section
        self.made = 0
        self.index = 0

    def __call__(self, video: Any) -> None:
        """`video`: decoded frames (batch, channels, frames, height, width) in the VAE's range."""
        if video.shape[2] == 0 or self.made >= self.plan.num_frames:
            return
        frames = self.postprocess(video, output_type="np")[0][: self.plan.num_frames - self.made]
        self.index += 1
        self.made += len(frames)
        self.on_section(self.index, np.asarray(frames, dtype=np.float32))


@contextlib.contextmanager
def section_frames(
    pipe: Any, plan: SectionPlan, on_section: SectionCallback, kind: str = "decode"
) -> Iterator[None]:
    """Call `on_section(index, frames)` with each part of the clip as soon as it is final: float frames in
    [0, 1], shape (frames, height, width, 3), cut where the clip's `plan.num_frames` end.

    `kind` says when frames are final. "causal_latents" (SkyReels-V2 diffusion forcing): the pipeline
    accumulates every window's latents and decodes them all at the end; each window's new latent frames
    are final when the next window starts (`prepare_latents` gets them as history) and are decoded then,
    continuing the VAE's causal cache (serve/causal_decode.py); the final decode gets only the rest.
    "decode" (Helios): every VAE decode is the next section, and the
    pipeline gets none of it back, so it keeps no frames. "soft_append" (FramePack F1): each section is
    decoded with an overlap that the next one blends into (the pipeline's `_soft_append`), so all but
    the last `overlap` frames of each append are final; the pipeline keeps only that tail, and its final
    postprocessing hands out the tail of the last section.
    """
    emit = _Emitter(pipe, plan, on_section)
    vae, processor = pipe.vae, pipe.video_processor
    if kind == "decode":
        decode = vae.decode

        def decode_section(*args: Any, **kwargs: Any) -> Any:
            output = decode(*args, **kwargs)
            video = output[0] if isinstance(output, tuple) else output.sample
            emit(video)
            # The pipeline gets a section of no frames back: it keeps none of the clip (on the GPU)
            # while it makes the rest, so its memory stays that of one section however long the clip.
            emptied = video[:, :, :0]
            return (emptied, *output[1:]) if isinstance(output, tuple) else type(output)(sample=emptied)

        with replaced(vae, "decode", decode_section), replaced(processor, "postprocess_video", no_frames):
            yield
        return
    if kind == "causal_latents":
        with _causal_latent_sections(pipe, emit):
            yield
        return
    if kind != "soft_append":
        raise ValueError(f"unknown kind of sections {kind!r}")
    soft_append = pipe._soft_append

    def append_section(history: Any, current: Any, overlap: int = 0) -> Any:
        joined = soft_append(history, current, overlap)
        emit(joined[:, :, : joined.shape[2] - overlap])
        return joined[:, :, joined.shape[2] - overlap :]  # the tail the next section blends into

    def last_tail(video: Any, *args: Any, **kwargs: Any) -> Any:
        emit(video)
        return video[:0]

    with (
        replaced(pipe, "_soft_append", append_section),
        replaced(processor, "postprocess_video", last_tail),
    ):
        yield


@contextlib.contextmanager
def _causal_latent_sections(pipe: Any, emit: _Emitter) -> Iterator[None]:
    """The "causal_latents" kind of `section_frames`."""
    from serve.causal_decode import CausalLatentDecoder

    decoder = CausalLatentDecoder(pipe.vae)
    prepare = pipe.prepare_latents

    def prepare_window(*args: Any, **kwargs: Any) -> Any:
        history = kwargs.get("video_latents")  # every final latent frame so far (None for the first window)
        if history is not None and history.shape[2] > decoder.decoded:
            emit(decoder.decode(decoder.normalised(history[:, :, decoder.decoded :])))
        return prepare(*args, **kwargs)

    def decode_rest(latents: Any, *args: Any, **kwargs: Any) -> Any:
        """The pipeline's decode of the whole clip: what is not decoded yet, handed out; none returned."""
        rest = latents[:, :, decoder.decoded :]
        if rest.shape[2]:
            emit(decoder.decode(rest))
        emptied = latents[:, :3, :0]
        return_dict = args[0] if args else kwargs.get("return_dict", True)
        if not return_dict:
            return (emptied,)
        from diffusers.models.autoencoders.vae import DecoderOutput

        return DecoderOutput(sample=emptied)

    with (
        replaced(pipe, "prepare_latents", prepare_window),
        replaced(pipe.vae, "decode", decode_rest),
        replaced(pipe.video_processor, "postprocess_video", no_frames),
    ):
        yield
