"""API keys end to end: a separate application ("secure") with auth on, over the shared gRPC proxy.

Covers UNAUTHENTICATED for missing and unknown keys on every RPC, job scoping to the key's name,
per-key quotas (RESOURCE_EXHAUSTED), keys kept out of the logs, and the Router's frames x resolution
budget (configured on this application's model).
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import yaml

from serve.api import pb
from serve.auth import generate_key, hash_key
from serve.client import VideogenClient
from serve.config import AppConfig
from serve.metrics import QUOTA_REFUSALS
from tests.integration.cluster import wait_until

pytestmark = pytest.mark.integration

APP = "secure"
MODEL = "modelscope-t2v"
VIDEO_PIXEL_BUDGET = 8 * 32 * 32
LONG_STEPS = 150


@dataclass
class Secure:
    target: str
    keys: dict[str, str]
    http_url: str  # this application's HTTP API (its route prefix on Serve's HTTP proxy)

    def client(self, name: str | None = None, api_key: str | None = None) -> VideogenClient:
        return VideogenClient(self.target, application=APP, api_key=api_key or self.keys.get(name or ""))


@pytest.fixture(scope="module")
def secure(service, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secure]:
    from ray import serve

    from serve.deployments import build_app

    directory = tmp_path_factory.mktemp("secure")
    keys = {"alice": generate_key(), "bob": generate_key()}
    keys_file = directory / "keys.yaml"
    keys_file.write_text(
        yaml.safe_dump(
            {
                "keys": [
                    {"name": "alice", "sha256": hash_key(keys["alice"]), "max_concurrent_jobs": 1},
                    {"name": "bob", "sha256": hash_key(keys["bob"])},
                ]
            }
        )
    )
    config = AppConfig.model_validate(
        {
            "models": [
                {
                    "name": MODEL,
                    "weights": "tiny",
                    "num_cpus": 0.1,
                    "max_video_pixels": VIDEO_PIXEL_BUDGET,
                    "autoscaling": {"min_replicas": 1, "max_replicas": 1},
                }
            ],
            "results_dir": str(directory / "results"),
            "auth": {"enabled": True, "keys_file": str(keys_file)},
        }
    )
    serve.run(build_app(config), name=APP, route_prefix=f"/{APP}")
    yield Secure(service.target, keys, f"{service.http_url}/{APP}")
    serve.delete(APP)


def params(steps: int = 2, **fields) -> pb.GenerationParams:
    return pb.GenerationParams(model=MODEL, prompt="a red fox", seed=3, num_inference_steps=steps, **fields)


def every_rpc(client: VideogenClient, job_id: str) -> dict:
    return {
        "ListModels": lambda: client.list_models(),
        "Generate": lambda: client.generate(params(), timeout=30),
        "SubmitJob": lambda: client.submit(params()),
        "GetJob": lambda: client.get_job(job_id),
        "WatchJob": lambda: list(client.watch(job_id, timeout=30)),
        "CancelJob": lambda: client.cancel(job_id),
        "FetchVideo": lambda: client.fetch(job_id),
    }


def code_of(call) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize(
    "key", [None, "vgk_not-a-key-of-this-service-000000000000"], ids=["missing", "unknown"]
)
def test_every_rpc_without_a_valid_key_is_unauthenticated(secure, key):
    with secure.client(api_key=key) as client:
        for rpc, call in every_rpc(client, "0" * 32).items():
            with pytest.raises(grpc.RpcError) as error:
                call()
            assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED, rpc
            assert error.value.details() and (key is None or key not in error.value.details())


def test_health_checks_need_no_key(secure):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(secure.target) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), metadata=[("application", APP)], timeout=10
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_a_caller_sees_only_its_own_jobs(secure):
    with secure.client("alice") as alice, secure.client("bob") as bob:
        job = alice.submit(params())
        assert alice.wait(job.job_id, timeout=60).state == pb.JOB_STATE_SUCCEEDED
        assert alice.fetch(job.job_id)[:12].find(b"ftyp") >= 0
        calls = every_rpc(bob, job.job_id)
        for rpc in ("GetJob", "WatchJob", "CancelJob", "FetchVideo"):
            assert code_of(calls[rpc]) == grpc.StatusCode.NOT_FOUND, rpc
        assert alice.get_job(job.job_id).state == pb.JOB_STATE_SUCCEEDED


def test_the_http_api_takes_the_same_keys_and_scopes_videos_to_them(secure):
    import openai

    def client(key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{secure.http_url}/v1", api_key=key, timeout=60, max_retries=0)

    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"{secure.http_url}/v1/videos", timeout=10)
    assert missing.value.code == 401 and b"API key is required" in missing.value.read()
    with pytest.raises(openai.AuthenticationError):
        client("vgk_not-a-key-of-this-service-000000000000").videos.list()
    alice, bob = client(secure.keys["alice"]), client(secure.keys["bob"])
    video = bob.videos.create(model=MODEL, prompt="bob's", extra_body={"num_inference_steps": 2})
    assert bob.videos.poll(video.id, poll_interval_ms=200).status == "completed"
    with pytest.raises(openai.NotFoundError):
        alice.videos.retrieve(video.id)
    with pytest.raises(openai.NotFoundError):
        alice.videos.delete(video.id)
    assert video.id not in [v.id for v in alice.videos.list(limit=100).data]
    assert video.id in [v.id for v in bob.videos.list(limit=100).data]


def test_idempotency_keys_belong_to_their_caller(secure):
    with secure.client("alice") as alice, secure.client("bob") as bob:
        first = alice.submit(params(), idempotency_key="nightly-1")
        alice.wait(first.job_id, timeout=60)
        assert alice.submit(params(), idempotency_key="nightly-1").job_id == first.job_id
        theirs = bob.submit(params(), idempotency_key="nightly-1")
        assert theirs.job_id != first.job_id
        bob.wait(theirs.job_id, timeout=60)


def test_a_key_over_its_concurrent_job_quota_is_resource_exhausted(secure):
    with secure.client("alice") as alice, secure.client("bob") as bob:
        running = alice.submit(params(steps=LONG_STEPS))
        try:
            for call in (lambda: alice.submit(params()), lambda: alice.generate(params(), timeout=30)):
                with pytest.raises(grpc.RpcError) as error:
                    call()
                assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert "max_concurrent_jobs" in error.value.details()
            # Another key is not held back by alice's quota.
            assert bob.submit(params()).job_id
        finally:
            alice.cancel(running.job_id)
        assert alice.wait(running.job_id, timeout=60).state == pb.JOB_STATE_CANCELLED
        done = alice.submit(params())
        assert alice.wait(done.job_id, timeout=60).state == pb.JOB_STATE_SUCCEEDED


def test_quota_refusals_are_counted_apart_from_the_services_own_refusals(service, secure):
    with secure.client("alice") as alice:
        running = alice.submit(params(steps=LONG_STEPS))
        try:
            with pytest.raises(grpc.RpcError):
                alice.submit(params())
        finally:
            alice.cancel(running.job_id)

    def refusals() -> float:
        text = urllib.request.urlopen(f"http://127.0.0.1:{service.metrics_port}/metrics", timeout=10).read()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.decode().splitlines()
            if line.startswith(QUOTA_REFUSALS.exported + "{") and 'rpc="SubmitJob"' in line
        )

    # Counted as RESOURCE_EXHAUSTED in requests_total too; the error alert subtracts these.
    assert wait_until(refusals, 30, what="ray_videogen_quota_refusals_total") >= 1


def test_the_router_enforces_the_frames_times_resolution_budget(secure):
    with secure.client("bob") as bob:
        with pytest.raises(grpc.RpcError) as error:
            bob.generate(params(num_frames=16, height=32, width=32), timeout=30)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.value.details().startswith("num_frames:") and "budget" in error.value.details()
        assert bob.generate(params(num_frames=8, height=32, width=32), timeout=60).summary.num_frames == 8


def test_keys_never_reach_the_service_logs(secure):
    import ray

    with secure.client("bob") as bob:
        bob.list_models()
    # This cluster's session (other clusters on the machine may own /tmp/ray/session_latest).
    logs = Path(ray._private.worker._global_node.get_logs_dir_path())
    texts = [path.read_bytes() for path in logs.rglob("*") if path.is_file()]
    assert texts
    for key in secure.keys.values():
        assert not any(key.encode() in text for text in texts)
