"""Hostile requests: image bombs and foreign formats, the frames x resolution budget, NaN and overflow."""

from __future__ import annotations

import pytest
from PIL import Image

from serve.catalog import get_spec
from serve.config import ModelDeployment
from serve.errors import InvalidArgument
from serve.request import MAX_IMAGE_PIXELS, RequestFields, build_request, decode_image
from tests.support import encoded, png, png_header_only


def reason(data: bytes) -> str:
    with pytest.raises(InvalidArgument) as error:
        decode_image(data)
    assert error.value.field == "image"
    return error.value.message


@pytest.mark.parametrize("side", [20_000, 60_000])
def test_decompression_bombs_are_refused_before_decoding(side):
    # 400M pixels trips PIL's warning (now an error); 3.6G pixels its hard error: both name the field.
    assert "decompression bomb" in reason(png_header_only(side, side))


def test_images_over_the_pixel_limit_are_refused_from_the_header():
    side = int(MAX_IMAGE_PIXELS**0.5) + 1
    assert "pixels" in reason(png_header_only(side, side))


@pytest.mark.parametrize("image_format", ["GIF", "BMP", "TIFF", "ICO", "PPM"])
def test_formats_outside_png_jpeg_webp_never_reach_a_decoder(image_format):
    assert f"format {image_format} is not one of" in reason(encoded(image_format))


def test_a_foreign_format_parser_is_not_even_called(monkeypatch):
    Image.init()
    factory, accept = Image.OPEN["BMP"]
    calls = []
    monkeypatch.setitem(Image.OPEN, "BMP", (lambda *args: calls.append(args) or factory(*args), accept))
    reason(encoded("BMP"))
    assert calls == []


@pytest.mark.parametrize("image_format", ["PNG", "JPEG", "WEBP"])
def test_the_accepted_formats_decode(image_format):
    assert decode_image(encoded(image_format)).size == (16, 16)


def test_a_truncated_image_is_refused():
    assert "does not decode" in reason(png(256, 256)[:-200])


def budget_request(model: str, budget: int | None, **fields):
    spec = get_spec(model)
    return build_request(
        spec, spec.limits, RequestFields(model=model, prompt="a fox", **fields), max_video_pixels=budget
    )


def test_frames_times_resolution_over_the_budget_is_invalid_argument_naming_num_frames():
    budget = ModelDeployment(name="hunyuanvideo", weights="hub").video_pixel_budget()
    assert budget == 129 * 720 * 1280
    # Each value alone is within its range; together they exceed what the catalog's memory estimate covers.
    with pytest.raises(InvalidArgument) as error:
        budget_request("hunyuanvideo", budget, num_frames=129, height=1280, width=1280)
    assert error.value.field == "num_frames" and "budget" in error.value.message
    assert budget_request("hunyuanvideo", budget, num_frames=129, height=720, width=1280).num_frames == 129
    assert budget_request("hunyuanvideo", budget, num_frames=65, height=1280, width=1280).height == 1280


def test_video_pixel_budget_is_configurable_and_absent_for_tiny_checkpoints():
    assert ModelDeployment(name="svd", weights="tiny").video_pixel_budget() is None
    assert ModelDeployment(name="svd", weights="tiny", max_video_pixels=1000).video_pixel_budget() == 1000
    assert ModelDeployment(name="svd", weights="hub").video_pixel_budget() == 14 * 576 * 1024


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"guidance_scale": float("inf")}, "guidance_scale"),
        ({"guidance_scale": float("-inf")}, "guidance_scale"),
        ({"true_cfg_scale": float("nan")}, "true_cfg_scale"),
        ({"seed": -1}, "seed"),
        ({"num_frames": -5}, "num_frames"),
        ({"height": 2**31 - 1}, "height"),
        ({"prompt": "x" * 2001}, "prompt"),
        ({"negative_prompt": "x" * 2001}, "negative_prompt"),
    ],
)
def test_non_finite_negative_and_oversized_values_name_their_field(fields, field):
    spec = get_spec("hunyuanvideo")
    with pytest.raises(InvalidArgument) as error:
        build_request(
            spec, spec.limits, RequestFields(**{"model": "hunyuanvideo", "prompt": "a fox", **fields})
        )
    assert error.value.field == field
