"""xfuser on the CPU: each adjustment in parallel.cpu_compat is needed, and together they are enough.

Each case runs in fresh interpreters (xfuser reads its environment at import time): without one adjustment
xfuser fails as parallel/cpu_compat.py says; with all of them two gloo ranks run xDiT's real HunyuanVideo USP
code with ring attention (which needs all five) and match a single process. Ulysses and CFG parity, with
the same adjustments, are checked through the rank actors in tests/integration/test_parallel_group.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from parallel import cpu_compat
from tests.support import finish, python_process, run_hunyuan_ranks

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="the adjustments apply only without a GPU")


@pytest.fixture(scope="module")
def weights(tiny_dir: Path) -> Path:
    return tiny_dir / "hunyuanvideo"


@pytest.fixture(scope="module")
def single_process_frames(weights: Path) -> np.ndarray:
    from serve.catalog import MemoryOptions, get_spec
    from serve.engine import Engine
    from serve.request import RequestFields, build_request

    spec = get_spec("hunyuanvideo")
    engine = Engine(spec, str(weights), MemoryOptions())
    engine.load()
    request = build_request(
        spec, spec.tiny_limits, RequestFields(model=spec.name, prompt="a red fox", seed=3)
    )
    kwargs = engine.pipeline_call_kwargs(request)
    with torch.inference_mode():
        return np.asarray(engine.pipe(**kwargs).frames[0], dtype=np.float32)


IMPORT_FAILURES = {
    # adjustment left out -> what xfuser does without it
    "block_mask": ("import xfuser", "No module named 'triton'"),
    "device_envs": ("import xfuser", "NotImplementedError: No Accelerators"),
    "long_ctx_attn": (
        "import xfuser\nfrom xfuser.config.config import SequenceParallelConfig\n"
        "SequenceParallelConfig(ulysses_degree=2, ring_degree=1)",
        "Sequence Parallel kit 'yunchang' not found",
    ),
}


def test_without_each_import_time_adjustment_xfuser_fails_as_described():
    processes = {
        name: python_process(f"from parallel import cpu_compat\ncpu_compat.apply([{name!r}])\n{code}")
        for name, (code, _) in IMPORT_FAILURES.items()
    }
    for name, process in processes.items():
        code, stderr = finish(process)
        assert code != 0, f"xfuser worked without {name}: is the adjustment still needed?"
        assert IMPORT_FAILURES[name][1] in stderr, stderr[-2000:]


def test_with_all_adjustments_xfuser_imports_and_binds_the_sequence_parallel_groups():
    code = (
        "from parallel import cpu_compat\ncpu_compat.apply()\n"
        "from xfuser.config.config import SequenceParallelConfig\n"
        "SequenceParallelConfig(ulysses_degree=2, ring_degree=1)\n"
        "import yunchang.globals, xfuser.model_executor.layers.usp as usp, xfuser.envs as envs\n"
        "from xfuser.core.distributed.attention_backend import ATTENTION_FUNCTION_REGISTRY as registry\n"
        "from xfuser.core.distributed.attention_backend import AttentionBackendType as backends\n"
        "assert usp.PROCESS_GROUP is yunchang.globals.PROCESS_GROUP\n"
        "assert envs.get_torch_distributed_backend() == 'gloo' and envs.get_device_version() is None\n"
        "assert registry[backends.SDPA_FLASH] is cpu_compat._cpu_flash_attention\n"
    )
    returncode, stderr = finish(python_process(code))
    assert returncode == 0, stderr[-2000:]


@pytest.mark.parametrize(
    ("skip", "parallel", "failure"),
    [
        ("process_group", {"ulysses_degree": 2}, "'NoneType' object has no attribute 'ULYSSES_PG'"),
        ("cpu_flash_sdpa", {"ring_degree": 2}, "_scaled_dot_product_flash_attention"),
    ],
)
def test_without_a_run_time_adjustment_two_ranks_fail_as_described(
    weights, tmp_path, skip, parallel, failure
):
    results = run_hunyuan_ranks(weights, parallel, tmp_path / "frames.npy", skip=[skip], timeout_s=30)
    assert all(code != 0 for code, _ in results), f"ranks ran without {skip}: is it still needed?"
    assert any(failure in stderr for _, stderr in results), results[0][1][-3000:]


def test_with_all_adjustments_two_gloo_ring_ranks_match_a_single_process(
    weights, tmp_path, single_process_frames
):
    out = tmp_path / "frames.npy"
    results = run_hunyuan_ranks(weights, {"ring_degree": 2}, out, timeout_s=30)
    assert all(code == 0 for code, _ in results), results[0][1][-3000:] + results[1][1][-3000:]
    assert np.abs(np.load(out) - single_process_frames).max() <= 1e-4


def test_nothing_is_adjusted_where_an_accelerator_is_present(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert cpu_compat.apply() == frozenset()


def test_unknown_adjustment_names_are_refused():
    with pytest.raises(ValueError, match="known: block_mask"):
        cpu_compat.apply(["triton"])


def test_the_adjustments_are_pinned_to_the_installed_xfuser():
    cpu_compat.check_version()
