"""Step caching: the same video at threshold 0, fewer forwards above it, one decision for all ranks."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from serve.catalog import CachePolicy, StepCache
from serve.ports import free_port
from serve.step_cache import step_cache
from serve.tiny import build_tiny_pipeline

FIRST_BLOCK = CachePolicy.FIRST_BLOCK


def run_steps(transformer: torch.nn.Module, latents: torch.Tensor, steps: int) -> torch.Tensor:
    """A flow-matching Euler loop over the tiny HunyuanVideo transformer, with fixed text conditioning."""
    generator = torch.Generator().manual_seed(0)
    text = torch.randn(1, 8, 32, generator=generator)
    pooled = torch.randn(1, 32, generator=generator)
    sigmas = torch.linspace(1.0, 0.0, steps + 1)
    with torch.inference_mode():
        for i in range(steps):
            with transformer.cache_context("cond"):
                velocity = transformer(
                    hidden_states=latents,
                    timestep=torch.tensor([sigmas[i] * 1000]),
                    encoder_hidden_states=text,
                    encoder_attention_mask=torch.ones(1, 8, dtype=torch.int64),
                    pooled_projections=pooled,
                    guidance=torch.tensor([6000.0]),
                    return_dict=False,
                )[0]
            latents = latents + (sigmas[i + 1] - sigmas[i]) * velocity
    return latents


@pytest.fixture(scope="module")
def transformer() -> torch.nn.Module:
    return build_tiny_pipeline("hunyuanvideo").transformer


def latents(seed: int = 1) -> torch.Tensor:
    return torch.randn(1, 16, 3, 4, 4, generator=torch.Generator().manual_seed(seed))


def test_threshold_0_gives_exactly_the_uncached_result_and_counts_every_forward(transformer):
    with step_cache(transformer, StepCache()) as off:
        uncached = run_steps(transformer, latents(), 8)
    with step_cache(transformer, StepCache(policy=FIRST_BLOCK, threshold=0.0)) as never:
        cached = run_steps(transformer, latents(), 8)

    assert torch.equal(uncached, cached)
    assert (off.forwards, off.skipped) == (8, 0)
    assert (never.forwards, never.skipped) == (8, 0) and never.decisions == [True] * 7  # step 1 has no past


def test_a_threshold_skips_forwards_and_the_next_request_starts_without_the_last_ones_cache(transformer):
    cache = StepCache(policy=FIRST_BLOCK, threshold=0.3)
    with step_cache(transformer, cache) as first:
        run_steps(transformer, latents(), 12)
    with step_cache(transformer, cache) as second:
        run_steps(transformer, latents(), 12)
    with step_cache(transformer, StepCache()) as after:
        run_steps(transformer, latents(), 2)

    assert 0 < first.skipped < first.forwards == 12
    assert second.decisions == first.decisions  # no state carried from one request to the next
    assert after.skipped == 0 and not after.decisions  # hooks removed with the block


RANK = """
import json, sys, datetime
import torch, torch.distributed as dist
sys.path.insert(0, ".")
from serve.catalog import CachePolicy, StepCache
from serve.step_cache import step_cache
from serve.tiny import build_tiny_pipeline
from tests.unit.test_step_cache import run_steps

rank, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                        timeout=datetime.timedelta(seconds=60))
transformer = build_tiny_pipeline("hunyuanvideo").transformer
# Each rank holds other tokens (its shard): alone, their measures would lead to other decisions.
shard = torch.randn(1, 16, 3, 4, 4, generator=torch.Generator().manual_seed(100 + rank)) * (1 + 3 * rank)
cache = StepCache(policy=CachePolicy.FIRST_BLOCK, threshold=0.3)

def reduce(tensor):
    dist.all_reduce(tensor)
    return tensor

with step_cache(transformer, cache, reduce) as shared:
    run_steps(transformer, shard, 12)
with step_cache(transformer, cache) as alone:
    run_steps(transformer, shard, 12)
json.dump({"shared": shared.decisions, "alone": alone.decisions}, open(out, "w"))
dist.destroy_process_group()
"""


def test_ranks_with_different_shards_take_the_same_decisions_and_never_hang(tmp_path):
    port = free_port()
    outs = [tmp_path / f"rank{rank}.json" for rank in range(2)]
    ranks = [
        subprocess.Popen(
            [sys.executable, "-c", RANK, str(rank), str(port), str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank, out in enumerate(outs)
    ]
    try:
        codes = [rank.wait(timeout=240) for rank in ranks]  # a disagreement would hang a collective
    finally:
        for rank in ranks:
            rank.kill()
    assert codes == [0, 0], [rank.stderr.read()[-2000:] for rank in ranks]
    results = [json.loads(out.read_text()) for out in outs]

    # Alone, the ranks decide differently on their own shards: exactly what would hang the next collective.
    assert results[0]["alone"] != results[1]["alone"]
    assert results[0]["shared"] == results[1]["shared"]
    assert False in results[0]["shared"] and True in results[0]["shared"]


def test_the_frames_of_the_float_path_change_little_where_steps_were_skipped(transformer):
    with step_cache(transformer, StepCache()) as _:
        uncached = run_steps(transformer, latents(), 12)
    with step_cache(transformer, StepCache(policy=FIRST_BLOCK, threshold=0.3)) as cached_counts:
        cached = run_steps(transformer, latents(), 12)
    assert cached_counts.skipped > 0
    change = float((cached - uncached).abs().max() / uncached.abs().max())
    assert 0 < change < 0.5, change
    assert np.isfinite(cached.numpy()).all()
