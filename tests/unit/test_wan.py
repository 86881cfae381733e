"""Wan 2.x through the real pipelines on tiny checkpoints: the knobs, the two experts of Wan 2.2 A14B,
and Wan 2.2 TI2V's text or image."""

from __future__ import annotations

import numpy as np
import pytest

from serve.catalog import CATALOG, Task, get_spec
from serve.engine import Engine
from serve.errors import InvalidArgument
from serve.request import RequestFields, build_request
from tests.support import png, tiny_engine, tiny_request

WAN = sorted(name for name in CATALOG if get_spec(name).family == "wan")
engine_for = tiny_engine


def build(model: str, **fields):
    spec = get_spec(model)
    defaults = {"prompt": "a red fox in the snow"}
    return build_request(spec, spec.tiny_limits, RequestFields(model=model, **{**defaults, **fields}))


def test_the_catalog_has_every_wan_model_the_issue_names():
    assert WAN == [
        "wan2.1-i2v-14b-720p",
        "wan2.1-t2v-1.3b",
        "wan2.1-t2v-14b",
        "wan2.2-i2v-a14b",
        "wan2.2-t2v-a14b",
        "wan2.2-ti2v-5b",
    ]
    assert [get_spec(m).experts for m in WAN] == [1, 1, 1, 2, 2, 1]
    assert get_spec("wan2.2-ti2v-5b").task is Task.TI2V


@pytest.mark.parametrize(
    ("model", "fields", "field", "message"),
    [
        (
            "wan2.2-t2v-a14b",
            {"guidance_scale_2": 31.0},
            "guidance_scale_2",
            "31 is outside the allowed range [0, 30]",
        ),
        (
            "wan2.2-t2v-a14b",
            {"boundary_ratio": 1.5},
            "boundary_ratio",
            "1.5 is outside the allowed range [0, 1]",
        ),
        ("wan2.2-t2v-a14b", {"boundary_ratio": float("nan")}, "boundary_ratio", "finite"),
        ("wan2.1-t2v-1.3b", {"flow_shift": 0.1}, "flow_shift", "0.1 is outside the allowed range [0.5, 20]"),
        ("wan2.1-t2v-1.3b", {"guidance_scale_2": 3.0}, "guidance_scale_2", "not accepted by model"),
        ("wan2.1-t2v-14b", {"boundary_ratio": 0.5}, "boundary_ratio", "not accepted by model"),
        ("hunyuanvideo", {"flow_shift": 5.0}, "flow_shift", "not accepted by model"),
        ("wan2.1-t2v-1.3b", {"num_frames": 8}, "num_frames", "in steps of 4 from 1"),
        ("wan2.2-ti2v-5b", {"height": 48}, "height", "in steps of 32"),
        ("wan2.2-i2v-a14b", {}, "image", "needs an image"),
        ("wan2.1-t2v-14b", {"image": png()}, "image", "takes no image"),
    ],
)
def test_each_wan_field_is_validated_by_name_and_range(model, fields, field, message):
    with pytest.raises(InvalidArgument) as error:
        build(model, **fields)
    assert error.value.field == field and message in str(error.value)


def test_knob_defaults_come_from_the_model_and_unset_ones_keep_the_checkpoints():
    request = build("wan2.2-t2v-a14b")
    assert request.guidance_scale_2 == 3.0  # the model card's low-noise guidance
    assert request.boundary_ratio is None and request.flow_shift is None
    assert build("wan2.2-i2v-a14b", image=png()).guidance_scale_2 == 3.5
    kwargs = engine_for("wan2.2-t2v-a14b").pipeline_call_kwargs(
        build("wan2.2-t2v-a14b", guidance_scale_2=2.0)
    )
    assert kwargs["guidance_scale_2"] == 2.0
    assert "guidance_scale_2" not in engine_for("wan2.1-t2v-1.3b").pipeline_call_kwargs(
        build("wan2.1-t2v-1.3b")
    )


def _expert_of_each_forward(engine: Engine, request) -> list[str]:
    order: list[str] = []
    pipe = engine.pipe
    handles = [
        module.register_forward_pre_hook(lambda *_, name=name: order.append(name))
        for name, module in (("high", pipe.transformer), ("low", pipe.transformer_2))
    ]
    try:
        engine.generate(request)
    finally:
        for handle in handles:
            handle.remove()
    return order


