"""text_encoder_offload: the encoders stay in host memory and run only through the offload hook.

No GPU here: the host-to-device copy itself cannot happen, so these assert what can fail on the CPU (the
hook is on every encoder and runs each encode, the frames do not change, the options that cannot combine
are refused, the catalog's estimate follows); the CUDA path is the same code with a real device.
"""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from serve.catalog import MemoryOptions, get_spec
from serve.engine import Engine
from serve.text_encoder_offload import OnDeviceWhileEncoding, device_bytes, text_encoders
from tests.support import tiny_request

SPEC = get_spec("hunyuanvideo")


def frames(engine: Engine) -> np.ndarray:
    return engine.float_frames(tiny_request(SPEC.name, seed=5)).frames


def test_the_encoders_run_through_the_hook_and_the_frames_do_not_change():
    plain = Engine(SPEC, "tiny", MemoryOptions())
    offloaded = Engine(SPEC, "tiny", MemoryOptions(text_encoder_offload=True))
    plain.load()
    offloaded.load()

    encoders = text_encoders(offloaded.pipe)
    hooks = {name: module._hf_hook for name, module in encoders.items()}
    assert sorted(hooks) == ["text_encoder", "text_encoder_2"]
    assert all(isinstance(hook, OnDeviceWhileEncoding) for hook in hooks.values())

    assert np.array_equal(frames(offloaded), frames(plain))
    assert all(hook.forwards == 1 for hook in hooks.values())  # one prompt, one encode per encoder
    # Between requests no encoder weight is on an accelerator.
    assert all(device_bytes(module) == 0 for module in encoders.values())
    assert offloaded.pipe._execution_device == offloaded.device


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"cpu_offload": True}, "part of cpu_offload"),
        ({"text_encoder_quantization": "nf4"}, "cannot move between host and GPU"),
    ],
)
def test_options_that_cannot_combine_with_it_are_refused_saying_why(options, message):
    with pytest.raises(ValidationError, match=message):
        MemoryOptions(text_encoder_offload=True, **options)


def test_the_catalog_estimate_leaves_out_the_encoders_where_a_gpu_does_not_hold_them():
    on_gpu = SPEC.memory.model_copy(update={"text_encoder_offload": False})
    assert SPEC.gpu_memory_estimate_gb(on_gpu) == SPEC.gpu_memory_gb
    assert SPEC.gpu_memory_estimate_gb(on_gpu, rank=1) == SPEC.gpu_memory_gb - SPEC.text_encoder_gb
    # HunyuanVideo's default memory options offload them: under the 40 GB per GPU of the speed target.
    assert SPEC.memory.text_encoder_offload and SPEC.gpu_memory_estimate_gb() <= 40
