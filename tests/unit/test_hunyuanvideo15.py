"""HunyuanVideo 1.5 (t2v, i2v) through the real pipelines on tiny checkpoints: guidance through the
pipeline's guider, the requested size for image-to-video, step caching of its blocks."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from serve.catalog import get_spec
from serve.errors import InvalidArgument
from serve.request import RequestFields, build_request
from tests.support import first_block_cache_runs, png, tiny_engine, tiny_request

T2V, I2V = "hunyuanvideo-1.5", "hunyuanvideo-1.5-i2v"


@pytest.mark.parametrize(
    ("model", "fields", "field", "message"),
    [
        (T2V, {"flow_shift": 25.0}, "flow_shift", "25 is outside the allowed range [0.5, 20]"),
        (T2V, {"num_frames": 122}, "num_frames", "in steps of 4 from 1"),
        (T2V, {"height": 500}, "height", "in steps of 16"),
        (T2V, {"image": png()}, "image", "takes no image"),
        (I2V, {}, "image", "needs an image"),
        (T2V, {"guidance_scale_2": 2.0}, "guidance_scale_2", "not accepted by model"),
    ],
)
def test_hunyuanvideo15_fields_are_validated_by_name_and_range(model, fields, field, message):
    spec = get_spec(model)
    with pytest.raises(InvalidArgument) as error:
        build_request(spec, spec.limits, RequestFields(model=model, prompt="a fox", **fields))
    assert error.value.field == field and message in str(error.value)


@pytest.mark.parametrize("model", [T2V, I2V])
def test_guidance_reaches_the_guider_for_the_request_alone(model):
    engine = tiny_engine(model)
    guided = engine.generate(tiny_request(model, guidance_scale=6.0))
    unguided = engine.generate(tiny_request(model, guidance_scale=1.0))
    # Guidance 1 turns classifier-free guidance off: one forward a step instead of two.
    assert (guided.forwards.forwards, unguided.forwards.forwards) == (4, 2)
    assert engine.pipe.guider.guidance_scale == 6.0  # the checkpoint's guider again


def test_image_to_video_gives_the_requested_size_not_the_images_bucket():
    engine = tiny_engine(I2V)
    frames = engine.generate(tiny_request(I2V, image=png(64, 64), height=48, width=80)).frames
    assert frames.shape == (9, 48, 80, 3)
    assert "calculate_default_height_width" not in vars(engine.pipe.video_processor)  # restored
    green = io.BytesIO()
    Image.new("RGB", (64, 64), (20, 220, 40)).save(green, "PNG")
    other = engine.generate(tiny_request(I2V, image=green.getvalue(), height=48, width=80)).frames
    assert not np.array_equal(frames, other)  # the image conditions the video


@pytest.mark.parametrize("model", [T2V, I2V])
def test_first_block_cache_applies_to_hunyuanvideo15s_blocks(model):
    engine = tiny_engine(model)
    never, plain, skipping = first_block_cache_runs(engine, tiny_request(model, num_inference_steps=6))
    assert never.forwards.skipped == 0 and np.array_equal(never.frames, plain.frames)
    assert 0 < skipping.forwards.skipped < skipping.forwards.forwards == 12
