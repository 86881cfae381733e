"""PipeFusion's patch pipelining for HunyuanVideo's stages: video tokens in patches, stale K/V for the rest.

After `warmup_steps` whole-sequence steps, each stage runs its blocks patch by patch: patch m leaves for the
next stage as soon as this stage is done with it, so the stages work on different patches at the same
time instead of taking turns. A patch's attention needs the keys and values of every token; those of the
patches not yet computed at this step come from the previous step (stale), those already computed are
this step's, as in xDiT's PipeFusion (arXiv 2405.14430). The text tokens travel with patch 0, so the
later patches attend to this step's text; they carry a one-token placeholder whose output is dropped.

The price is memory: every block of the stage keeps K and V for the whole video (`stale_kv_bytes`), from the
first step to the end of the request (the VAE decode included); `PatchSchedule.reset` frees them. The
stage's attention is torch's SDPA (which picks flash, cuDNN or memory-efficient kernels on a GPU), not
xfuser's attention backend. The stages still meet once per step (the last stage broadcasts the noise
prediction), so with M patches and N stages a step takes about (M + N - 1) / M stage-times, against N
when the stages take turns.
Sequence parallelism inside a patched stage is not built (the K/V buffers would have to follow Ulysses'
head split and each rank's token shard), so patches > 1 needs ulysses = ring = 1 (checked in the config).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.models.embeddings import apply_rotary_emb


def patch_bounds(tokens: int, patches: int) -> list[tuple[int, int]]:
    """[start, end) of each of `patches` contiguous runs of `tokens` video tokens, sizes a token apart."""
    if not 1 <= patches <= tokens:
        raise ValueError(f"pipeline_patches {patches} must be between 1 and the {tokens} video tokens")
    base, extra = divmod(tokens, patches)
    bounds, start = [], 0
    for index in range(patches):
        end = start + base + (index < extra)
        bounds.append((start, end))
        start = end
    return bounds


def stale_kv_bytes(video_tokens: int, text_tokens: int, blocks: int, inner_dim: int, dtype_bytes: int) -> int:
    """Memory one stage's K/V buffers take for one CFG branch (true CFG on cfg_degree 1: twice this): K and
    V of every token, in each of its blocks."""
    return 2 * (video_tokens + text_tokens) * inner_dim * dtype_bytes * blocks


@dataclass
class PatchSchedule:
    """Which part of the sequence the stage's blocks are running; shared by the stage's attention processors.

    `begin_call` is told each transformer call's timestep: calls at a new timestep start a step, a repeat
    is the next CFG branch of the same step (each branch keeps its own K/V).
    """

    patches: int
    warmup_steps: int
    step: int = -1
    branch: int = 0
    patch: tuple[int, int] | None = None  # None: the whole sequence
    carries_text: bool = True
    patched_calls: int = 0  # transformer calls run in patches, since the replica started
    processors: list[StalePatchAttention] = field(default_factory=list, repr=False)
    _last_timestep: float | None = field(default=None, repr=False)

    def reset(self) -> None:
        """Before and after a request: warm-up starts again, and the blocks' kept K/V (the size of the
        stage's whole-video K/V per CFG branch) are freed."""
        self.step, self.branch, self.patch, self.carries_text, self._last_timestep = -1, 0, None, True, None
        for processor in self.processors:
            processor.kept.clear()

    def begin_call(self, timestep: torch.Tensor) -> bool:
        """Count this call's step and branch; True when it runs in patches (after the warm-up)."""
        value = float(timestep.flatten()[0])
        if value == self._last_timestep:
            self.branch += 1
        else:
            self.step, self.branch, self._last_timestep = self.step + 1, 0, value
        self.patch, self.carries_text = None, True
        patched = self.patches > 1 and self.step >= self.warmup_steps
        self.patched_calls += patched
        return patched

    def at_patch(self, start: int, end: int, carries_text: bool) -> None:
        self.patch, self.carries_text = (start, end), carries_text


@dataclass
class _KeysValues:
    video_key: torch.Tensor
    video_value: torch.Tensor
    text_key: torch.Tensor
    text_value: torch.Tensor


def _heads(attn: Any, projected: torch.Tensor) -> torch.Tensor:
    return projected.unflatten(2, (attn.heads, -1)).transpose(1, 2)


