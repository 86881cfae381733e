"""Hostile input through the real gRPC API: every answer is a proper status, and nothing breaks.

A hypothesis property test sends generated, mostly invalid GenerationParams (wild numbers, NaN and
infinities, foreign or bomb images, huge prompts, unknown models) to Generate and SubmitJob; requests it
finds valid are cancelled at once. Afterwards no replica has died and valid requests still succeed.
"""

from __future__ import annotations

from collections import Counter

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serve.api import pb, pb_grpc
from serve.catalog import Task, get_spec
from serve.request import MAX_IMAGE_BYTES
from tests.integration.conftest import APP, PROXY_MAX_MESSAGE_BYTES, WARM_MODELS
from tests.support import encoded, png, png_header_only

pytestmark = pytest.mark.integration


ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
# A refusal names one of the request's fields (every field of GenerationParams, the proto being the one
# list of them) or a job's.
FIELDS = {*pb.GenerationParams.DESCRIPTOR.fields_by_name, "idempotency_key", "job_id"}

INT32 = st.integers(-(2**31), 2**31 - 1)
NUMBERS = st.one_of(st.none(), st.integers(0, 40), st.sampled_from([1, 16, 32, 64, 128]), INT32)
FLOATS = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.floats(-5, 40))
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=60)
IMAGES = st.sampled_from(
    [
        b"",
        b"garbage",
        b"\x89PNG\r\n\x1a\n",
        png(),
        png(8, 4096),
        encoded("GIF"),
        encoded("TIFF"),
        png_header_only(20_000, 20_000),
        png_header_only(60_000, 60_000),
    ]
)
UNKNOWN_MODELS = st.sampled_from(["", "sora", "../../etc/passwd", "SVD", "svd\x00"])
# Valid requests go to the models that keep a replica: one for a model scaled to zero would start a replica
# for each, only to be cancelled (the Router validates every model of the catalog alike).
DEPLOYED = st.sampled_from(sorted(WARM_MODELS))
MODELS = st.one_of(DEPLOYED, UNKNOWN_MODELS)


SEEDS = st.one_of(st.integers(-(2**63), 2**63 - 1), st.integers(0, 100))
WILD: dict[str, st.SearchStrategy] = {
    # Another valid model would be refused for its own reasons (an image it lacks), not for "model".
    "model": UNKNOWN_MODELS,
    "prompt": st.one_of(TEXT, st.just("x" * 2001), st.just("   ")),
    "negative_prompt": st.one_of(TEXT, st.just("y" * 2001)),
    "image": IMAGES,
    "num_frames": NUMBERS,
    "fps": NUMBERS,
    "height": NUMBERS,
    "width": NUMBERS,
    "num_inference_steps": NUMBERS,
    "guidance_scale": FLOATS,
    "seed": SEEDS,
    "motion_bucket_id": NUMBERS,
    "noise_aug_strength": FLOATS,
    "decode_chunk_size": NUMBERS,
    "true_cfg_scale": FLOATS,
    "guidance_scale_2": FLOATS,
    "boundary_ratio": FLOATS,
    "flow_shift": FLOATS,
    "decode_timestep": FLOATS,
    "decode_noise_scale": FLOATS,
    "output_format": st.integers(-(2**31), 2**31 - 1),
}
# Every status the property test saw, checked by the last test: the mix must include both kinds.
SEEN: Counter[str] = Counter()


@st.composite
def one_bad_field(draw: st.DrawFn) -> tuple[pb.GenerationParams, str | None]:
    """A valid request for a deployed model with at most one field replaced by a wild value."""
    model = draw(DEPLOYED)
    fields = {"model": model, "prompt": "a fox in the snow", "seed": 7}
    if get_spec(model).task is Task.I2V:
        fields["image"] = png()
    field = draw(st.one_of(st.none(), st.sampled_from(sorted(WILD))))
    if field is not None and (value := draw(WILD[field])) is not None:
        fields[field] = value
    return pb.GenerationParams(**fields), field


@st.composite
def wild_params(draw: st.DrawFn) -> tuple[pb.GenerationParams, str | None]:
    """Every field wild at once."""
    fields = {
        "model": draw(MODELS),
        "prompt": draw(st.one_of(TEXT, st.just("a fox in the snow"), st.just("x" * 2001))),
        "negative_prompt": draw(st.one_of(st.just(""), TEXT, st.just("y" * 2001))),
        "image": draw(IMAGES),
        "output_format": draw(st.integers(-1, 4)),
    }
    for name in ("num_frames", "fps", "height", "width", "num_inference_steps"):
        if (value := draw(NUMBERS)) is not None:
            fields[name] = value
    for name in ("motion_bucket_id", "decode_chunk_size"):
        if (value := draw(NUMBERS)) is not None:
            fields[name] = value
    for name in ("guidance_scale", "noise_aug_strength", "true_cfg_scale"):
        if (value := draw(FLOATS)) is not None:
            fields[name] = value
    if draw(st.booleans()):
        fields["seed"] = draw(SEEDS)
    return pb.GenerationParams(**fields), None


@pytest.fixture(scope="module")
def stub(service, replicas_before):
    options = [("grpc.max_send_message_length", 2 * PROXY_MAX_MESSAGE_BYTES)]
    with grpc.insecure_channel(service.target, options=options) as channel:
        yield pb_grpc.VideoGenerationStub(channel)


METADATA = [("application", APP)]


