"""Webhooks end to end: a job's outcome POSTed to a real loopback receiver, signed, retried, recorded."""

from __future__ import annotations

import json
import time
from pathlib import Path

import grpc
import openai
import pytest
from standardwebhooks import Webhook

from serve.api import pb
from tests.support import WebhookReceiver

pytestmark = pytest.mark.integration

MODEL = "cogvideox-2b"


def params(steps: int = 2) -> pb.GenerationParams:
    return pb.GenerationParams(model=MODEL, prompt="a heron", seed=3, num_inference_steps=steps)


def verified(service, headers: dict[str, str], body: bytes) -> dict:
    """The event, once its signature verifies with the service's secret (as a receiver checks it)."""
    secret = Path(service.config.webhooks.secret_file).read_text().strip()
    return Webhook(secret).verify(body, headers)


def job_when(client, job_id: str, done, timeout_s: float = 60) -> pb.Job:
    deadline = time.monotonic() + timeout_s
    while not done(job := client.get_job(job_id)):
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
    return job


def test_an_outcome_reaches_a_receiver_that_failed_twice_signed_and_recorded_on_the_job(service):
    with WebhookReceiver(statuses=[500, 502]) as receiver, service.client() as client:
        job = client.submit(params(), webhook_url=receiver.url)
        assert job.webhook_url == receiver.url and job.webhook_state == "pending"
        finished = client.wait(job.job_id, timeout=120)
        received = receiver.wait_for(3)
        events = [verified(service, headers, body) for headers, body in received]
        assert {headers["webhook-id"] for headers, _ in received} == {f"msg_{job.job_id}"}
        event = events[-1]
        assert event["type"] == "video.completed" and event["data"]["id"] == job.job_id
        assert event["data"]["sha256"] == finished.summary.sha256
        recorded = job_when(client, job.job_id, lambda j: j.webhook_state != "pending")
    assert (recorded.webhook_state, recorded.webhook_attempts) == ("delivered", 3)


def test_a_cancelled_job_is_posted_as_cancelled(service):
    with WebhookReceiver() as receiver, service.client() as client:
        job = client.submit(params(steps=150), webhook_url=receiver.url)
        client.cancel(job.job_id)
        ((headers, body),) = receiver.wait_for(1)
    event = verified(service, headers, body)
    assert event["type"] == "video.cancelled" and event["data"]["error"]["code"] == "cancelled"


def test_the_http_api_takes_a_webhook_too(service):
    client = openai.OpenAI(base_url=f"{service.http_url}/v1", api_key="unused", timeout=60)
    with WebhookReceiver() as receiver:
        video = client.videos.create(
            model=MODEL, prompt="a heron", extra_body={"num_inference_steps": 2, "webhook_url": receiver.url}
        )
        ((headers, body),) = receiver.wait_for(1)
        assert verified(service, headers, body)["data"]["id"] == video.id
        deadline = time.monotonic() + 30
        while (retrieved := client.videos.retrieve(video.id).model_extra["webhook"])["state"] == "pending":
            assert time.monotonic() < deadline
            time.sleep(0.2)
    assert retrieved == {"url": receiver.url, "state": "delivered", "attempts": 1, "error": None}


@pytest.mark.parametrize(
    "url", ["http://169.254.169.254/latest/meta-data/", "https://hooks.example.com/x", "file:///etc/passwd"]
)
def test_a_url_off_the_allow_list_is_refused_at_submit_on_both_apis(service, url):
    with service.client() as client, pytest.raises(grpc.RpcError) as refused:
        client.submit(params(), webhook_url=url)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details().startswith("webhook_url: ")
    client = openai.OpenAI(base_url=f"{service.http_url}/v1", api_key="unused", timeout=60)
    with pytest.raises(openai.BadRequestError) as bad:
        client.videos.create(model=MODEL, prompt="x", extra_body={"webhook_url": url})
    assert bad.value.body["param"] == "webhook_url"
    assert json.dumps(bad.value.body)  # OpenAI's error JSON
