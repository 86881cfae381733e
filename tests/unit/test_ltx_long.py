"""LTX-Video long multi-prompt on its tiny checkpoint: windows by the catalog's geometry, a prompt per
window, text or image to video through the real pipeline, and the prompts and limits it takes."""

from __future__ import annotations

import numpy as np
import pytest

from serve.catalog import LTX_LONG_FIRST_FRAMES, LTX_LONG_SECTION_FRAMES, Task, get_spec
from serve.errors import InvalidArgument
from serve.families.ltx_long import DISTILLED_SIGMAS, sigmas
from serve.hooks import replaced
from serve.request import RequestFields, build_request
from tests.support import png, tiny_engine, tiny_request

MODEL = "ltx-video-long"


def test_windows_are_73_frames_then_56_each_up_to_a_minute():
    spec = get_spec(MODEL)
    assert (LTX_LONG_FIRST_FRAMES, LTX_LONG_SECTION_FRAMES) == (73, 56)
    assert [spec.sections(n) for n in (1, 73, 74, 129, 130)] == [1, 1, 2, 2, 3]
    assert spec.frames_of_sections(26) >= spec.limits.num_frames.max > 60 * spec.limits.default_fps
    assert spec.task is Task.TI2V and not spec.progressive and spec.prompt_per_section


def _fields(**values: object) -> RequestFields:
    return RequestFields(model=MODEL, **{"prompt": "a fox", **values})


def test_more_prompts_than_windows_or_an_empty_one_names_the_prompt():
    spec = get_spec(MODEL)
    with pytest.raises(InvalidArgument) as error:
        build_request(spec, spec.limits, _fields(prompt="a fox | a wolf", num_frames=73))
    assert (
        error.value.field == "prompt" and "2 prompts" in str(error.value) and "1 section" in str(error.value)
    )
    with pytest.raises(InvalidArgument) as error:
        build_request(spec, spec.limits, _fields(prompt="a fox || a wolf", num_frames=300))
    assert error.value.field == "prompt" and "section 2's prompt is empty" in str(error.value)
    assert build_request(spec, spec.limits, _fields(prompt="a fox | a wolf", num_frames=74)).num_frames == 74


def test_a_clip_past_the_limit_names_the_field_and_range():
    spec = get_spec(MODEL)
    with pytest.raises(InvalidArgument) as error:
        build_request(spec, spec.limits, _fields(num_frames=1442))
    assert error.value.field == "num_frames" and "[1, 1441]" in str(error.value)
    with pytest.raises(InvalidArgument) as error:
        build_request(spec, spec.limits, _fields(num_inference_steps=51))
    assert error.value.field == "num_inference_steps" and "[1, 50]" in str(error.value)


def test_every_window_runs_its_schedule_down_to_sigma_zero():
    # The pipeline steps through all its scheduler's timesteps but the last: given sigmas ending in 0, it
    # ends each window clean. The distilled model's own schedule at its 8 steps; evenly spaced otherwise.
    assert sigmas(8) == list(DISTILLED_SIGMAS) and sigmas(3) == pytest.approx([1.0, 2 / 3, 1 / 3, 0.0])
    engine = tiny_engine(MODEL)
    request = tiny_request(MODEL, num_frames=get_spec(MODEL).frames_of_sections(2), num_inference_steps=3)
    stepped_to: list[float] = []
    step = engine.pipe.scheduler.step

    def recording(*args, **kwargs):
        result = step(*args, **kwargs)
        scheduler = engine.pipe.scheduler
        stepped_to.append(float(scheduler.sigmas[scheduler.step_index]))
        return result

    with replaced(engine.pipe.scheduler, "step", recording):
        output = engine.generate(request)
    assert stepped_to == pytest.approx([2 / 3, 1 / 3, 0.0] * 2)
    assert output.steps_completed == 6 == engine.section_plan(request).total_steps


def test_each_window_is_prompted_with_its_own_part_and_the_last_goes_on():
    engine = tiny_engine(MODEL)
    request = tiny_request(
        MODEL, prompt="a fox | a wolf", num_frames=get_spec(MODEL).frames_of_sections(3) - 2
    )
    encoded: list[str] = []
    encode = engine.pipe.encode_prompt

    def recording(prompt, *args, **kwargs):
        encoded.extend(prompt)
        return encode(prompt, *args, **kwargs)

    with replaced(engine.pipe, "encode_prompt", recording):
        output = engine.generate(request)
    assert encoded == ["a fox", "a wolf", "a wolf"]
    assert output.frame_count == request.num_frames == len(output.frames)
    # The window boundaries are the catalog's: one latent video of whole windows; every window's noise
    # comes from the request's generator (no per-window seed of the pipeline's own).
    kwargs = engine.pipeline_call_kwargs(request)
    assert kwargs["num_frames"] == get_spec(MODEL).frames_of_sections(3) and kwargs["seed"] is None


def test_an_image_conditions_the_first_frame_and_a_seed_repeats():
    engine = tiny_engine(MODEL)
    text = engine.generate(tiny_request(MODEL, seed=4)).frames
    assert np.array_equal(text, engine.generate(tiny_request(MODEL, seed=4)).frames)
    with_image = engine.generate(tiny_request(MODEL, seed=4, image=png(32, 32))).frames
    assert with_image.shape == text.shape and not np.array_equal(with_image[0], text[0])
