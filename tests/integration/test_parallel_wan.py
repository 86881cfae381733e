"""The 2026 DiTs across 2 ranks (xDiT's Ulysses over gloo on the CPU) against one process: the same
frames, for Wan 2.1 (one transformer), Wan 2.2 A14B (both experts split over the ranks) and HunyuanVideo
1.5."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import ray
import torch

from parallel.group import GroupTimeouts, ParallelEngine
from serve.catalog import MemoryOptions, get_spec
from serve.config import ParallelOptions
from serve.engine import Engine
from serve.request import RequestFields, build_request

pytestmark = pytest.mark.integration

TIMEOUTS = GroupTimeouts(setup_s=180, collective_s=60, request_s=180, cancel_grace_s=60)
BOUND = 1e-4  # as for HunyuanVideo: float32 on the CPU, only the reduction order differs


def request(model: str, **fields):
    spec = get_spec(model)
    return build_request(
        spec, spec.tiny_limits, RequestFields(model=model, prompt="a red fox in the snow", seed=11, **fields)
    )


XDIT_CLASSES = {
    "wan": "xFuserWanTransformer3DWrapper",
    "hunyuanvideo15": "xFuserHunyuanVideo15Transformer3DWrapper",
}


@pytest.fixture(scope="module", params=["wan2.1-t2v-14b", "wan2.2-t2v-a14b", "hunyuanvideo-1.5"])
def engines(request, ray_cluster, tiny_dir) -> Iterator[tuple[Engine, ParallelEngine]]:
    model = request.param
    spec = get_spec(model)
    single = Engine(spec, str(tiny_dir / model), MemoryOptions())
    single.load()
    parallel = ParallelEngine(
        spec,
        str(tiny_dir / model),
        MemoryOptions(),
        ParallelOptions(ulysses_degree=2),
        TIMEOUTS,
        gpus_per_rank=0.5,
    )
    parallel.load()
    yield single, parallel
    parallel.shutdown()


def test_two_ulysses_ranks_give_the_frames_of_one_process(engines):
    single, parallel = engines
    model = single.spec.name
    fields = {
        "num_inference_steps": 4,
        "height": 32,
        "width": 64 if single.spec.family == "hunyuanvideo15" else 48,
    }
    if single.spec.experts == 2:
        fields["boundary_ratio"] = 0.5  # both experts take steps
    with torch.inference_mode():
        alone = single.float_frames(request(model, **fields))
    split = parallel.frames(request(model, **fields))
    assert split.frames.shape == alone.frames.shape == (9, 32, fields["width"], 3)
    difference = float(np.abs(split.frames - alone.frames).max())
    assert difference < BOUND, difference
    assert split.forwards.forwards == alone.forwards.forwards  # every forward of each expert, on each rank
    # Each expert is xDiT's sequence-parallel transformer on every rank; only rank 0 holds text encoders.
    encoders = (
        ["text_encoder", "text_encoder_2"] if single.spec.family == "hunyuanvideo15" else ["text_encoder"]
    )
    for rank in parallel.ranks:
        info = ray.get(rank.info.remote())
        assert info["denoisers"] == [XDIT_CLASSES[single.spec.family]] * single.spec.experts
        assert info["text_encoders"] == (encoders if rank is parallel.ranks[0] else [])
        assert info["vae_split"] == "rows"  # DistVAE has decoder adapters for both families' VAEs