def _steps_above(engine: Engine, steps: int, boundary: float, shift: float) -> int:
    """How many of the schedule's timesteps are at or above the boundary (the high-noise expert's)."""
    scheduler = type(engine.pipe.scheduler).from_config(engine.pipe.scheduler.config, flow_shift=shift)
    scheduler.set_timesteps(steps)
    return int((scheduler.timesteps >= boundary * scheduler.config.num_train_timesteps).sum())


def test_the_low_noise_expert_runs_the_steps_after_the_boundary():
    engine = engine_for("wan2.2-t2v-a14b")
    steps, shift = 6, 3.0
    high = _steps_above(engine, steps, 0.5, shift)
    assert 0 < high < steps  # a boundary in the middle of this schedule
    order = _expert_of_each_forward(
        engine, build("wan2.2-t2v-a14b", num_inference_steps=steps, boundary_ratio=0.5, flow_shift=shift)
    )
    # Two forwards a step (classifier-free guidance): the high-noise expert first, then only the low.
    assert order == ["high"] * (2 * high) + ["low"] * (2 * (steps - high))
    # The boundary and the shift are the request's alone: the checkpoint's come back afterwards.
    assert engine.pipe.config.boundary_ratio == 0.875
    assert engine.pipe.scheduler.config.flow_shift == 3.0
    # Another shift moves the same boundary to another step; at the ends one expert runs every step.
    steep = _steps_above(engine, steps, 0.5, 12.0)
    assert steep != high
    order = _expert_of_each_forward(
        engine, build("wan2.2-t2v-a14b", num_inference_steps=steps, boundary_ratio=0.5, flow_shift=12.0)
    )
    assert order.count("high") == 2 * steep
    assert set(
        _expert_of_each_forward(
            engine, build("wan2.2-t2v-a14b", num_inference_steps=steps, boundary_ratio=0.0)
        )
    ) == {"high"}
    assert set(
        _expert_of_each_forward(
            engine, build("wan2.2-t2v-a14b", num_inference_steps=steps, boundary_ratio=1.0)
        )
    ) == {"low"}


def test_step_caching_covers_both_experts():
    from serve.catalog import CachePolicy, StepCache

    engine = engine_for("wan2.2-t2v-a14b")
    cache = StepCache(policy=CachePolicy.FIRST_BLOCK, threshold=0.0)
    plain = engine.generate(tiny_request("wan2.2-t2v-a14b", num_inference_steps=4, boundary_ratio=0.5))
    cached = engine.generate(
        tiny_request("wan2.2-t2v-a14b", num_inference_steps=4, boundary_ratio=0.5).model_copy(
            update={"cache": cache}
        )
    )
    # Threshold 0 never skips: every forward of both experts counted, the frames unchanged.
    assert cached.forwards.forwards == plain.forwards.forwards == 8 and cached.forwards.skipped == 0
    assert np.array_equal(plain.frames, cached.frames)
    skipping = engine.generate(
        tiny_request("wan2.2-t2v-a14b", num_inference_steps=8, boundary_ratio=0.5).model_copy(
            update={"cache": StepCache(policy=CachePolicy.FIRST_BLOCK, threshold=1.0)}
        )
    )
    assert 0 < skipping.forwards.skipped < skipping.forwards.forwards == 16


def test_ti2v_makes_a_video_from_text_alone_or_from_an_image():
    engine = engine_for("wan2.2-ti2v-5b")
    text_only = engine.generate(tiny_request("wan2.2-ti2v-5b")).frames
    assert engine.image_pipe is None  # no image yet: the text pipeline alone
    red = engine.generate(tiny_request("wan2.2-ti2v-5b", image=png(32, 32))).frames
    assert type(engine.image_pipe).__name__ == "WanImageToVideoPipeline"
    assert engine.image_pipe.transformer is engine.pipe.transformer  # the same weights, loaded once
    assert engine.image_pipe.config.expand_timesteps
    assert text_only.shape == red.shape == (9, 32, 32, 3)
    assert not np.array_equal(text_only, red)
