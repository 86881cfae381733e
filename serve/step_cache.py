"""Step caching for one generation: diffusers' First-Block Cache, a skip decision all ranks share, counts.

diffusers' First-Block Cache runs a transformer's first block every step and skips the others when the
first block's residual changed little since the last full step (relative mean absolute difference under
the threshold), adding their cached residual instead. Its decision is made from the tensor this
process holds; under sequence parallelism that is one rank's shard of the video tokens, so ranks could
decide differently and the next collective would hang. Here the two means are summed over the
replica's ranks first (`reduce`), as ParaAttention does, so every rank takes the same decision: the
one a single process holding all the tokens would take (shards are equal in size).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from serve.catalog import CachePolicy, StepCache

Reduce = Callable[[torch.Tensor], torch.Tensor]
"""Sums a tensor over the ranks of a replica (in place or not; the sum is returned)."""


@dataclass
class ForwardCounts:
    """Denoiser forwards of one generation and how many of them the cache cut short."""

    forwards: int = 0
    skipped: int = 0
    decisions: list[bool] = field(default_factory=list)  # per cache decision: True ran all blocks


@contextlib.contextmanager
def step_cache(
    denoisers: torch.nn.Module | Sequence[torch.nn.Module], cache: StepCache, reduce: Reduce | None = None
) -> Iterator[ForwardCounts]:
    """Apply `cache` to each denoiser for the duration (Wan 2.2 A14B has two experts, each with a cache
    of its own); yields the counts of all of them, filled in as the forwards run.

    The cache's state lives only inside the block: every request starts with none from the one before.
    """
    modules = [denoisers] if isinstance(denoisers, torch.nn.Module) else list(denoisers)
    counts = ForwardCounts()

    def count_forward(*_: Any) -> None:
        counts.forwards += 1

    with contextlib.ExitStack() as stack:
        for module in modules:
            stack.callback(module.register_forward_pre_hook(count_forward).remove)
            if cache.policy is CachePolicy.FIRST_BLOCK:
                from diffusers.hooks import FirstBlockCacheConfig

                module.enable_cache(FirstBlockCacheConfig(threshold=cache.threshold))
                stack.callback(module.disable_cache)
                _share_first_block_decisions(module, cache.threshold, reduce, counts)
        yield counts


def _share_first_block_decisions(
    denoiser: torch.nn.Module, threshold: float, reduce: Reduce | None, counts: ForwardCounts
) -> None:
    """Replace the head block hook's decision with one taken from measures summed over the ranks."""
    from diffusers.hooks.first_block_cache import _FBC_LEADER_BLOCK_HOOK

    heads = [
        hook
        for module in denoiser.modules()
        if (registry := getattr(module, "_diffusers_hook", None)) is not None
        and (hook := registry.get_hook(_FBC_LEADER_BLOCK_HOOK)) is not None
    ]
    if len(heads) != 1:
        raise RuntimeError(f"expected one First-Block Cache head hook, found {len(heads)}")
    (head,) = heads

    def should_compute(residual: torch.Tensor) -> bool:
        previous = head.state_manager.get_state().head_block_residual
        if previous is None:
            return True
        measures = torch.stack([(residual - previous).abs().mean(), previous.abs().mean()]).float()
        if reduce is not None:
            measures = reduce(measures)
        compute = bool((measures[0] / measures[1]).item() > threshold)
        counts.decisions.append(compute)
        counts.skipped += not compute
        return compute

    head._should_compute_remaining_blocks = should_compute
