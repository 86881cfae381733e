"""HunyuanVideo-I2V through the real pipeline on its tiny checkpoint: Llava reads the image with the
prompt (the published prompt template, unchanged), the image's latent conditions the first frame, true
CFG and step caching as for HunyuanVideo."""

from __future__ import annotations

import io

import numpy as np
import pytest
from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video_image2video import DEFAULT_PROMPT_TEMPLATE
from PIL import Image

from serve.catalog import get_spec
from serve.errors import InvalidArgument
from serve.request import RequestFields, build_request
from tests.support import first_block_cache_runs, png, tiny_engine, tiny_request

MODEL = "hunyuanvideo-i2v"


@pytest.mark.parametrize(
    ("model", "fields", "field", "message"),
    [
        (MODEL, {}, "image", "needs an image"),
        ("hunyuanvideo", {"image": png()}, "image", "takes no image"),
        (MODEL, {"image": png(), "num_frames": 130}, "num_frames", "in steps of 4 from 1"),
        (MODEL, {"image": png(), "true_cfg_scale": 50.0}, "true_cfg_scale", "outside the allowed range"),
        (MODEL, {"image": png(), "flow_shift": 5.0}, "flow_shift", "not accepted by model"),
    ],
)
def test_fields_are_validated_by_name_and_range(model, fields, field, message):
    spec = get_spec(model)
    with pytest.raises(InvalidArgument) as error:
        build_request(spec, spec.limits, RequestFields(model=model, prompt="a fox", **fields))
    assert error.value.field == field and message in str(error.value)


def test_the_tiny_tokenizer_places_the_image_where_the_published_template_expects_it():
    tokenizer = tiny_engine(MODEL).pipe.tokenizer
    ids = tokenizer(DEFAULT_PROMPT_TEMPLATE["template"].format("a fox"))["input_ids"]
    assert ids.index(tokenizer.convert_tokens_to_ids("<image>")) == DEFAULT_PROMPT_TEMPLATE["image_emb_start"]
    vision = tiny_engine(MODEL).pipe.text_encoder.config.vision_config
    assert (vision.image_size // vision.patch_size) ** 2 == DEFAULT_PROMPT_TEMPLATE["image_emb_len"]


def test_the_image_conditions_a_video_of_the_requested_size():
    engine = tiny_engine(MODEL)
    first = engine.generate(tiny_request(MODEL, image=png(64, 64), height=48, width=80))
    assert first.frames.shape == (9, 48, 80, 3) and first.forwards.forwards == 2  # CFG-distilled
    green = io.BytesIO()
    Image.new("RGB", (64, 64), (20, 220, 40)).save(green, "PNG")
    other = engine.generate(tiny_request(MODEL, image=green.getvalue(), height=48, width=80))
    assert not np.array_equal(first.frames, other.frames)


def test_true_cfg_runs_a_second_forward_and_a_prompt_past_the_template_still_fits():
    engine = tiny_engine(MODEL)
    guided = engine.generate(tiny_request(MODEL, negative_prompt="blurry", true_cfg_scale=4.0))
    assert guided.forwards.forwards == 4
    # 1,500 bytes are truncated to the template's room (the pipeline then crops at the prompt's end).
    assert engine.generate(tiny_request(MODEL, prompt="a fox " * 250)).frames.shape == (9, 32, 32, 3)


def test_first_block_cache_applies_to_the_token_replace_blocks():
    engine = tiny_engine(MODEL)
    never, plain, skipping = first_block_cache_runs(engine, tiny_request(MODEL, num_inference_steps=6))
    assert never.forwards.skipped == 0 and np.array_equal(never.frames, plain.frames)
    assert 0 < skipping.forwards.skipped < skipping.forwards.forwards == 6


def test_with_true_cfg_each_branch_keeps_its_own_cache_state():
    engine = tiny_engine(MODEL)
    request = tiny_request(MODEL, num_inference_steps=6, negative_prompt="blurry", true_cfg_scale=4.0)
    never, plain, skipping = first_block_cache_runs(engine, request)
    assert never.forwards.skipped == 0 and np.array_equal(never.frames, plain.frames)
    # Each branch's first forward runs in full with no decision taken (nothing cached yet): two states, as
    # the text-to-video pipeline keeps; one shared state would have decided 11 times, not 10.
    assert skipping.forwards.forwards == 12 and len(skipping.forwards.decisions) == 10
    assert skipping.forwards.skipped > 0
