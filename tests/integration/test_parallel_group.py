"""ParallelEngine, 2 rank actors (gloo, 2 Ray logical GPUs): parity with one process, progress, cancel, death.

Frames are compared as the pipeline's float output (fp32 on the CPU) against a single-process run of the
same weights and seed: within 1e-4 max abs (measured about 3e-6).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import ray
import torch

from parallel.group import RANK_NAMESPACE, GroupTimeouts, ParallelEngine
from parallel.vae import VaeSplit
from serve.catalog import CachePolicy, MemoryOptions, get_spec
from serve.compile import CompileOptions
from serve.config import ParallelOptions
from serve.engine import Engine
from serve.errors import Cancelled, InvalidArgument, Unavailable
from serve.events import ProgressEvent, Stage
from serve.request import RequestFields, build_request
from serve.video import probe_mp4
from tests.integration.cluster import wait_until

pytestmark = pytest.mark.integration

SPEC = get_spec("hunyuanvideo")
TIMEOUTS = GroupTimeouts(setup_s=180, collective_s=60, request_s=180, cancel_grace_s=60)
TRUE_CFG = {"true_cfg_scale": 4.0, "negative_prompt": "blurry, dark"}
# Long enough to act on mid-run: 50 steps at 128x128 x 17 frames (tiny limits' maximum size).
LONG = {"num_inference_steps": 50, "height": 128, "width": 128, "num_frames": 17}


def request(**fields):
    return build_request(
        SPEC, SPEC.tiny_limits, RequestFields(model=SPEC.name, prompt="a red fox", seed=11, **fields)
    )


@pytest.fixture(scope="module")
def weights(tiny_dir: Path) -> str:
    return str(tiny_dir / "hunyuanvideo")


@pytest.fixture(scope="module")
def single_process(weights: str) -> Engine:
    engine = Engine(SPEC, weights, MemoryOptions())
    engine.load()
    return engine


def reference_frames(engine: Engine, **fields) -> np.ndarray:
    with torch.inference_mode():
        return np.asarray(engine.pipe(**engine.pipeline_call_kwargs(request(**fields))).frames[0])


def start(weights: str, compile: CompileOptions | None = None, **degrees: int) -> ParallelEngine:
    # Half a logical GPU per rank: two groups fit the 2 logical GPUs at once.
    engine = ParallelEngine(
        SPEC,
        weights,
        MemoryOptions(),
        ParallelOptions(**degrees),
        TIMEOUTS,
        gpus_per_rank=0.5,
        compile=compile,
    )
    engine.load()
    return engine


@pytest.fixture(scope="module")
def ulysses(ray_cluster, weights: str) -> Iterator[ParallelEngine]:
    engine = start(weights, ulysses_degree=2)
    yield engine
    engine.shutdown()


def rank_actor_names() -> set[str]:
    return {
        a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["namespace"] == RANK_NAMESPACE
    }


def test_ulysses_2_frames_match_a_single_process(ulysses, single_process):
    frames = ulysses.frames(request()).frames
    assert np.abs(frames - reference_frames(single_process)).max() <= 1e-4


@pytest.mark.parametrize(
    ("degrees", "fields"),
    [({"ring_degree": 2}, {}), ({"cfg_degree": 2}, TRUE_CFG)],
    ids=["ring2", "cfg2-true-cfg"],
)
def test_ring_2_and_cfg_2_frames_match_a_single_process(
    ray_cluster, weights, single_process, degrees, fields
):
    engine = start(weights, **degrees)
    try:
        frames = engine.frames(request(**fields)).frames
    finally:
        engine.shutdown()
    assert np.abs(frames - reference_frames(single_process, **fields)).max() <= 1e-4


# A First-Block Cache threshold at which the tiny random-weight model skips some steps but not all.
CACHED = {"num_inference_steps": 20, "cache_policy": CachePolicy.FIRST_BLOCK, "cache_threshold": 0.3}


def test_step_cache_decisions_agree_across_ranks_and_match_a_single_process(ulysses, single_process):
    parallel = ulysses.frames(request(**CACHED))
    single = single_process.float_frames(request(**CACHED))

    assert 0 < parallel.forwards.skipped < parallel.forwards.forwards
    # The measure is summed over both ranks' shards: the decisions equal those of all tokens in one process.
    assert parallel.forwards.decisions == single.forwards.decisions
    assert np.abs(parallel.frames - single.frames).max() <= 1e-4


def test_step_cache_threshold_0_equals_the_uncached_run(ulysses):
    uncached = ulysses.frames(request(num_inference_steps=6))
    never_skips = ulysses.frames(
        request(num_inference_steps=6, cache_policy=CachePolicy.FIRST_BLOCK, cache_threshold=0.0)
    )
    assert never_skips.forwards.skipped == 0 and never_skips.forwards.forwards == 6
    assert np.array_equal(uncached.frames, never_skips.frames)


def test_only_rank_0_encodes_the_prompt_and_the_video_while_both_decode_the_vae(ulysses):
    before = [ray.get(rank.info.remote()) for rank in ulysses.ranks]
    ulysses.generate_video(request(num_inference_steps=2))
    ulysses.generate_video(request(num_inference_steps=2, **TRUE_CFG))  # prompt and negative prompt
    after = [ray.get(rank.info.remote()) for rank in ulysses.ranks]

    def grew(key: str) -> list[int]:
        return [now[key] - was[key] for now, was in zip(after, before, strict=True)]

    assert grew("prompt_encodes") == [3, 0] and grew("videos_encoded") == [2, 0]
    # Rank 1 decoded its band of the VAE (parallel_vae, rows: the tiny VAE does not tile), no text.
    assert [info["vae_split"] for info in after] == [VaeSplit.ROWS, VaeSplit.ROWS]
    assert after[1]["last_stages"].vae_decode > 0 and after[1]["last_stages"].text_encode == 0
    # ...and rank 1 never loaded the text encoders it would not use.
    assert after[0]["text_encoders"] == ["text_encoder", "text_encoder_2"] and after[1]["text_encoders"] == []
    assert after[0]["attention_backend"] == "SDPA_FLASH"  # the CPU kernel (parallel.cpu_compat)


def test_without_parallel_vae_rank_1_stops_at_the_latents_and_frames_still_match(
    ray_cluster, weights, single_process
):
    engine = start(weights, ulysses_degree=2, parallel_vae=False)
    try:
        frames = engine.frames(request()).frames
        engine.generate_video(request(num_inference_steps=2))
        rank_1 = ray.get(engine.ranks[1].info.remote())
    finally:
        engine.shutdown()
    assert rank_1["vae_split"] == VaeSplit.NONE and rank_1["last_stages"].vae_decode == 0
    assert np.abs(frames - reference_frames(single_process)).max() <= 1e-4


def test_compiled_ranks_match_a_single_process_and_the_second_request_compiles_nothing(
    ray_cluster, weights, single_process
):
    engine = start(weights, compile=CompileOptions(), ulysses_degree=2)
    try:
        first = engine.frames(request()).frames  # the warm-up a replica runs: every rank compiles
        after_first = [ray.get(rank.info.remote()) for rank in engine.ranks]
        engine.frames(request(**CACHED))
        after_second = [ray.get(rank.info.remote()) for rank in engine.ranks]
    finally:
        engine.shutdown()
    assert [info["compiled_blocks"] for info in after_first] == [2, 2]
    assert all(info["compiled_graphs"] >= 2 for info in after_first)
    assert [i["compiled_graphs"] for i in after_second] == [i["compiled_graphs"] for i in after_first]
    assert np.abs(first - reference_frames(single_process)).max() <= 1e-4


def test_rank_0_streams_every_step_then_returns_a_valid_mp4(ulysses):
    events: list[ProgressEvent] = []
    video = ulysses.generate_video(request(num_inference_steps=3), events.append)
    assert probe_mp4(video.data)[:3] == (9, 32, 32)
    assert [e.step for e in events if e.stage is Stage.DENOISING] == [1, 2, 3]
    assert events[0].stage is Stage.PREPARING and events[-1].stage is Stage.DONE
    assert ulysses.device.type == "cpu" and ulysses.load_seconds > 0


def test_invalid_requests_fail_before_reaching_the_ranks(ulysses):
    with pytest.raises(InvalidArgument, match="3 video tokens"):
        ulysses.generate_video(request(num_frames=1, height=16, width=48))  # 1 x 1 x 3 tokens over 2 ranks
    assert ulysses.ready


def test_cancel_stops_every_rank_and_the_group_serves_the_next_request(ulysses):
    cancel = threading.Event()
    steps: list[int] = []

    def on_progress(event: ProgressEvent) -> None:
        steps.append(event.step)
        if event.step == 2:
            cancel.set()

    with pytest.raises(Cancelled):
        ulysses.generate_video(request(**LONG), on_progress, cancel)
    assert max(steps) < LONG["num_inference_steps"]
    assert ulysses.generate_video(request()).num_frames == 9


def test_a_rank_that_dies_fails_the_request_unavailable_and_the_group_is_rebuilt(ulysses):
    names = rank_actor_names()
    victim = next(name for name in names if name.endswith("rank1"))

    def on_progress(event: ProgressEvent) -> None:
        if event.step == 2:
            ray.kill(ray.get_actor(victim, namespace=RANK_NAMESPACE))

    start_time = time.monotonic()
    with pytest.raises(Unavailable, match="rank 1 of hunyuanvideo died"):
        ulysses.generate_video(request(**LONG), on_progress)
    assert time.monotonic() - start_time < 30  # no waiting out collective timeouts
    assert not ulysses.ready
    assert ulysses.generate_video(request()).num_frames == 9
    assert victim not in rank_actor_names()


def test_an_idle_rank_that_died_is_a_health_problem_a_busy_group_leaves_to_its_request(ulysses):
    if not ulysses.ready:
        ulysses.generate_video(request())
    assert ulysses.health_problem() is None
    ray.kill(ulysses.ranks[1])
    problem = wait_until(ulysses.health_problem, 30, interval_s=0.5, what="the dead rank to show")
    assert problem.startswith("rank 1 of hunyuanvideo died")
    with ulysses._lock:  # as while a request runs: it meets the dead rank itself
        assert ulysses.health_problem() is None
    with pytest.raises(Unavailable):
        ulysses.generate_video(request())
    assert ulysses.health_problem() is None  # torn down: the next request rebuilds the group
    assert ulysses.generate_video(request()).num_frames == 9


@pytest.fixture(scope="module")
def pipeline(ray_cluster, weights: str) -> Iterator[ParallelEngine]:
    """A 2-stage pipeline-parallel group (parallel/pipeline.py): rank 0 holds the dual-stream block of
    the tiny transformer, rank 1 the single-stream one."""
    engine = start(weights, pipeline_degree=2)
    yield engine
    engine.shutdown()


def test_pipeline_2_frames_match_a_single_process(pipeline, single_process):
    frames = pipeline.frames(request()).frames
    assert np.abs(frames - reference_frames(single_process)).max() <= 1e-4


def test_a_pipeline_group_streams_every_step_and_cancels_at_the_next_one(pipeline):
    steps: list[int] = []
    video = pipeline.generate_video(request(num_inference_steps=3), lambda e: steps.append(e.step))
    assert probe_mp4(video.data)[:3] == (9, 32, 32) and {1, 2, 3} <= set(steps)
    cancel = threading.Event()

    def on_progress(event: ProgressEvent) -> None:
        if event.step == 2:
            cancel.set()

    with pytest.raises(Cancelled):
        pipeline.generate_video(request(**LONG), on_progress, cancel)
    assert pipeline.generate_video(request()).num_frames == 9


def test_a_pipeline_stage_that_dies_fails_the_request_unavailable_and_the_group_is_rebuilt(pipeline):
    if not pipeline.ready:
        pipeline.generate_video(request())

    def on_progress(event: ProgressEvent) -> None:
        if event.step == 2:
            ray.kill(pipeline.ranks[1])

    with pytest.raises(Unavailable, match="rank 1 of hunyuanvideo died"):
        pipeline.generate_video(request(**LONG), on_progress)
    assert pipeline.generate_video(request()).num_frames == 9
