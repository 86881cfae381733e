"""The engine on every tiny checkpoint: real from_pretrained, real pipelines, real MP4s."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from serve.catalog import CATALOG, MemoryOptions, get_spec
from serve.engine import Engine
from serve.errors import Cancelled, WeightsMissing
from serve.events import ProgressEvent, Stage
from serve.video import probe_mp4
from tests.support import tiny_engine, tiny_request

engine_for = tiny_engine


@pytest.mark.parametrize("model", sorted(CATALOG))
def test_every_model_makes_an_mp4_with_the_requested_frames_size_and_fps(model):
    request = tiny_request(model)
    events: list[ProgressEvent] = []
    video = engine_for(model).generate_video(request, events.append)
    assert probe_mp4(video.data) == (request.num_frames, request.height, request.width, float(request.fps))
    denoising = [e.step for e in events if e.stage is Stage.DENOISING]
    plan = engine_for(model).section_plan(request)  # a long clip's steps: every section's
    assert denoising == list(range(1, (plan.total_steps if plan else request.num_inference_steps) + 1))
    assert events[0].stage is Stage.PREPARING and events[-1].stage is Stage.DONE


@pytest.mark.parametrize("model", ["hunyuanvideo", "svd"])
def test_same_seed_same_frames_other_seed_other_frames(model):
    engine = engine_for(model)
    first = engine.generate(tiny_request(model, seed=11)).frames
    again = engine.generate(tiny_request(model, seed=11)).frames
    other = engine.generate(tiny_request(model, seed=12)).frames
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


@pytest.mark.parametrize("model", sorted(CATALOG))
def test_frames_depend_on_the_request_seed_alone_not_on_the_process_wide_rng(model):
    # Another thread of a serving replica may draw from torch's global RNG at any moment; a pipeline
    # that samples from it (I2VGen-XL's image latents did) gives another video for the same seed.
    engine = engine_for(model)
    kwargs = engine.pipeline_call_kwargs(tiny_request(model, seed=11))
    frames = []
    for global_seed in (1, 2):
        kwargs["generator"] = torch.Generator("cpu").manual_seed(11)
        torch.manual_seed(global_seed)
        with torch.inference_mode():
            frames.append(np.asarray(engine.pipe(**kwargs).frames[0]))
    assert np.array_equal(frames[0], frames[1])


def test_cancel_stops_at_the_next_step_boundary():
    engine = engine_for("hunyuanvideo")
    cancel = threading.Event()
    steps: list[int] = []

    def on_progress(event: ProgressEvent) -> None:
        if event.stage is Stage.DENOISING:
            steps.append(event.step)
            if event.step == 2:
                cancel.set()

    with pytest.raises(Cancelled, match="after step 2 of 10"):
        engine.generate(tiny_request("hunyuanvideo", num_inference_steps=10), on_progress, cancel)
    assert steps == [1, 2]
    # The pipeline is usable again, with its scheduler unpatched.
    assert "step" not in vars(engine.pipe.scheduler)
    assert engine.generate(tiny_request("hunyuanvideo")).steps_completed == 2


def test_missing_weights_name_the_repo_and_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(WeightsMissing) as error:
        Engine(get_spec("cogvideox-5b"), "hub").load()
    assert "THUDM/CogVideoX-5b" in str(error.value) and "hf download THUDM/CogVideoX-5b" in str(error.value)


def test_a_weights_directory_without_a_checkpoint_says_how_to_make_one(tmp_path):
    with pytest.raises(WeightsMissing, match="videogen tiny-models"):
        Engine(get_spec("svd"), str(tmp_path)).load()


def test_fp8_storage_option_keeps_the_denoiser_weights_in_float8():
    import torch

    engine = Engine(get_spec("hunyuanvideo"), "tiny", MemoryOptions(fp8_weights=True, vae_tiling=True))
    engine.load()
    dtypes = {p.dtype for p in engine.pipe.transformer.parameters()}
    assert torch.float8_e4m3fn in dtypes
    video = engine.generate_video(tiny_request("hunyuanvideo"))
    assert probe_mp4(video.data)[0] == tiny_request("hunyuanvideo").num_frames


def test_text_encoder_loads_8bit_and_the_pipeline_still_generates():
    engine = Engine(get_spec("hunyuanvideo"), "tiny", MemoryOptions(text_encoder_quantization="8bit"))
    engine.load()
    assert "Linear8bitLt" in {type(m).__name__ for m in engine.pipe.text_encoder.modules()}
    video = engine.generate_video(tiny_request("hunyuanvideo"))
    assert probe_mp4(video.data)[0] == tiny_request("hunyuanvideo").num_frames


def test_fp8_gemms_are_refused_without_a_capable_gpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU; the GPU tests cover FP8 GEMMs")
    with pytest.raises(RuntimeError, match=r"compute capability >= 8\.9"):
        Engine(get_spec("hunyuanvideo"), "tiny", MemoryOptions(fp8_gemms=True)).load()


def test_fp8_storage_and_fp8_gemms_exclude_each_other():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="exclude each other"):
        MemoryOptions(fp8_weights=True, fp8_gemms=True)


@pytest.mark.parametrize("model", sorted(CATALOG))
def test_stage_seconds_split_the_inference_time(model):
    video = engine_for(model).generate_video(tiny_request(model))

    assert video.text_encode_seconds > 0 and video.vae_decode_seconds > 0 and video.denoise_seconds > 0
    assert video.text_encode_seconds + video.vae_decode_seconds + video.denoise_seconds == pytest.approx(
        video.inference_seconds
    )
    assert "decode" not in vars(engine_for(model).pipe.vae)  # the timing wrapper is gone again
