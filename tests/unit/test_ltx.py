"""LTX-Video through the real pipelines on its tiny checkpoint: the frame and size rules, the decoder's
knobs, and text or image."""

from __future__ import annotations

import numpy as np
import pytest

from serve.catalog import Task, get_spec
from serve.engine import Engine
from serve.errors import InvalidArgument
from serve.request import RequestFields, build_request
from tests.support import png, tiny_request

MODEL = "ltx-video"


@pytest.fixture(scope="module")
def engine() -> Engine:
    engine = Engine(get_spec(MODEL), "tiny")
    engine.load()
    return engine


def build(tiny: bool = True, **fields):
    spec = get_spec(MODEL)
    limits = spec.limits_for(tiny)
    return build_request(spec, limits, RequestFields(model=MODEL, **{"prompt": "a fox", **fields}))


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"num_frames": 120}, "num_frames", "in steps of 8 from 9"),  # frames = 8k + 1
        ({"height": 500}, "height", "in steps of 32"),
        ({"width": 700}, "width", "in steps of 32"),
        ({"decode_timestep": 1.5}, "decode_timestep", "1.5 is outside the allowed range [0, 1]"),
        ({"decode_noise_scale": -0.1}, "decode_noise_scale", "-0.1 is outside the allowed range [0, 1]"),
        ({"flow_shift": 3.0}, "flow_shift", "not accepted by model 'ltx-video'"),
    ],
)
def test_ltx_rules_and_knobs_are_validated_by_name_and_range(fields, field, message):
    with pytest.raises(InvalidArgument) as error:
        build(tiny=False, **fields)
    assert error.value.field == field and message in str(error.value)


def test_real_defaults_follow_the_model_card_and_the_knobs_reach_the_pipeline(engine):
    real = build(tiny=False)
    assert (real.width, real.height, real.num_frames, real.fps) == (704, 480, 121, 24)
    assert (real.decode_timestep, real.decode_noise_scale) == (0.03, 0.025)
    kwargs = engine.pipeline_call_kwargs(build(decode_timestep=0.1, fps=12))
    assert (kwargs["decode_timestep"], kwargs["decode_noise_scale"], kwargs["frame_rate"]) == (0.1, 0.025, 12)
    # The decoder is timestep-conditioned: another decode timestep decodes other frames.
    first = engine.generate(tiny_request(MODEL, decode_timestep=0.0, decode_noise_scale=0.0)).frames
    other = engine.generate(tiny_request(MODEL, decode_timestep=0.5, decode_noise_scale=0.0)).frames
    assert not np.array_equal(first, other)


def test_ltx_makes_a_video_from_text_alone_or_from_an_image(engine):
    assert get_spec(MODEL).task is Task.TI2V
    text_only = engine.generate(tiny_request(MODEL)).frames
    with_image = engine.generate(tiny_request(MODEL, image=png(32, 32))).frames
    assert type(engine.image_pipe).__name__ == "LTXImageToVideoPipeline"
    assert engine.image_pipe.vae is engine.pipe.vae
    assert text_only.shape == with_image.shape == (9, 32, 32, 3)
    assert not np.array_equal(text_only, with_image)
