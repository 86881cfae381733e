"""xfuser 0.7.0 without an accelerator: every runtime adjustment its USP code needs on the CPU, in one place.

xfuser has no CPU path as shipped (measured with xfuser 0.7.0 and torch 2.13 on 2 gloo ranks). These five
adjustments let its real HunyuanVideo USP code run on CPU ranks over gloo; they are applied only when
`torch.cuda.is_available()` is False, and `apply()` must run before xfuser is first imported, because
xfuser reads its environment at import time (module-level constants, a version lookup on import).

- ``block_mask``: `xfuser.core.sparge_attention.block_mask` imports triton at import time. Stub that one
  module (triton costs 1 GB to install, and a fake top-level `triton` breaks diffusers).
- ``device_envs``: `xfuser.envs.get_device_version` / `get_torch_distributed_backend` raise
  NotImplementedError without an accelerator: they return None / "gloo".
- ``long_ctx_attn``: `has_long_ctx_attn` is False without CUDA, so sequence parallelism is refused:
  it is set True (yunchang imports fine on the CPU).
- ``process_group``: `usp.PROCESS_GROUP` (and its siblings) is None without CUDA: bound to
  `yunchang.globals.PROCESS_GROUP`, which `initialize_model_parallel` fills in.
- ``cpu_flash_sdpa``: ring attention needs a backend returning the log-sum-exp; the SDPA backends are
  refused for ring or CUDA-only. `aten._scaled_dot_product_flash_attention_for_cpu` returns it and is
  registered as the SDPA_FLASH backend, which the worker selects on the CPU
  (`parallel.config.attention_backend`).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types
from collections.abc import Callable, Iterable
from typing import Any

import torch

XFUSER_VERSION = "0.7.0"
ADJUSTMENTS = ("block_mask", "device_envs", "long_ctx_attn", "process_group", "cpu_flash_sdpa")
CPU_ATTENTION_BACKEND = "SDPA_FLASH"

_BLOCK_MASK = "xfuser.core.sparge_attention.block_mask"
_ENVS = "xfuser.envs"
_ATTENTION_BACKEND = "xfuser.core.distributed.attention_backend"
# Modules that bind `HAS_LONG_CTX_ATTN` or `PROCESS_GROUP` at import time.
_LONG_CTX_MODULES = (
    "xfuser.config.config",
    "xfuser.core.distributed.parallel_state",
    "xfuser.core.distributed.group_coordinator",
    "xfuser.model_executor.layers.attention_processor",
)
_PROCESS_GROUP_MODULES = (
    "xfuser.model_executor.layers.usp",
    "xfuser.model_executor.layers.usp_legacy",
    "xfuser.core.sparge_attention.head_balance",
    "xfuser.core.distributed.fp8_comms",
)

_applied: frozenset[str] | None = None


def needed() -> bool:
    """True where no accelerator is present, the only case xfuser needs adjusting."""
    return not torch.cuda.is_available()


def applied() -> frozenset[str]:
    """The adjustments installed in this process (empty on an accelerator or before `apply`)."""
    return _applied or frozenset()


def check_version() -> None:
    """Raise if the installed xfuser is not the version these adjustments were written and tested for."""
    from importlib.metadata import version

    found = version("xfuser")
    if found != XFUSER_VERSION:
        raise RuntimeError(
            f"parallel.cpu_compat targets xfuser=={XFUSER_VERSION}, found {found}; "
            "re-check the adjustments (tests/unit/test_parallel_cpu_compat.py) before changing the pin"
        )


def apply(skip: Iterable[str] = ()) -> frozenset[str]:
    """Install the adjustments when no accelerator is present; returns those installed.

    `skip` names adjustments to leave out (tests use it to show each one is needed). The first call in a
    process decides: later calls change nothing and return what it installed.
    """
    global _applied
    skipped = frozenset(skip)
    unknown = skipped - set(ADJUSTMENTS)
    if unknown:
        raise ValueError(f"unknown adjustments {sorted(unknown)}; known: {', '.join(ADJUSTMENTS)}")
    if not needed():
        return frozenset()
    if _applied is not None:
        return _applied
    wanted = frozenset(ADJUSTMENTS) - skipped
    check_version()
    if "block_mask" in wanted and _BLOCK_MASK not in sys.modules:
        sys.modules[_BLOCK_MASK] = _block_mask_stub()
    hooks = {
        _ENVS: lambda module: _patch_envs(module, wanted),
        _ATTENTION_BACKEND: (lambda module: _register_cpu_flash(module))
        if "cpu_flash_sdpa" in wanted
        else None,
    }
    if "long_ctx_attn" in wanted:
        hooks.update({name: _set_long_ctx for name in _LONG_CTX_MODULES})
    if "process_group" in wanted:
        hooks.update({name: _bind_process_group for name in _PROCESS_GROUP_MODULES})
    active = {name: hook for name, hook in hooks.items() if hook is not None}
    for name, hook in active.items():
        if name in sys.modules:  # imported before apply(): patch it in place
            hook(sys.modules[name])
    sys.meta_path.insert(0, _PostImportHooks(active))
    _applied = wanted
    return wanted


# The adjustments.


def _block_mask_stub() -> types.ModuleType:
    module = types.ModuleType(_BLOCK_MASK, "Stub of xfuser's triton-only Sparge block mask (no triton here).")

    def get_block_map_meansim(*args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("Sparge attention needs triton and a GPU; it is stubbed on the CPU")

    module.get_block_map_meansim = get_block_map_meansim  # type: ignore[attr-defined]
    return module


def _patch_envs(envs: types.ModuleType, wanted: frozenset[str]) -> None:
    if "device_envs" in wanted:
        envs.get_device_version = lambda: None  # type: ignore[attr-defined]
        envs.get_torch_distributed_backend = lambda: "gloo"  # type: ignore[attr-defined]
    if "long_ctx_attn" in wanted:
        envs.PACKAGES_CHECKER.packages_info["has_long_ctx_attn"] = True


def _set_long_ctx(module: types.ModuleType) -> None:
    module.HAS_LONG_CTX_ATTN = True  # type: ignore[attr-defined]


def _bind_process_group(module: types.ModuleType) -> None:
    if getattr(module, "PROCESS_GROUP", None) is None:
        from yunchang.globals import PROCESS_GROUP

        module.PROCESS_GROUP = PROCESS_GROUP  # type: ignore[attr-defined]


def _cpu_flash_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    dropout_p: float,
    is_causal: bool,
    attention_kwargs: dict[str, Any] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SDPA_FLASH on the CPU: (output, log-sum-exp), the pair ring attention merges across ranks."""
    output, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        query, key, value, dropout_p=dropout_p, is_causal=is_causal
    )
    return output, lse


def _register_cpu_flash(module: types.ModuleType) -> None:
    module.ATTENTION_FUNCTION_REGISTRY[module.AttentionBackendType.SDPA_FLASH] = _cpu_flash_attention


# Running a hook right after a module executes, before anything else can read it.


class _HookedLoader(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader, hook: Callable[[types.ModuleType], None]) -> None:
        self._loader = loader
        self._hook = hook

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        self._loader.exec_module(module)
        self._hook(module)


class _PostImportHooks(importlib.abc.MetaPathFinder):
    """Finds the named modules through the other finders and runs a hook once each has executed."""

    def __init__(self, hooks: dict[str, Callable[[types.ModuleType], None]]) -> None:
        self._hooks = hooks

    def find_spec(
        self, fullname: str, path: Any, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        hook = self._hooks.get(fullname)
        if hook is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _HookedLoader(spec.loader, hook)
                return spec
        return None
