"""Every validation rule of a generation request, each with the error it must give."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from serve.catalog import CATALOG, get_spec
from serve.errors import InvalidArgument
from serve.request import MAX_PROMPT_CHARS, RequestFields, build_request
from tests.support import png


def build(model: str, tiny: bool = False, **fields):
    spec = get_spec(model)
    return build_request(spec, spec.limits_for(tiny), RequestFields(model=model, **fields))


def test_defaults_come_from_the_catalog():
    request = build("cogvideox-5b", prompt="a fox", seed=3)
    assert (request.num_frames, request.fps, request.height, request.width) == (49, 8, 480, 720)
    assert request.num_inference_steps == 50 and request.guidance_scale == 6.0 and request.seed == 3


def test_tiny_defaults_are_small():
    request = build("hunyuanvideo", tiny=True, prompt="a fox")
    assert request.height <= 64 and request.num_inference_steps == 2


def test_missing_seed_is_drawn_and_reported():
    assert build("hunyuanvideo", prompt="a fox").seed >= 0


@pytest.mark.parametrize(
    ("model", "fields", "field", "fragment"),
    [
        ("cogvideox-5b", {"prompt": ""}, "prompt", "required"),
        ("cogvideox-5b", {"prompt": "x" * (MAX_PROMPT_CHARS + 1)}, "prompt", "characters"),
        ("cogvideox-5b", {"prompt": "a", "num_frames": 50}, "num_frames", "[9, 49] in steps of 8"),
        ("cogvideox-5b", {"prompt": "a", "num_frames": 57}, "num_frames", "outside"),
        ("cogvideox-5b", {"prompt": "a", "height": 481}, "height", "steps of 16"),
        ("cogvideox-5b", {"prompt": "a", "width": 4096}, "width", "outside"),
        ("cogvideox-5b", {"prompt": "a", "fps": 61}, "fps", "[1, 60]"),
        ("cogvideox-5b", {"prompt": "a", "num_inference_steps": 151}, "num_inference_steps", "[1, 150]"),
        ("cogvideox-5b", {"prompt": "a", "guidance_scale": float("nan")}, "guidance_scale", "finite"),
        ("cogvideox-5b", {"prompt": "a", "guidance_scale": float("inf")}, "guidance_scale", "finite"),
        ("cogvideox-5b", {"prompt": "a", "guidance_scale": -1.0}, "guidance_scale", "[0, 30]"),
        ("cogvideox-5b", {"prompt": "a", "seed": -1}, "seed", "outside"),
        ("cogvideox-5b", {"prompt": "a", "image": png()}, "image", "text-to-video"),
        ("cogvideox-5b", {"prompt": "a", "motion_bucket_id": 10}, "motion_bucket_id", "not accepted"),
        ("svd", {}, "image", "needs an image"),
        ("svd", {"image": b"not an image"}, "image", "does not decode"),
        ("svd", {"image": png(), "motion_bucket_id": 0}, "motion_bucket_id", "[1, 255]"),
        ("svd", {"image": png(), "noise_aug_strength": 1.5}, "noise_aug_strength", "[0, 1]"),
        ("svd", {"image": png(), "negative_prompt": "blur"}, "negative_prompt", "not accepted"),
        ("svd", {"image": png(), "decode_chunk_size": 0}, "decode_chunk_size", "[1, 128]"),
        ("hunyuanvideo", {"prompt": "a", "true_cfg_scale": 0.5}, "true_cfg_scale", "[1, 20]"),
        ("i2vgen-xl", {"prompt": "a", "image": png(5000, 5000)}, "image", "pixels"),
    ],
)
def test_invalid_field_is_rejected_with_its_name(model, fields, field, fragment):
    with pytest.raises(InvalidArgument) as error:
        build(model, **fields)
    assert error.value.field == field
    assert fragment in str(error.value)


def test_image_format_must_be_an_allowed_one():
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "BMP")
    with pytest.raises(InvalidArgument, match="format BMP"):
        build("svd", image=buffer.getvalue())


def test_svd_knobs_default_and_chunk_is_capped_by_frames():
    request = build("svd", image=png(), decode_chunk_size=100, num_frames=8)
    assert request.motion_bucket_id == 127 and request.noise_aug_strength == 0.02
    assert request.decode_chunk_size == 8


def test_every_catalog_default_is_inside_its_own_limits():
    for spec in CATALOG.values():
        for limits in (spec.limits, spec.tiny_limits):
            assert limits.num_frames.contains(limits.default_num_frames), spec.name
            assert limits.height.contains(limits.default_height), spec.name
            assert limits.width.contains(limits.default_width), spec.name
            assert limits.guidance_scale.contains(limits.default_guidance_scale), spec.name


def test_step_cache_defaults_to_the_deployments_and_a_request_may_choose_its_own():
    from serve.catalog import CachePolicy, StepCache

    spec = get_spec("hunyuanvideo")
    default = StepCache(policy=CachePolicy.FIRST_BLOCK, threshold=0.06)
    plain = build_request(
        spec, spec.limits, RequestFields(model="hunyuanvideo", prompt="fox"), default_cache=default
    )
    tuned = build_request(
        spec,
        spec.limits,
        RequestFields(model="hunyuanvideo", prompt="fox", cache_threshold=0.2),
        default_cache=default,
    )
    off = build_request(
        spec, spec.limits, RequestFields(model="hunyuanvideo", prompt="fox", cache_policy="off")
    )
    assert plain.cache == default and tuned.cache.threshold == 0.2 and off.cache.policy is CachePolicy.OFF


@pytest.mark.parametrize(
    ("model", "fields", "field", "message"),
    [
        (
            "svd",
            {"cache_policy": "first_block"},
            "cache_policy",
            "first_block is not accepted by model 'svd'",
        ),
        (
            "hunyuanvideo",
            {"cache_policy": "first_block", "cache_threshold": 1.5},
            "cache_threshold",
            "[0, 1]",
        ),
        (
            "hunyuanvideo",
            {"cache_policy": "first_block", "cache_threshold": float("nan")},
            "cache_threshold",
            "finite",
        ),
        ("hunyuanvideo", {"cache_threshold": 0.1}, "cache_threshold", "this request's is off"),
    ],
)
def test_step_cache_fields_are_checked_naming_the_field(model, fields, field, message):
    image = {"image": png()} if model == "svd" else {"prompt": "fox"}
    with pytest.raises(InvalidArgument) as error:
        build(model, tiny=True, **image, **fields)
    assert error.value.field == field and message in error.value.detail
