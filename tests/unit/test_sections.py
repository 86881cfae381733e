"""Long clips in the engine: section i of n, each section's frames as soon as it is decoded, the
progressive MP4 equal to the clip made in one piece, and the step plan equal to the steps the
pipeline runs."""

from __future__ import annotations

import numpy as np
import pytest

from serve.catalog import CATALOG, get_spec
from serve.errors import Cancelled
from serve.families import get_family
from serve.sections import SectionPlan
from serve.video import decode_frames, encode_mp4
from tests.support import tiny_engine, tiny_request

MODEL = "helios"
SECTION = get_spec(MODEL).section_frames
FPS = get_spec(MODEL).tiny_limits.default_fps
IN_SECTIONS = sorted(name for name, spec in CATALOG.items() if spec.in_sections)  # streamed or not


@pytest.fixture(scope="module")
def engine():
    return tiny_engine(MODEL)


def test_a_plan_places_each_step_in_its_section():
    plan = SectionPlan(steps=[6, 3, 3], num_frames=80)
    assert plan.total_steps == 12 and plan.total_sections == 3
    assert [plan.section_of(step) for step in range(1, 13)] == [1] * 6 + [2] * 3 + [3] * 3


@pytest.mark.parametrize("model", IN_SECTIONS)
@pytest.mark.parametrize(("sections", "steps"), [(1, 1), (2, 2)])
def test_the_plan_is_the_steps_the_pipeline_runs(model, sections, steps):
    engine = tiny_engine(model)
    frames = get_spec(model).frames_of_sections(sections) + (1 - sections)  # not a whole number of sections
    request = tiny_request(model, num_frames=frames, num_inference_steps=steps)
    events = []
    output = engine.generate(request, on_progress=events.append)
    plan = engine.section_plan(request)
    assert plan.steps == get_family(get_spec(model).family).steps_per_section(request)
    assert plan.total_sections == sections
    assert output.steps_completed == plan.total_steps
    denoising = [e for e in events if e.stage == "denoising"]
    assert [e.step for e in denoising] == list(range(1, plan.total_steps + 1))
    assert {e.total_steps for e in denoising} == {plan.total_steps}
    assert {e.total_sections for e in denoising} == {sections}
    assert [e.section for e in denoising] == [plan.section_of(e.step) for e in denoising]
    assert output.frame_count == frames and len(output.frames) == frames


def test_sections_come_out_one_by_one_and_the_pieces_are_the_whole_file(engine):
    request = tiny_request(MODEL, num_frames=3 * SECTION, seed=3)
    made: list[tuple[int, int]] = []
    pieces: list[bytes] = []
    video = engine.generate_video(
        request, on_progress=lambda e: made.append((e.section, len(pieces))), on_piece=pieces.append
    )
    assert len(pieces) == 3 and b"".join(pieces) == video.data and video.streamed
    assert video.num_frames == 3 * SECTION and video.first_piece_seconds < video.inference_seconds
    # Each prefix of pieces plays: the first section alone, then two, then the clip.
    assert [len(decode_frames(b"".join(pieces[:k]))) for k in (1, 2, 3)] == [
        SECTION,
        2 * SECTION,
        3 * SECTION,
    ]
    # The same seed made in one piece (no streaming) gives the same frames, up to H.264's loss: no more
    # than encoding that clip in one piece loses, and far less than another seed's clip differs.
    whole = engine.generate(request).frames.astype(np.int16)
    streamed_error = np.abs(decode_frames(video.data).astype(np.int16) - whole).mean()
    one_piece_error = np.abs(
        decode_frames(encode_mp4(whole.astype(np.uint8), FPS)).astype(np.int16) - whole
    ).mean()
    assert streamed_error <= 1.25 * one_piece_error
    # Before encoding, the sections handed out are exactly the clip made in one piece.
    handed_out: list[np.ndarray] = []
    engine.generate(request, on_section=lambda index, frames: handed_out.append(frames))
    assert np.array_equal(np.concatenate(handed_out).astype(np.int16), whole)


