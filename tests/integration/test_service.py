"""The gRPC API end to end: real Ray Serve, real gRPC over loopback, real MP4s."""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest

from serve.api import pb
from serve.catalog import CATALOG, Task, get_spec
from serve.video import decode_frames, probe_mp4
from tests.integration.conftest import BACKPRESSURE_MODEL, BACKPRESSURE_QUEUE
from tests.support import png

pytestmark = pytest.mark.integration


def params(model: str, **fields) -> pb.GenerationParams:
    defaults = {"prompt": "a red fox in the snow", "seed": 5}
    if model in CATALOG and get_spec(model).task is Task.I2V:
        defaults["image"] = png()
    return pb.GenerationParams(model=model, **{**defaults, **fields})


def tiny_expectations(model: str) -> tuple[int, int, int, float]:
    limits = get_spec(model).tiny_limits
    return limits.default_num_frames, limits.default_height, limits.default_width, float(limits.default_fps)


def test_list_models_reports_every_deployed_model_with_limits(service):
    with service.client() as client:
        models = {m.name: m for m in client.list_models()}
    assert set(models) == set(CATALOG)
    svd = models["svd"]
    assert svd.task == pb.TASK_I2V and "motion_bucket_id" in svd.knobs
    assert svd.num_frames.max == get_spec("svd").tiny_limits.num_frames.max


@pytest.fixture(scope="module", params=sorted(CATALOG))
def model(request) -> str:
    """Each model of the catalog; module scope makes pytest run every test of one model before the next,
    so a model that scaled to zero (conftest.WARM_MODELS) starts its replica once for all of them."""
    return request.param


def test_generate_streams_progress_then_a_decodable_mp4(service, model):
    progress: list[pb.Progress] = []
    with service.client() as client:
        video = client.generate(params(model), on_progress=progress.append, timeout=120)
    assert probe_mp4(video.data) == tiny_expectations(model)
    assert video.summary.video_bytes == len(video.data) and video.summary.seed == 5
    stages = [p.stage for p in progress]
    assert stages[0] == pb.STAGE_QUEUED and pb.STAGE_DENOISING in stages and stages[-1] == pb.STAGE_DONE


def test_submit_watch_fetch_gives_the_same_frames_as_generate(service, model):
    with service.client() as client:
        job = client.submit(params(model))
        assert job.state in (pb.JOB_STATE_QUEUED, pb.JOB_STATE_RUNNING) and len(job.job_id) == 32
        final = client.wait(job.job_id, timeout=120)
        assert final.state == pb.JOB_STATE_SUCCEEDED, final.error
        data = client.fetch(final.job_id, chunk_bytes=1024)
        direct = client.generate(params(model), timeout=120)
    assert probe_mp4(data) == tiny_expectations(model)
    # The same seed through either path: the same decoded frames, to within the small difference
    # still seen now and then for the same seed through Ray (rarely: a few percent of the pixels, a mean
    # under half a level; never in one process; the cause is open, see README "Reliability").
    direct_frames, job_frames = decode_frames(direct.data), decode_frames(data)
    difference = np.abs(direct_frames.astype(int) - job_frames)
    assert difference.mean() < 1.0 and (difference > 0).mean() < 0.25, (difference.mean(), difference.max())
    assert final.summary.sha256 == hashlib.sha256(data).hexdigest()
    assert final.summary.seed == direct.summary.seed == 5
    assert final.started_at >= final.created_at and final.finished_at >= final.started_at


def test_step_caching_is_chosen_per_request_and_reported_by_summary_and_get_job(service):
    cached = params(
        "hunyuanvideo", num_inference_steps=20, cache_policy=pb.CACHE_POLICY_FIRST_BLOCK, cache_threshold=0.3
    )
    with service.client() as client:
        models = {m.name: m for m in client.list_models()}
        plain = client.generate(params("hunyuanvideo", num_inference_steps=20), timeout=120).summary
        video = client.generate(cached, timeout=120).summary
        job = client.wait(client.submit(cached).job_id, timeout=120)
    assert list(models["hunyuanvideo"].cache_policies) == [pb.CACHE_POLICY_FIRST_BLOCK]
    assert list(models["svd"].cache_policies) == []  # a UNet model: no step cache
    assert models["hunyuanvideo"].default_cache_policy == pb.CACHE_POLICY_OFF  # tiny weights
    assert (plain.transformer_forwards, plain.transformer_forwards_skipped) == (20, 0)
    # Where the time went, stage by stage, as GetJob and the capacity report read it.
    assert min(plain.text_encode_seconds, plain.denoise_seconds, plain.vae_decode_seconds) > 0
    assert job.summary.denoise_seconds > 0
    assert video.cache_policy == pb.CACHE_POLICY_FIRST_BLOCK and video.cache_threshold == 0.3
    assert video.transformer_forwards == 20 and 0 < video.transformer_forwards_skipped < 20
    assert job.summary.transformer_forwards_skipped == video.transformer_forwards_skipped
    assert job.summary.sha256 == video.sha256 != plain.sha256


