"""Parallel degrees: which combinations run HunyuanVideo, and errors that say what would."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from parallel.config import (
    HUNYUANVIDEO,
    ParallelConfigError,
    TransformerGeometry,
    attention_backend,
    uses_true_cfg,
    valid_combinations,
    validate,
    validate_request,
)
from parallel.group import placement_bundles
from serve.catalog import get_spec
from serve.config import ParallelOptions
from serve.errors import InvalidArgument
from serve.request import RequestFields, build_request

TINY = TransformerGeometry(num_attention_heads=2, patch_size=2, patch_size_t=1)


def request(**fields):
    spec = get_spec("hunyuanvideo")
    return build_request(
        spec, spec.tiny_limits, RequestFields(model="hunyuanvideo", prompt="a fox", **fields)
    )


def degrees(options: ParallelOptions) -> tuple[int, int, int]:
    return options.ulysses_degree, options.ring_degree, options.cfg_degree


def test_the_published_model_splits_into_118800_video_tokens_at_720p_129_frames():
    assert HUNYUANVIDEO.video_tokens(129, 720, 1280) == 118_800


def test_valid_combinations_of_8_gpus_use_head_divisors_for_ulysses():
    combos = {degrees(c) for c in valid_combinations(8, HUNYUANVIDEO)}
    assert combos == {(8, 1, 1), (4, 2, 1), (2, 4, 1), (1, 8, 1)}
    with_cfg = {degrees(c) for c in valid_combinations(8, HUNYUANVIDEO, true_cfg=True)}
    assert {(4, 1, 2), (2, 2, 2), (1, 4, 2)} <= with_cfg


def test_ulysses_must_divide_the_heads_and_the_error_lists_what_works():
    with pytest.raises(ParallelConfigError, match="does not divide the model's 2 attention heads") as error:
        validate(ParallelOptions(ulysses_degree=4), TINY)
    assert "ulysses=2 ring=2 cfg=1" in str(error.value)
    assert "ulysses=1 ring=4 cfg=1" in str(error.value)


def test_the_degrees_must_multiply_to_the_gpus_of_the_replica():
    with pytest.raises(ParallelConfigError, match=r"needs 2 GPUs .* has 4; valid for 4: ulysses=2 ring=2"):
        validate(ParallelOptions(ulysses_degree=2), TINY, world_size=4)
    assert validate(ParallelOptions(ulysses_degree=2, ring_degree=2), TINY, world_size=4)


def test_cfg_2_is_valid_only_where_true_cfg_is_used():
    with pytest.raises(ParallelConfigError, match="CFG-distilled"):
        validate(ParallelOptions(cfg_degree=2), TINY)
    assert validate(ParallelOptions(cfg_degree=2), TINY, true_cfg=True)


def test_a_request_whose_tokens_do_not_split_evenly_is_invalid_argument():
    # 32x48 at 9 frames: 3 latent frames x 2 x 3 patches = 18 tokens, not a multiple of 4.
    with pytest.raises(InvalidArgument, match="18 video tokens") as error:
        validate_request(ParallelOptions(ulysses_degree=2, ring_degree=2), TINY, request(width=48))
    assert error.value.field == "height"
    validate_request(ParallelOptions(ulysses_degree=2), TINY, request(width=48))


def test_a_split_vae_decode_needs_a_latent_row_per_rank_and_says_the_least_height():
    four_ranks = ParallelOptions(ulysses_degree=2, ring_degree=2)
    # 16 px: 2 latent rows for 4 ranks.
    with pytest.raises(InvalidArgument, match=r"2 latent rows.*at least 32") as error:
        validate_request(four_ranks, TINY, request(height=16, width=128))
    assert error.value.field == "height"
    validate_request(
        four_ranks.model_copy(update={"parallel_vae": False}), TINY, request(height=16, width=128)
    )
    validate_request(four_ranks, TINY, request(height=32, width=64))


@pytest.mark.parametrize("backend", ["sdpa", "sdpa_math", "flash_4"])
def test_a_backend_without_log_sum_exp_cannot_run_ring_and_the_error_names_one_that_can(backend):
    with pytest.raises(ValueError, match=rf"attention_backend .{backend}. cannot run ring_degree=2.*cudnn"):
        ParallelOptions(ring_degree=2, attention_backend=backend)
    assert ParallelOptions(ulysses_degree=2, attention_backend=backend).attention_backend == backend


def test_ring_on_a_gpu_gets_a_ring_capable_backend_when_none_is_named():
    assert attention_backend(ParallelOptions(ring_degree=2), on_gpu=True) == "CUDNN"
    assert attention_backend(ParallelOptions(ulysses_degree=2), on_gpu=True) is None  # xfuser's pick
    assert (
        attention_backend(ParallelOptions(ring_degree=2, attention_backend="flash_3"), on_gpu=True)
        == "FLASH_3"
    )
    # The CPU has one kernel that works (parallel.cpu_compat), whatever the configuration names.
    assert attention_backend(ParallelOptions(attention_backend="flash_3"), on_gpu=False) == "SDPA_FLASH"


def test_a_cfg_2_deployment_needs_true_cfg_requests():
    options = ParallelOptions(cfg_degree=2)
    with pytest.raises(InvalidArgument, match="true_cfg_scale > 1 and a negative_prompt"):
        validate_request(options, TINY, request())
    true_cfg = request(true_cfg_scale=4.0, negative_prompt="blurry")
    assert uses_true_cfg(true_cfg)
    validate_request(options, TINY, true_cfg)
    assert not uses_true_cfg(request(true_cfg_scale=4.0))  # no negative prompt: one branch


def test_geometry_is_read_from_a_checkpoint_directory(tmp_path: Path):
    (tmp_path / "transformer").mkdir()
    (tmp_path / "vae").mkdir()
    config = {
        "num_attention_heads": 24,
        "patch_size": 2,
        "patch_size_t": 1,
        "num_layers": 20,
        "num_single_layers": 40,
    }
    (tmp_path / "transformer" / "config.json").write_text(json.dumps(config))
    (tmp_path / "vae" / "config.json").write_text(
        json.dumps({"spatial_compression_ratio": 8, "temporal_compression_ratio": 4})
    )
    assert TransformerGeometry.from_checkpoint(tmp_path) == HUNYUANVIDEO


def test_placement_bundles_put_the_replica_cpu_with_rank_0_and_one_gpu_per_rank():
    bundles = placement_bundles(ParallelOptions(ulysses_degree=2, ring_degree=2), num_cpus=1)
    assert bundles == [{"CPU": 1.0, "GPU": 1.0}, {"GPU": 1.0}, {"GPU": 1.0}, {"GPU": 1.0}]
    assert placement_bundles(ParallelOptions(ulysses_degree=2), 0.5, num_gpus=0) == [
        {"CPU": 0.5, "GPU": 1.0},
        {"GPU": 1.0},
    ]
