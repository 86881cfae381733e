"""bench/gpu/: the FLOP count, and the prepared run.sh as a CPU dry run (the GPU run needs a lent GPU)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "gpu" / "hunyuan_step.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("hunyuan_step", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_full_model_costs_about_12_pflop_per_step_at_720p_129_frames_mostly_attention(bench):
    tokens = bench.video_tokens(bench.FULL_CONFIG, 720, 1280, 129)
    flops = bench.forward_flops(bench.FULL_CONFIG, tokens, text=256)
    assert tokens == 118_800
    assert 11.5e15 < flops["total"] < 12.5e15
    assert 0.85 < flops["attention"] / flops["total"] < 0.89


def test_the_flop_count_matches_torchs_flop_counter_on_a_small_model(bench):
    config = {
        **bench.TINY_CONFIG,
        "num_layers": 2,
        "num_single_layers": 3,
        "num_attention_heads": 4,
        "attention_head_dim": 32,
        "rope_axes_dim": (8, 12, 12),
    }
    size, text = (128, 128, 17), 16
    model = bench.build_transformer(config, torch.device("cpu"), torch.float32)
    inputs = bench.make_inputs(config, size, text, torch.device("cpu"), torch.float32)
    # The math backend runs attention as matmuls, which the counter sees.
    with FlopCounterMode(display=False) as counter, torch.inference_mode(), sdpa_kernel(SDPBackend.MATH):
        model(timestep=torch.tensor([500.0]), return_dict=False, **inputs)
    counted = counter.get_total_flops()
    predicted = bench.forward_flops(config, bench.video_tokens(config, *size), text)["total"]
    assert 0.95 < predicted / counted <= 1.0  # only embedders and the text refiner are left out


def test_the_dry_run_writes_a_result_per_variant_and_size(bench, tmp_path):
    assert bench.main(["--dry-run", "--out", str(tmp_path), "--steps", "1", "--warmup", "0"]) == 0
    results = json.loads((tmp_path / "hunyuan_step.json").read_text())
    measured = [run for run in results["runs"] if "seconds_per_step" in run]
    assert {(run["variant"], run["size"]) for run in measured} == {
        (variant, size) for variant in ("bf16", "fp8-storage") for size in bench.TINY_SIZES
    }
    assert all(run["seconds_per_step"] > 0 and run["output_finite"] for run in measured)
    fp8_run = next(run for run in measured if run["variant"] == "fp8-storage")
    assert fp8_run["parameter_bytes"] < fp8_run["parameter_bytes_built"]
    skipped = [run for run in results["runs"] if run["variant"] == "fp8-gemm"]
    assert skipped and "8.9" in skipped[0]["skipped"]
    assert results["matmul_tflops"] > 0 and results["reference_pflop_720p"] == 12.0


def test_the_prepared_run_dry_runs_1_rank_ulysses_2_and_both_pipelines_2_within_the_returned_files(
    tmp_path,
):
    import os
    import subprocess
    import sys

    out = tmp_path / "out"
    env = {**os.environ, "DRY_RUN": "1", "PYTHON": sys.executable, "OUT": str(out)}
    done = subprocess.run(
        ["bash", "bench/gpu/run.sh"],
        cwd=SCRIPT.parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # A lent machine returns at most 8 files from $OUT.
    assert len(list(out.iterdir())) <= 8
    serving = json.loads((out / "serving_path.json").read_text())
    assert serving["dry_run"] and [run["layout"] for run in serving["runs"]] == [
        "1",
        "ulysses2",
        "pipeline2",
        "pipeline2-patches2",
    ]
    for run in serving["runs"]:
        assert run["attention_backend"] == "SDPA_FLASH"
        assert run["vae_split"] == ("rows" if run["world_size"] == 2 else "none")
        assert run["uncached"]["frames"] == 0 and run["uncached"]["vae_decode_seconds"] is None
        cached = run["cached_with_vae_decode"]
        policy = (
            "off" if run["layout"].startswith("pipeline") else "first_block"
        )  # a pipeline runs without step cache
        assert cached["cache"]["policy"] == policy and cached["transformer_forwards"] == 2
        assert cached["frames"] == 9 and cached["vae_decode_seconds"] > 0
        assert run["tflops"] > 0 and run["uncached"]["seconds_per_step"] > 0
    assert "| 2 (pipeline2) | 32x32x9 | SDPA_FLASH |" in (out / "serving_path.md").read_text()
    assert json.loads((out / "hunyuan_step.json").read_text())["dry_run"]