def assert_proper(error: grpc.RpcError) -> None:
    """A stated status with a message; INVALID_ARGUMENT names the field first."""
    assert error.code() in ALLOWED, (error.code(), error.details())
    assert error.details(), error.code()
    if error.code() == grpc.StatusCode.INVALID_ARGUMENT:
        assert error.details().split(":", 1)[0] in FIELDS, error.details()


def call(stub, rpc: str, params: pb.GenerationParams, key: str, bad_field: str | None) -> grpc.StatusCode:
    """Send one request; cancel at once whatever is accepted, so valid requests cost little.

    Where only `bad_field` was made wild, a rejection must name that field.
    """
    try:
        if rpc == "Generate":
            stream = stub.Generate(pb.GenerateRequest(params=params), metadata=METADATA, timeout=60)
            first = next(stream)  # validation happens before the first event
            assert first.progress.stage == pb.STAGE_QUEUED
            stream.cancel()
        else:
            request = pb.SubmitJobRequest(params=params, idempotency_key=key)
            job = stub.SubmitJob(request, metadata=METADATA, timeout=60)
            stub.CancelJob(pb.CancelJobRequest(job_id=job.job_id), metadata=METADATA, timeout=60)
        return grpc.StatusCode.OK
    except grpc.RpcError as error:
        assert_proper(error)
        if bad_field is not None and error.code() == grpc.StatusCode.INVALID_ARGUMENT:
            assert error.details().startswith(f"{bad_field}:"), (bad_field, error.details())
        return error.code()


@settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(
    request=st.one_of(one_bad_field(), wild_params()),
    rpc=st.sampled_from(["Generate", "SubmitJob"]),
    key=st.one_of(st.just(""), st.from_regex(r"[A-Za-z0-9._:-]{1,20}", fullmatch=True)),
)
def test_generated_requests_get_a_proper_status_every_time(stub, request, rpc, key):
    params, bad_field = request
    SEEN[call(stub, rpc, params, key, bad_field).name] += 1


def test_bad_idempotency_keys_are_invalid_argument_naming_the_field(stub):
    for key in ["../../x", "a" * 129, "key with spaces", "ключ", "k\x00"]:
        params = pb.GenerationParams(model="hunyuanvideo", prompt="a fox")
        with pytest.raises(grpc.RpcError) as error:
            stub.SubmitJob(
                pb.SubmitJobRequest(params=params, idempotency_key=key), metadata=METADATA, timeout=30
            )
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.value.details().startswith("idempotency_key:")


@settings(
    max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(job_id=st.one_of(TEXT, st.from_regex(r"[0-9a-f]{32}", fullmatch=True), st.just("../" * 10 + "passwd")))
def test_generated_job_ids_get_invalid_argument_or_not_found(stub, job_id):
    for method, request in [
        (stub.GetJob, pb.GetJobRequest(job_id=job_id)),
        (stub.CancelJob, pb.CancelJobRequest(job_id=job_id)),
        (lambda r, **kw: list(stub.FetchVideo(r, **kw)), pb.FetchVideoRequest(job_id=job_id)),
        (lambda r, **kw: list(stub.WatchJob(r, **kw)), pb.WatchJobRequest(job_id=job_id)),
    ]:
        with pytest.raises(grpc.RpcError) as error:
            method(request, metadata=METADATA, timeout=30)
        assert error.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)
        assert_proper(error.value)


def test_an_image_over_the_byte_limit_is_invalid_argument(stub):
    params = pb.GenerationParams(model="svd", image=png() + b"\0" * MAX_IMAGE_BYTES)
    with pytest.raises(grpc.RpcError) as error:
        stub.SubmitJob(pb.SubmitJobRequest(params=params), metadata=METADATA, timeout=60)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details().startswith("image:")


def test_a_message_over_the_proxy_limit_is_refused_by_the_proxy(stub):
    params = pb.GenerationParams(model="svd", image=b"\0" * (PROXY_MAX_MESSAGE_BYTES + 1024))
    with pytest.raises(grpc.RpcError) as error:
        stub.SubmitJob(pb.SubmitJobRequest(params=params), metadata=METADATA, timeout=60)
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.value.details()


def test_a_decompression_bomb_is_invalid_argument(stub):
    params = pb.GenerationParams(model="svd", image=png_header_only(60_000, 60_000))
    with pytest.raises(grpc.RpcError) as error:
        stub.SubmitJob(pb.SubmitJobRequest(params=params), metadata=METADATA, timeout=60)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details().startswith("image:") and "bomb" in error.value.details()


@pytest.fixture(scope="module")
def replicas_before(service) -> set[str]:
    names = service.resident_replicas()
    assert len(names) == len(WARM_MODELS) + 1
    return names


@pytest.mark.parametrize("model", ["hunyuanvideo", "svd"])
def test_after_the_onslaught_no_replica_died_and_valid_requests_succeed(service, replicas_before, model):
    # Runs after the property tests (file order): the same replica processes are still serving.
    if SEEN:  # the property test ran first: it sent both accepted and refused requests
        assert SEEN["OK"] and SEEN["INVALID_ARGUMENT"], SEEN
    assert service.resident_replicas() == replicas_before
    fields = {"prompt": "a red fox", "seed": 1}
    if model == "svd":
        fields["image"] = png()
    with service.client() as client:
        video = client.generate(pb.GenerationParams(model=model, **fields), timeout=120)
    assert video.summary.num_frames > 0
