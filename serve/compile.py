"""torch.compile of a transformer denoiser, block by block, paid in the replica's warm-up.

Regional compilation (the torch recipe that diffusers' `compile_repeated_blocks` follows): each transformer
block's `forward` is compiled, and as the blocks of one class share their code, one compilation serves all
of them; compiling takes a fraction of what a whole-model compile does and runs as fast. The blocks'
`forward` is replaced before any hook is installed, so the step cache's per-request hooks wrap the same
compiled function every request (hooks installed around a compiled module would change what it calls
and recompile it per request), and the cache's skip decision stays outside the compiled code.

Compiled code is specialised to the shapes it first sees: the replica's warm-up runs the model's default
request so that no caller at the default size pays for compiling; another size compiles on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:  # the configuration imports this module: the Router must not load torch
    import torch

BLOCK_LISTS_SUFFIX = "transformer_blocks"  # HunyuanVideo: transformer_blocks, single_transformer_blocks


class CompileOptions(BaseModel):
    """How a deployment's transformer blocks are compiled (`torch.compile` arguments) and warmed up."""

    model_config = ConfigDict(frozen=True)
    mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = Field(
        "default", description="torch.compile mode"
    )
    fullgraph: bool = Field(False, description="fail on a graph break instead of running it eagerly")
    dynamic: bool | None = Field(
        None, description="compile for symbolic shapes (None: torch decides after a second shape)"
    )
    warmup_steps: int = Field(
        2, ge=1, le=10, description="denoising steps of the warm-up request run before the replica is ready"
    )


def transformer_blocks(denoiser: torch.nn.Module) -> list[torch.nn.Module]:
    """The blocks of every `*transformer_blocks` list of the denoiser."""
    import torch

    return [
        block
        for name, child in denoiser.named_children()
        if name.endswith(BLOCK_LISTS_SUFFIX) and isinstance(child, torch.nn.ModuleList)
        for block in child
    ]


def compile_blocks(denoiser: torch.nn.Module, options: CompileOptions) -> int:
    """Compile each transformer block's `forward` in place; returns how many blocks were compiled."""
    import torch

    blocks = transformer_blocks(denoiser)
    if not blocks:
        raise ValueError(f"{type(denoiser).__name__} has no *{BLOCK_LISTS_SUFFIX} to compile")
    for block in blocks:
        block.forward = torch.compile(
            block.forward, mode=options.mode, fullgraph=options.fullgraph, dynamic=options.dynamic
        )
    return len(blocks)


def compiled_graphs() -> int:
    """Graphs torch.compile has made in this process so far (a recompilation adds one)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])
