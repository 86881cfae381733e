"""The CUDA paths, switched on by the device that is present; skipped on the CPU.

Each has a CPU twin that covers the same logic: tests/unit/test_engine.py (generation, FP8
storage, FP8 GEMM refusal) and tests/integration/test_parallel_group.py (ranks over gloo).
"""

from __future__ import annotations

import pytest
import torch

from serve.catalog import MemoryOptions, get_spec
from serve.engine import Engine
from serve.video import probe_mp4
from tests.support import tiny_request

pytestmark = pytest.mark.gpu


def test_engine_places_the_pipeline_on_cuda_in_the_models_dtype():
    engine = Engine(get_spec("hunyuanvideo"), "tiny")
    engine.load()
    assert engine.device.type == "cuda"
    assert engine.pipe.transformer.dtype == torch.bfloat16
    video = engine.generate_video(tiny_request("hunyuanvideo"))
    assert probe_mp4(video.data)[0] == tiny_request("hunyuanvideo").num_frames
    assert video.peak_memory_bytes == torch.cuda.max_memory_allocated()


def test_same_seed_gives_the_same_frames_on_cuda():
    engine = Engine(get_spec("svd"), "tiny")
    engine.load()
    first = engine.generate(tiny_request("svd", seed=11)).frames
    assert (first == engine.generate(tiny_request("svd", seed=11)).frames).all()


def test_fp8_gemms_run_where_the_gpu_supports_them():
    from parallel.fp8 import fp8_gemms_supported

    if not fp8_gemms_supported():
        pytest.skip("FP8 GEMMs need compute capability 8.9+")
    engine = Engine(get_spec("hunyuanvideo"), "tiny", MemoryOptions(fp8_gemms=True))
    engine.load()
    assert engine.generate(tiny_request("hunyuanvideo")).frames.shape[0] > 0


def test_cpu_offload_keeps_weights_off_the_gpu_between_requests():
    engine = Engine(get_spec("animatediff"), "tiny", MemoryOptions(cpu_offload=True))
    engine.load()
    engine.generate(tiny_request("animatediff"))
    assert next(engine.pipe.unet.parameters()).device.type == "cpu"
