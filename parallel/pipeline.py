"""Pipeline parallelism for HunyuanVideo: the transformer's blocks split into stages over a replica's ranks.

Why not xDiT's PipeFusion: xfuser 0.7 marks HunyuanVideo as not supported by PipeFusion, and its
PipeFusion runtime drives image DiTs through xfuser's own pipeline classes (their patch schedule and
per-patch KV buffers), not diffusers' HunyuanVideoPipeline that this service runs. So the stages are built
here on torch.distributed, next to xfuser's sequence parallelism, which runs unchanged inside each stage.

What runs: the 20 dual-stream and 40 single-stream blocks are cut into `pipeline_degree` contiguous
stages of about equal parameter count (`balanced_stages`); each rank keeps only its stage's blocks (the
others become weightless placeholders before the weights move to the device, so FP8 storage and the
memory estimate apply per stage). Every rank computes the embedders (small) to know the shapes; a stage
receives the hidden states of the previous stage, runs its blocks and sends them on; the last stage
projects out, gathers over its sequence-parallel group and broadcasts the noise prediction to every
stage, so every rank holds the same latents after each step, as with sequence parallelism alone. This is
PipeFusion's synchronous form (one patch, every step a warm-up step): it equals one process. With
`pipeline_patches` > 1, the steps after `pipeline_warmup_steps` run PipeFusion's patch pipelining with
stale K/V of the other patches (parallel/pipefusion.py).

Rank layout: ranks are ordered sequence-fastest, then CFG, then stage, as xfuser orders its data-parallel
dimension. xfuser is told the stage count as its data-parallel degree (which nothing in a replica
otherwise uses), so its data-parallel groups are exactly the stage groups: the ranks at one sequence
and CFG position, one per stage.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from parallel.pipefusion import PatchSchedule, install, run_blocks, run_patches


class ElsewhereBlock(nn.Module):
    """A block that lives on another stage of the pipeline: no weights here, never called."""

    def __init__(self, index: int, stage: int) -> None:
        super().__init__()
        self.index = index
        self.stage = stage

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"block {self.index} runs on pipeline stage {self.stage}, not on this rank")


def balanced_stages(costs: list[int], degree: int) -> list[tuple[int, int]]:
    """Contiguous [start, end) ranges of `costs` (one per block), `degree` of them, each non-empty, cut
    where the running total comes closest to an equal share."""
    if not 1 <= degree <= len(costs):
        raise ValueError(f"pipeline_degree {degree} must be between 1 and the {len(costs)} blocks")
    total = sum(costs)
    cuts = [0]
    running = 0
    for index, cost in enumerate(costs):
        stage = len(cuts)
        if stage == degree:
            break
        target = total * stage / degree
        # cut before this block if that is closer to the target, leaving enough blocks for the later stages
        if index > cuts[-1] and abs(running - target) <= abs(running + cost - target):
            cuts.append(index)
        elif len(costs) - index - 1 < degree - stage:
            cuts.append(index + 1)
        running += cost
    while len(cuts) < degree:  # not reached for positive costs; keeps the ranges well formed
        cuts.append(len(costs) - (degree - len(cuts)))
    bounds = [*cuts, len(costs)]
    return [(bounds[i], bounds[i + 1]) for i in range(degree)]


def block_costs(transformer: nn.Module) -> list[int]:
    """Parameters per block, dual-stream blocks first, as the forward runs them."""
    blocks = [*transformer.transformer_blocks, *transformer.single_transformer_blocks]
    return [sum(p.numel() for p in block.parameters()) for block in blocks]


def keep_stage(transformer: nn.Module, bounds: list[tuple[int, int]], stage: int) -> None:
    """Replace every block outside `stage`'s range by a weightless placeholder."""
    start, end = bounds[stage]
    owner = {index: s for s, (a, b) in enumerate(bounds) for index in range(a, b)}
    dual = len(transformer.transformer_blocks)
    for index in range(len(owner)):
        if start <= index < end:
            continue
        blocks, position = (
            (transformer.transformer_blocks, index)
            if index < dual
            else (transformer.single_transformer_blocks, index - dual)
        )
        blocks[position] = ElsewhereBlock(index, owner[index])
    if stage != len(bounds) - 1:  # only the last stage projects out
        transformer.norm_out = ElsewhereBlock(-1, len(bounds) - 1)
        transformer.proj_out = ElsewhereBlock(-1, len(bounds) - 1)


