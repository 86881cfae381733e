"""SkyReels-V2 diffusion forcing on its tiny checkpoint: windows by the catalog's geometry, text or image to
video through the real pipelines, and the knobs and limits it takes."""

from __future__ import annotations

import numpy as np
import pytest

from serve.catalog import SKYREELS_DF_BASE_FRAMES, SKYREELS_DF_SECTION_FRAMES, Task, get_spec
from serve.errors import InvalidArgument
from serve.request import RequestFields, build_request
from tests.support import png, tiny_engine, tiny_request

MODEL = "skyreels-v2-df-720p"


def test_windows_are_121_frames_then_104_each_up_to_a_minute():
    spec = get_spec(MODEL)
    assert (SKYREELS_DF_BASE_FRAMES, SKYREELS_DF_SECTION_FRAMES) == (121, 104)
    assert [spec.sections(n) for n in (1, 121, 122, 225, 226)] == [1, 1, 2, 2, 3]
    assert spec.frames_of_sections(14) >= spec.limits.num_frames.max == 60 * spec.limits.default_fps
    assert spec.task is Task.TI2V and spec.limits.default_height == 720


def test_a_clip_past_the_limit_names_the_field_and_range():
    spec = get_spec(MODEL)
    with pytest.raises(InvalidArgument) as error:
        build_request(spec, spec.limits, RequestFields(model=MODEL, prompt="a fox", num_frames=1441))
    assert error.value.field == "num_frames" and "[1, 1440]" in str(error.value)


def test_the_flow_shift_defaults_to_skyreels_own_and_reaches_the_windows_schedulers():
    request = tiny_request(MODEL, num_frames=SKYREELS_DF_BASE_FRAMES + 8, num_inference_steps=2)
    assert request.flow_shift == 8.0
    engine = tiny_engine(MODEL)
    kwargs = engine.pipeline_call_kwargs(request)
    # Two windows: the history overlap and re-noising are asked for; frames rounded up to 4k + 1.
    assert kwargs["overlap_history"] == 17 and kwargs["num_frames"] == 129 and kwargs["ar_step"] == 0
    assert "overlap_history" not in engine.pipeline_call_kwargs(tiny_request(MODEL, num_frames=121))


def test_with_an_image_the_image_pipeline_makes_the_clip_window_by_window():
    engine = tiny_engine(MODEL)
    frames = SKYREELS_DF_BASE_FRAMES + 20
    with_image = tiny_request(MODEL, num_frames=frames, image=png(), seed=4)
    assert type(engine.pipeline_for(with_image)).__name__ == "SkyReelsV2DiffusionForcingImageToVideoPipeline"
    sections: list[np.ndarray] = []
    engine.generate(with_image, on_section=lambda index, section: sections.append(section))
    assert [len(section) for section in sections] == [SKYREELS_DF_BASE_FRAMES, 20]
    text_clip = engine.generate(tiny_request(MODEL, num_frames=frames, seed=4)).frames
    assert len(text_clip) == frames
    # The image conditions the clip: the same seed without it makes other frames.
    assert np.abs(np.concatenate(sections).astype(int) - text_clip.astype(int)).mean() > 1


def test_without_frames_progress_still_counts_over_every_window():
    # Benchmarks stop at the latents: no window is decoded, yet the steps count over the whole clip.
    engine = tiny_engine(MODEL)
    request = tiny_request(MODEL, num_frames=SKYREELS_DF_BASE_FRAMES + 30, num_inference_steps=2)
    events = []
    engine.generate(request, on_progress=events.append, decode=False)
    denoising = [e for e in events if e.stage == "denoising"]
    assert [(e.step, e.total_steps, e.section) for e in denoising] == [
        (1, 4, 1),
        (2, 4, 1),
        (3, 4, 2),
        (4, 4, 2),
    ]
    assert [e.step for e in events if e.stage == "encoding"] == [4]
