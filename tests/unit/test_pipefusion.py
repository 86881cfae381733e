"""PipeFusion's patches (parallel/pipefusion.py) in one process: a tiny HunyuanVideo's blocks, random seeded
weights, run over the whole sequence and in patches with the same attention processors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from parallel.pipefusion import PatchSchedule, install, patch_bounds, run_blocks, run_patches, stale_kv_bytes
from serve.config import ModelDeployment, ParallelOptions


@pytest.fixture(scope="module")
def blocks_and_inputs(tiny_dir: Path):
    """Two dual-stream and two single-stream blocks, 48 video tokens (2 x 4 x 6), 5 text tokens."""
    from diffusers import HunyuanVideoTransformer3DModel

    config = json.loads((tiny_dir / "hunyuanvideo" / "transformer" / "config.json").read_text())
    torch.manual_seed(0)
    model = HunyuanVideoTransformer3DModel.from_config({**config, "num_layers": 2, "num_single_layers": 2})
    blocks = [*model.eval().transformer_blocks, *model.single_transformer_blocks]
    width = config["num_attention_heads"] * config["attention_head_dim"]
    rotary = model.rope(torch.zeros(1, config["in_channels"], 2, 8, 12))
    tokens, text, temb = torch.randn(1, 48, width), torch.randn(1, 5, width), torch.randn(1, width)
    return blocks, tokens, text, temb, rotary


def in_patches(blocks, schedule, tokens, text, temb, rotary) -> tuple[torch.Tensor, torch.Tensor]:
    pieces: list[torch.Tensor] = []
    context: list[torch.Tensor] = []

    def take(index: int, start: int, end: int):
        return tokens[:, start:end], text if index == 0 else None

    def give(index: int, piece: torch.Tensor, carried: torch.Tensor | None) -> None:
        pieces.append(piece)
        if carried is not None:
            context.append(carried)

    run_patches(blocks, schedule, tokens.shape[1], text, temb, rotary, take, give)
    assert len(context) == 1  # the text travels with patch 0 alone
    return torch.cat(pieces, dim=1), context[0]


def test_patches_cover_the_tokens_in_runs_a_token_apart():
    assert patch_bounds(10, 3) == [(0, 4), (4, 7), (7, 10)]
    assert patch_bounds(4, 4) == [(0, 1), (1, 2), (2, 3), (3, 4)]
    with pytest.raises(ValueError, match="pipeline_patches 5 must be between 1 and the 4 video tokens"):
        patch_bounds(4, 5)


def test_calls_at_one_timestep_are_branches_of_one_step_and_warmup_counts_steps():
    schedule = PatchSchedule(patches=2, warmup_steps=2)
    calls = [schedule.begin_call(torch.tensor([t])) for t in (999.0, 999.0, 950.0, 950.0, 900.0, 900.0)]
    assert calls == [False, False, False, False, True, True]
    assert (schedule.step, schedule.branch, schedule.patched_calls) == (2, 1, 2)
    schedule.reset()  # a new request warms up again, even at the same timesteps
    assert not schedule.begin_call(torch.tensor([999.0])) and schedule.step == 0


def test_reset_frees_every_blocks_kept_keys_and_values(blocks_and_inputs):
    blocks, tokens, text, temb, rotary = blocks_and_inputs
    schedule = PatchSchedule(patches=2, warmup_steps=1)
    install(blocks, schedule)
    with torch.inference_mode():
        schedule.begin_call(torch.tensor([999.0]))
        run_blocks(blocks, tokens, text, temb, rotary)
    assert len(schedule.processors) == len(blocks) and all(p.kept for p in schedule.processors)
    schedule.reset()  # the worker's, after every request however it ended
    assert not any(p.kept for p in schedule.processors)


def test_with_the_same_steps_keys_and_values_patches_give_the_whole_sequences_result(blocks_and_inputs):
    blocks, tokens, text, temb, rotary = blocks_and_inputs
    with torch.inference_mode():
        expected_tokens, expected_text = run_blocks(
            blocks, tokens, text, temb, rotary
        )  # diffusers' processors
        schedule = PatchSchedule(patches=3, warmup_steps=1)
        install(blocks, schedule)
        assert not schedule.begin_call(torch.tensor([999.0]))
        whole_tokens, _ = run_blocks(blocks, tokens, text, temb, rotary)  # keeps every block's K/V
        assert schedule.begin_call(torch.tensor([950.0]))
        got_tokens, got_text = in_patches(blocks, schedule, tokens, text, temb, rotary)
    assert torch.allclose(whole_tokens, expected_tokens, atol=1e-6)
    assert torch.allclose(got_tokens, expected_tokens, atol=1e-6)
    assert torch.allclose(got_text, expected_text, atol=1e-6)


def test_on_a_new_step_the_later_patches_see_stale_keys_and_values_the_first_patch_less(blocks_and_inputs):
    blocks, tokens, text, temb, rotary = blocks_and_inputs
    moved = tokens + 0.1 * torch.randn(tokens.shape, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        fresh, _ = run_blocks(blocks, moved, text, temb, rotary)
        before, _ = run_blocks(blocks, tokens, text, temb, rotary)
        schedule = PatchSchedule(patches=3, warmup_steps=1)
        install(blocks, schedule)
        schedule.begin_call(torch.tensor([999.0]))
        run_blocks(blocks, tokens, text, temb, rotary)  # warm-up on the old tokens
        schedule.begin_call(torch.tensor([950.0]))
        stale, _ = in_patches(blocks, schedule, moved, text, temb, rotary)
    error = (stale - fresh).abs()
    step = (fresh - before).abs().max()
    # Stale K/V change the result, far less than the step itself does.
    assert 0 < error.max() < step / 5
    # The last patch attends to this step's K/V of every earlier patch in the first block: the least stale.
    assert error[:, 32:].max() < error[:, :16].max()


def test_patches_need_a_pipeline_without_sequence_parallelism_naming_the_fields():
    with pytest.raises(ValueError, match=r"pipeline_patches=2 needs pipeline_degree > 1"):
        ParallelOptions(pipeline_patches=2)
    with pytest.raises(
        ValueError, match=r"pipeline_patches=4 needs ulysses_degree = ring_degree = 1 \(got 2"
    ):
        ParallelOptions(pipeline_degree=2, ulysses_degree=2, pipeline_patches=4)
    with pytest.raises(ValueError, match="pipeline_warmup_steps"):
        ParallelOptions(pipeline_degree=2, pipeline_patches=2, pipeline_warmup_steps=0)
    with pytest.raises(ValueError, match=r"compile cannot run with parallel\.pipeline_patches=2"):
        ModelDeployment.model_validate(
            {"name": "hunyuanvideo", "parallel": {"pipeline_degree": 2, "pipeline_patches": 2}, "compile": {}}
        )


def test_the_stale_kv_of_a_720p_stage_is_what_the_readme_states():
    # HunyuanVideo 1280x720 x 129 frames: 33 x 45 x 80 video tokens; 3072 wide; half of 60 blocks; bf16.
    assert stale_kv_bytes(33 * 45 * 80, 256, 30, 3072, 2) / 1e9 == pytest.approx(43.9, abs=0.05)