def pipeline_transformer_class(base: type) -> type:
    """`base` (xDiT's HunyuanVideo wrapper) with its blocks run as pipeline stages (see the module's text)."""
    from xfuser.core.distributed import (
        get_cfg_group,
        get_classifier_free_guidance_rank,
        get_classifier_free_guidance_world_size,
        get_dp_group,
        get_runtime_state,
        get_sequence_parallel_rank,
        get_sequence_parallel_world_size,
        get_sp_group,
    )

    class PipelineHunyuanVideoTransformer(base):
        """xDiT's HunyuanVideo forward with the block loop split into stages (xfuser 0.7's, otherwise)."""

        stage_bounds: list[tuple[int, int]] | None = None
        patch_schedule: PatchSchedule | None = None  # PipeFusion's patches (parallel/pipefusion.py)

        def keep_own_stage(self, degree: int, stage: int, patches: int = 1, warmup_steps: int = 1) -> None:
            """Cut the blocks into `degree` stages and drop all but `stage`'s weights (before the weights
            move to the device; xfuser's groups do not exist yet, so the caller names the stage). With
            `patches` > 1 the stage runs in patches after `warmup_steps` whole steps."""
            self.stage_bounds = balanced_stages(block_costs(self), degree)
            keep_stage(self, self.stage_bounds, stage)
            if patches > 1:
                start, end = self.stage_bounds[stage]
                self.patch_schedule = PatchSchedule(patches, warmup_steps)
                install(
                    [*self.transformer_blocks, *self.single_transformer_blocks][start:end],
                    self.patch_schedule,
                )

        def reset_patches(self) -> None:
            """A new request: its first steps are whole-sequence warm-up steps again."""
            if self.patch_schedule is not None:
                self.patch_schedule.reset()

        def _run_in_patches(
            self,
            blocks: list[nn.Module],
            schedule: PatchSchedule,
            tokens: torch.Tensor,
            text: torch.Tensor,
            temb: torch.Tensor,
            rotary: tuple[torch.Tensor, torch.Tensor],
            ranks: list[int],
            stage: int,
        ) -> torch.Tensor:
            """One step in patches: each patch goes on to the next stage as soon as it is done (isend),
            so the next stage starts on it while this one runs the next patch. The last stage's result."""
            last = len(ranks) - 1
            sent: list[tuple[Any, torch.Tensor]] = []
            finished: list[torch.Tensor] = []

            def take(index: int, start: int, end: int) -> tuple[torch.Tensor, torch.Tensor | None]:
                if stage == 0:
                    return tokens[:, start:end], text if index == 0 else None
                piece = tokens.new_empty((tokens.shape[0], end - start, tokens.shape[2]))
                dist.recv(piece, src=ranks[stage - 1])
                if index > 0:
                    return piece, None
                context = torch.empty_like(text, memory_format=torch.contiguous_format)
                dist.recv(context, src=ranks[stage - 1])
                return piece, context

            def give(index: int, piece: torch.Tensor, context: torch.Tensor | None) -> None:
                if stage == last:
                    finished.append(piece)
                    return
                for tensor in (piece, context) if context is not None else (piece,):
                    tensor = tensor.contiguous()
                    sent.append((dist.isend(tensor, dst=ranks[stage + 1]), tensor))

            run_patches(blocks, schedule, tokens.shape[1], text, temb, rotary, take, give)
            for handle, _ in sent:
                handle.wait()
            return torch.cat(finished, dim=1) if stage == last else tokens

        def forward(
            self,
            hidden_states: torch.Tensor,
            timestep: torch.LongTensor,
            encoder_hidden_states: torch.Tensor,
            encoder_attention_mask: torch.Tensor,
            pooled_projections: torch.Tensor,
            guidance: torch.Tensor | None = None,
            attention_kwargs: dict[str, Any] | None = None,
            return_dict: bool = True,
        ) -> Any:
            assert self.stage_bounds is not None, "keep_own_stage() has not run"
            get_runtime_state().increment_step_counter()
            batch_size, _, num_frames, height, width = hidden_states.shape
            p, p_t = self.config.patch_size, self.config.patch_size_t
            frames, rows, columns = num_frames // p_t, height // p, width // p
            cfg_size, cfg_rank = (
                get_classifier_free_guidance_world_size(),
                get_classifier_free_guidance_rank(),
            )
            sp_size, sp_rank = get_sequence_parallel_world_size(), get_sequence_parallel_rank()

            # Every stage: rotary embedding, conditioning, token embedding, and this rank's token shard.
            freqs_cos, freqs_sin = self.rope(hidden_states)
            temb, _ = self.time_text_embed(
                timestep=timestep, pooled_projection=pooled_projections, guidance=guidance
            )
            tokens = (
                self.x_embedder(hidden_states).reshape(batch_size, frames, rows, columns, -1).flatten(1, 3)
            )
            tokens = torch.chunk(torch.chunk(tokens, cfg_size, dim=0)[cfg_rank], sp_size, dim=-2)[sp_rank]
            text = self.context_embedder(encoder_hidden_states, timestep, encoder_attention_mask)
            text = text[:, encoder_attention_mask.to(torch.bool).any(dim=0), :]
            get_runtime_state().split_text_embed_in_sp = text.shape[-2] % sp_size == 0
            text = torch.chunk(text, cfg_size, dim=0)[cfg_rank]
            if get_runtime_state().split_text_embed_in_sp:
                text = torch.chunk(text, sp_size, dim=-2)[sp_rank]
            rotary = (
                torch.chunk(freqs_cos, sp_size, dim=0)[sp_rank],
                torch.chunk(freqs_sin, sp_size, dim=0)[sp_rank],
            )

            # This stage's blocks, between the previous stage's hidden states and the next stage.
            stages = get_dp_group()
            stage = stages.rank_in_group
            last = len(self.stage_bounds) - 1
            start, end = self.stage_bounds[stage]
            blocks = [*self.transformer_blocks, *self.single_transformer_blocks][start:end]
            schedule = self.patch_schedule
            if schedule is not None and schedule.begin_call(timestep):
                tokens = self._run_in_patches(
                    blocks, schedule, tokens, text, temb, rotary, stages.ranks, stage
                )
            else:
                if stage > 0:
                    tokens, text = (
                        torch.empty_like(t, memory_format=torch.contiguous_format) for t in (tokens, text)
                    )
                    dist.recv(tokens, src=stages.ranks[stage - 1])
                    dist.recv(text, src=stages.ranks[stage - 1])
                tokens, text = run_blocks(blocks, tokens, text, temb, rotary)
                if stage < last:
                    dist.send(tokens.contiguous(), dst=stages.ranks[stage + 1])
                    dist.send(text.contiguous(), dst=stages.ranks[stage + 1])
            output = torch.empty(
                (batch_size, self.config.out_channels, num_frames, height, width),
                dtype=tokens.dtype,
                device=tokens.device,
            )
            if stage == last:
                tokens = self.proj_out(self.norm_out(tokens, temb))
                tokens = get_cfg_group().all_gather(get_sp_group().all_gather(tokens, dim=-2), dim=0)
                tokens = tokens.reshape(batch_size, frames, rows, columns, -1, p_t, p, p)
                output.copy_(tokens.permute(0, 4, 1, 5, 2, 6, 3, 7).flatten(6, 7).flatten(4, 5).flatten(2, 3))
            dist.broadcast(output, src=stages.ranks[last], group=stages.device_group)
            if not return_dict:
                return (output,)
            from diffusers.models.modeling_outputs import Transformer2DModelOutput

            return Transformer2DModelOutput(sample=output)

    return PipelineHunyuanVideoTransformer


def stage_of(rank: int, world_size: int, degree: int) -> int:
    """The pipeline stage of `rank`: stages are the slowest-varying rank dimension."""
    return rank // (world_size // degree)


def stage_ranks(rank: int, world_size: int, degree: int) -> list[int]:
    """The ranks that hand `rank`'s tokens from stage to stage: its sequence and CFG position, each stage."""
    per_stage = world_size // degree
    return [stage * per_stage + rank % per_stage for stage in range(degree)]
