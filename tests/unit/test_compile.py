"""torch.compile of the transformer blocks (serve/compile.py) on the CPU: inductor, the system C++ compiler.

The first request compiles (about 25 s for tiny HunyuanVideo's two block classes on 2 cores); what must hold
is that the output matches eager, and that after it a request, cached or not, compiles nothing more: the
warm-up pays for everything a caller at the default size would.
"""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from serve.catalog import CachePolicy, MemoryOptions, Task, get_spec
from serve.compile import CompileOptions, compiled_graphs
from serve.config import ModelDeployment
from serve.deployments import warmup_request
from serve.engine import Engine
from serve.request import decode_image
from tests.support import tiny_request

SPEC = get_spec("hunyuanvideo")
CACHED = {"num_inference_steps": 6, "cache_policy": CachePolicy.FIRST_BLOCK, "cache_threshold": 0.3}


def test_compiled_blocks_match_eager_and_after_the_warm_up_nothing_compiles_again():
    eager = Engine(SPEC, "tiny", MemoryOptions())
    compiled = Engine(SPEC, "tiny", MemoryOptions(), compile=CompileOptions())
    eager.load()
    compiled.load()
    assert compiled.compiled_blocks == 2  # one dual-stream and one single-stream block

    compiled.generate_video(warmup_request(ModelDeployment(name=SPEC.name, compile=CompileOptions())))
    graphs = compiled_graphs()
    assert graphs >= 2  # one per block class at least

    for fields in ({"seed": 5}, {"seed": 5, **CACHED}):
        request = tiny_request(SPEC.name, **fields)
        ours, theirs = compiled.float_frames(request), eager.float_frames(request)
        assert np.abs(ours.frames - theirs.frames).max() <= 1e-4
        assert ours.forwards.decisions == theirs.forwards.decisions
    assert compiled_graphs() == graphs  # neither request, nor the cache's hooks, recompiled


def test_compile_is_refused_for_a_unet_model_naming_those_it_applies_to():
    with pytest.raises(ValidationError, match=r"svd has a UNet.*hunyuanvideo"):
        ModelDeployment(name="svd", compile=CompileOptions())


def test_the_warm_up_is_the_default_request_with_warmup_steps_and_an_image_for_i2v():
    request = warmup_request(ModelDeployment(name="cogvideox-5b-i2v", compile=CompileOptions(warmup_steps=3)))
    limits = get_spec("cogvideox-5b-i2v").tiny_limits
    assert get_spec("cogvideox-5b-i2v").task is Task.I2V
    assert request.num_inference_steps == 3
    assert (request.width, request.height, request.num_frames) == (
        limits.default_width,
        limits.default_height,
        limits.default_num_frames,
    )
    assert decode_image(request.image).size == (limits.default_width, limits.default_height)