def test_progress_arrives_while_the_video_is_being_made(service):
    steps: list[tuple[float, float, int]] = []  # (arrival here, elapsed on the replica, step)

    def on_progress(progress: pb.Progress) -> None:
        if progress.stage == pb.STAGE_DENOISING:
            steps.append((time.monotonic(), progress.elapsed_seconds, progress.step))

    with service.client() as client:
        client.generate(
            params("hunyuanvideo", num_inference_steps=40, height=128, width=128, num_frames=17),
            on_progress=on_progress,
            timeout=120,
        )
    # Steps faster than the progress interval are coalesced; the last one always arrives.
    interval = service.config.models[0].progress_interval_s
    assert steps[-1][2] == 40 and len(steps) >= min(40, int(steps[-1][1] / interval) // 2)
    # Streamed as made: the events arrive spread over the time the denoising took on the replica,
    # not together at the end.
    denoising_s = steps[-1][1] - steps[0][1]
    assert denoising_s > 0 and steps[-1][0] - steps[0][0] > 0.5 * denoising_s


def test_a_large_video_arrives_intact_in_chunks(service):
    # A GIF of random-weight output barely compresses: 512x512x16 frames is over 4 MB.
    request = params(
        "modelscope-t2v", num_frames=16, height=512, width=512, output_format=pb.OUTPUT_FORMAT_GIF
    )
    chunks: list[pb.VideoChunk] = []
    summary = None
    with service.client() as client:
        for event in client.generate_stream(request, timeout=300):
            if event.WhichOneof("event") == "chunk":
                chunks.append(event.chunk)
            elif event.WhichOneof("event") == "summary":
                summary = event.summary
    data = b"".join(chunk.data for chunk in chunks)
    assert summary is not None and summary.video_bytes == len(data) > 4 * 1024 * 1024
    assert len(chunks) == -(-len(data) // service.config.router.chunk_bytes)
    assert [c.offset for c in chunks] == [i * service.config.router.chunk_bytes for i in range(len(chunks))]
    assert hashlib.sha256(data).hexdigest() == summary.sha256 and data[:6] == b"GIF89a"


def test_unknown_model_is_not_found(service):
    with service.client() as client, pytest.raises(grpc.RpcError) as error:
        client.generate(params("sora"), timeout=30)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND and "sora" in error.value.details()


@pytest.mark.parametrize(
    ("model", "fields", "field"),
    [
        ("hunyuanvideo", {"prompt": ""}, "prompt"),
        ("hunyuanvideo", {"num_frames": 1000}, "num_frames"),
        ("hunyuanvideo", {"height": 33}, "height"),
        ("hunyuanvideo", {"width": 4096}, "width"),
        ("hunyuanvideo", {"num_inference_steps": 10_000}, "num_inference_steps"),
        ("hunyuanvideo", {"guidance_scale": float("nan")}, "guidance_scale"),
        ("hunyuanvideo", {"fps": 1000}, "fps"),
        ("hunyuanvideo", {"image": b"\x89PNG"}, "image"),
        ("svd", {"image": b"garbage"}, "image"),
        ("svd", {"motion_bucket_id": 999}, "motion_bucket_id"),
        ("svd", {"noise_aug_strength": -1.0}, "noise_aug_strength"),
        ("hunyuanvideo", {"output_format": 99}, "output_format"),
        ("hunyuanvideo", {"cache_policy": 9}, "cache_policy"),
        ("svd", {"cache_policy": pb.CACHE_POLICY_FIRST_BLOCK}, "cache_policy"),
        (
            "hunyuanvideo",
            {"cache_policy": pb.CACHE_POLICY_FIRST_BLOCK, "cache_threshold": 2.0},
            "cache_threshold",
        ),
    ],
)
def test_each_invalid_field_is_invalid_argument_naming_it(service, model, fields, field):
    with service.client() as client:
        for call in (
            lambda: client.generate(params(model, **fields), timeout=30),
            lambda: client.submit(params(model, **fields)),
        ):
            with pytest.raises(grpc.RpcError) as error:
                call()
            assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert error.value.details().startswith(f"{field}:")


def test_job_lookups_reject_bad_ids_and_unknown_jobs(service):
    with service.client() as client:
        for call, job_id, code in [
            (client.get_job, "../../etc/passwd", grpc.StatusCode.INVALID_ARGUMENT),
            (client.get_job, "f" * 32, grpc.StatusCode.NOT_FOUND),
            (client.cancel, "f" * 32, grpc.StatusCode.NOT_FOUND),
            (client.fetch, "f" * 32, grpc.StatusCode.NOT_FOUND),
        ]:
            with pytest.raises(grpc.RpcError) as error:
                call(job_id)
            assert error.value.code() == code


def test_idempotency_key_returns_the_existing_job(service):
    with service.client() as client:
        first = client.submit(params("svd"), idempotency_key="order-42")
        second = client.submit(params("svd"), idempotency_key="order-42")
        assert first.job_id == second.job_id
        assert client.wait(first.job_id, timeout=60).state == pb.JOB_STATE_SUCCEEDED


def test_requests_beyond_running_plus_queued_are_resource_exhausted(service):
    # One replica running one request, BACKPRESSURE_QUEUE waiting: the rest are refused at once.
    total = 1 + BACKPRESSURE_QUEUE + 3
    barrier = threading.Barrier(total)

    def call(_: int) -> str:
        with service.client() as client:
            barrier.wait()
            try:
                client.generate(params(BACKPRESSURE_MODEL, num_inference_steps=150), timeout=240)
                return "OK"
            except grpc.RpcError as error:
                return error.code().name

    with ThreadPoolExecutor(total) as pool:
        outcomes = list(pool.map(call, range(total)))
    assert outcomes.count("OK") == 1 + BACKPRESSURE_QUEUE, outcomes
    assert outcomes.count("RESOURCE_EXHAUSTED") == total - 1 - BACKPRESSURE_QUEUE, outcomes


def test_a_retried_submit_gets_its_job_back_even_when_the_model_is_at_capacity(service):
    key = f"retry-{uuid.uuid4().hex[:8]}"
    with service.client() as client:
        long = params(BACKPRESSURE_MODEL, num_inference_steps=100)
        jobs = [client.submit(long, idempotency_key=key)]
        jobs += [client.submit(long) for _ in range(BACKPRESSURE_QUEUE)]  # 1 running + the queue: full
        try:
            with pytest.raises(grpc.RpcError) as full:
                client.submit(long)
            assert full.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            # The client's retry (its first answer lost, say) adds no work: the same job, not a refusal.
            assert client.submit(long, idempotency_key=key).job_id == jobs[0].job_id
        finally:
            for job in jobs:
                client.cancel(job.job_id)


def test_two_models_run_at_the_same_time_on_their_own_deployments(service):
    # Two models that keep a replica (conftest.WARM_MODELS): a cold start would keep them apart.
    windows: dict[str, list[float]] = {"hunyuanvideo": [], "cogvideox-2b": []}

    def run(model: str) -> None:
        with service.client() as client:
            client.generate(
                params(model, num_inference_steps=30),
                on_progress=lambda p: (
                    windows[model].append(time.monotonic()) if p.stage == pb.STAGE_DENOISING else None
                ),
                timeout=120,
            )

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(run, windows))
    first, second = windows.values()
    # Their denoising loops overlap in time: neither waited for the other to finish.
    assert max(first[0], second[0]) < min(first[-1], second[-1])


def test_health_service_reports_serving(service):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(service.target) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), metadata=[("application", "videogen")], timeout=10
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def health(service, name: str) -> int:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(service.target) as channel:
        request = health_pb2.HealthCheckRequest(service=name)
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(request, metadata=[("application", "videogen")], timeout=10).status


def test_health_is_reported_per_model_and_an_unknown_service_is_not_found(service):
    from grpc_health.v1 import health_pb2

    serving = health_pb2.HealthCheckResponse.SERVING
    assert health(service, "") == serving
    assert health(service, "videogen.v1.VideoGeneration") == serving
    # The models that keep a replica in the session's app (conftest.WARM_MODELS) serve.
    assert all(health(service, name) == serving for name in ("cogvideox-2b", "svd", "hunyuanvideo"))
    with pytest.raises(grpc.RpcError) as error:
        health(service, "sora")
    assert error.value.code() == grpc.StatusCode.NOT_FOUND and "cogvideox-2b" in error.value.details()