def test_a_cancel_in_section_two_stops_there_and_encodes_nothing_after(engine):
    import threading

    request = tiny_request(MODEL, num_frames=4 * SECTION, num_inference_steps=2)
    cancel = threading.Event()
    pieces: list[bytes] = []
    seen: list[tuple[int, int]] = []

    def on_progress(event):
        seen.append((event.section, event.step))
        if event.section == 2:
            cancel.set()

    with pytest.raises(Cancelled):
        engine.generate_video(request, on_progress=on_progress, cancel=cancel, on_piece=pieces.append)
    first_in_two = next(step for section, step in seen if section == 2)
    assert max(step for _, step in seen) == first_in_two  # stopped at that very step
    assert len(pieces) == 1  # the first section only; nothing is left encoding
    # The pipeline is whole again for the next request: its VAE and postprocessing are the class's.
    assert "decode" not in engine.pipe.vae.__dict__
    assert "postprocess_video" not in engine.pipe.video_processor.__dict__
    assert engine.generate(tiny_request(MODEL, num_frames=SECTION)).frame_count == SECTION


def test_framepack_sections_handed_out_make_the_clip_the_pipeline_blends_whole():
    # FramePack-F1 blends each section into the one before it: what is handed out section by section
    # (all but the overlap, then the last tail) is exactly the clip the unhooked pipeline returns.
    import torch

    from serve.video import to_uint8

    model = "hunyuanvideo-framepack-f1"
    engine = tiny_engine(model)
    request = tiny_request(model, num_frames=3 * get_spec(model).section_frames)
    streamed = engine.generate(request).frames
    torch.manual_seed(request.seed)
    with torch.inference_mode():
        whole = engine.pipe(**engine.pipeline_call_kwargs(request)).frames[0]
    assert len(whole) >= request.num_frames
    assert np.array_equal(streamed, to_uint8(np.asarray(whole))[: request.num_frames])


def test_framepack_made_backward_comes_whole_after_its_last_section_and_is_its_own_sampling():
    # FramePack's anti-drifting sampling makes the last section first, so no frame is final before the
    # end: nothing streams, progress still counts the sections, and the MP4 is one file of the frames
    # asked for. The tiny FramePack and FramePack-F1 share their weights: the frames differ by the
    # sampling alone.
    from serve.config import ModelDeployment
    from serve.wire import model_info

    model = "hunyuanvideo-framepack"
    spec = get_spec(model)
    info = model_info(spec, ModelDeployment(name=model), cold_start_s=1.0)
    assert spec.in_sections and not spec.progressive and info.section_frames == 0  # ListModels: not streamed
    engine = tiny_engine(model)
    small = {"num_inference_steps": 1, "height": 32, "width": 32}
    request = tiny_request(model, num_frames=spec.frames_of_sections(3) - 4, **small)
    events: list = []
    pieces: list[bytes] = []
    video = engine.generate_video(request, on_progress=events.append, on_piece=pieces.append)
    assert not pieces and not video.streamed
    assert sorted({e.section for e in events if e.stage == "denoising"}) == [1, 2, 3]
    assert video.num_frames == request.num_frames == len(decode_frames(video.data))
    backward = engine.generate(request).frames
    forward = tiny_engine("hunyuanvideo-framepack-f1").generate(
        tiny_request("hunyuanvideo-framepack-f1", num_frames=request.num_frames, **small)
    )
    assert backward.shape == forward.frames.shape and not np.array_equal(backward, forward.frames)


def test_skyreels_windows_decoded_as_they_come_make_the_clip_the_pipeline_decodes_whole():
    # SkyReels-V2 diffusion forcing decodes its accumulated latents once at the end; decoded window by
    # window as each is final (continuing the VAE's causal cache) they give exactly the same frames. Its
    # history re-noising draws from the global RNG: seeded the same for both runs.
    import torch

    from serve.video import to_uint8

    model = "skyreels-v2-df-720p"
    engine = tiny_engine(model)
    request = tiny_request(model, num_frames=get_spec(model).frames_of_sections(3) - 7)
    handed_out: list[np.ndarray] = []
    output = engine.generate(request, on_section=lambda index, frames: handed_out.append(frames))
    assert len(handed_out) == 3 and output.frame_count == request.num_frames
    torch.manual_seed(request.seed)
    with torch.inference_mode():
        whole = engine.pipe(**engine.pipeline_call_kwargs(request)).frames[0]
    assert np.array_equal(np.concatenate(handed_out), to_uint8(np.asarray(whole))[: request.num_frames])
    assert "prepare_latents" not in vars(engine.pipe) and "decode" not in vars(engine.pipe.vae)