class StalePatchAttention:
    """HunyuanVideo's attention (the computation of diffusers' and xDiT's processors at one rank) that keeps
    this block's K/V of the whole sequence and, in a patch, attends to them with the patch's own fresh."""

    def __init__(self, schedule: PatchSchedule) -> None:
        self.schedule = schedule
        self.kept: dict[int, _KeysValues] = {}  # per CFG branch

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if attention_mask is not None:
            raise ValueError("stale-patch attention runs without a text mask (padding is trimmed before)")
        video_count, text_count = hidden_states.shape[1], encoder_hidden_states.shape[1]
        joint = attn.add_q_proj is None  # single-stream blocks project video and text together
        inputs = torch.cat([hidden_states, encoder_hidden_states], dim=1) if joint else hidden_states
        query, key, value = (_heads(attn, p(inputs)) for p in (attn.to_q, attn.to_k, attn.to_v))
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        if joint:
            text_query, text_key, text_value = (t[:, :, video_count:] for t in (query, key, value))
            query, key, value = (t[:, :, :video_count] for t in (query, key, value))
        else:
            text_query, text_key, text_value = (
                _heads(attn, p(encoder_hidden_states))
                for p in (attn.add_q_proj, attn.add_k_proj, attn.add_v_proj)
            )
            if attn.norm_added_q is not None:
                text_query = attn.norm_added_q(text_query)
            if attn.norm_added_k is not None:
                text_key = attn.norm_added_k(text_key)
        if image_rotary_emb is not None:
            query, key = apply_rotary_emb(query, image_rotary_emb), apply_rotary_emb(key, image_rotary_emb)

        schedule = self.schedule
        if schedule.patch is None:  # the whole sequence: keep its K/V for the patched steps
            self.kept[schedule.branch] = _KeysValues(key, value, text_key, text_value)
            kept = self.kept[schedule.branch]
        else:
            kept = self.kept[schedule.branch]
            start, end = schedule.patch
            kept.video_key[:, :, start:end] = key
            kept.video_value[:, :, start:end] = value
            if schedule.carries_text:
                kept.text_key, kept.text_value = text_key, text_value
        queries = torch.cat([query, text_query], dim=2) if schedule.carries_text else query
        out = F.scaled_dot_product_attention(
            queries,
            torch.cat([kept.video_key, kept.text_key], dim=2),
            torch.cat([kept.video_value, kept.text_value], dim=2),
        )
        out = out.transpose(1, 2).flatten(2, 3).to(query.dtype)
        video_out = out[:, :video_count]
        text_out = (
            out[:, video_count:]
            if schedule.carries_text
            else out.new_zeros(out.shape[0], text_count, out.shape[2])
        )  # the placeholder's output, dropped by the stage
        if getattr(attn, "to_out", None) is not None:
            video_out = attn.to_out[1](attn.to_out[0](video_out))
        if getattr(attn, "to_add_out", None) is not None:
            text_out = attn.to_add_out(text_out)
        return video_out, text_out


def install(blocks: list[torch.nn.Module], schedule: PatchSchedule) -> None:
    """Give each of the stage's blocks a stale-patch attention processor driven by `schedule`."""
    for block in blocks:
        block.attn.processor = StalePatchAttention(schedule)
        schedule.processors.append(block.attn.processor)


def run_blocks(
    blocks: list[torch.nn.Module],
    tokens: torch.Tensor,
    text: torch.Tensor,
    temb: torch.Tensor,
    rotary: tuple[torch.Tensor, torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    for block in blocks:
        tokens, text = block(tokens, text, temb, None, rotary)
    return tokens, text


def run_patches(
    blocks: list[torch.nn.Module],
    schedule: PatchSchedule,
    video_tokens: int,
    text_like: torch.Tensor,
    temb: torch.Tensor,
    rotary: tuple[torch.Tensor, torch.Tensor],
    take: Any,
    give: Any,
) -> None:
    """One patched step of a stage: for each patch, `take(m, start, end)` gives its (tokens, text) (text: the
    real one for patch 0, else None), the blocks run with the schedule at that patch, and `give(m, tokens,
    text)` passes the result on (to the next stage, or into the last stage's output)."""
    for index, (start, end) in enumerate(patch_bounds(video_tokens, schedule.patches)):
        tokens, text = take(index, start, end)
        if text is None:
            text = text_like.new_zeros(text_like.shape[0], 1, text_like.shape[2])  # the placeholder
        schedule.at_patch(start, end, carries_text=index == 0)
        tokens, text = run_blocks(blocks, tokens, text, temb, (rotary[0][start:end], rotary[1][start:end]))
        give(index, tokens, text if index == 0 else None)
    schedule.patch, schedule.carries_text = None, True
