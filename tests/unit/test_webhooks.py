"""Webhooks: which URLs are accepted (no server-side request forgery), signatures a Standard Webhooks
receiver verifies, retries against a real loopback receiver, and the job store's record of them."""

from __future__ import annotations

import asyncio
import json

import pytest
from standardwebhooks import Webhook

from serve import webhooks
from serve.config import WebhookOptions
from serve.errors import InvalidArgument
from serve.job_records import WEBHOOK_DELIVERED, WEBHOOK_PENDING
from serve.jobs import JobBook
from tests.support import WebhookReceiver, summary


@pytest.fixture
def secret_file(tmp_path):
    path = tmp_path / "webhook-secret"
    path.write_text(webhooks.new_secret() + "\n")
    return path


def options(secret_file, **fields) -> WebhookOptions:
    return WebhookOptions(secret_file=str(secret_file), **{"allowed_hosts": ["hooks.example.com"], **fields})


def public(host: str, port: int) -> list[str]:
    return ["93.184.215.14"]  # a fake resolver: no DNS query leaves this machine


def internal(host: str, port: int) -> list[str]:
    return ["93.184.215.14", "10.0.0.5"]


def test_webhooks_are_refused_until_hosts_are_allowed(secret_file):
    with pytest.raises(InvalidArgument, match=r"^webhook_url: webhooks are not enabled"):
        webhooks.check_url("https://hooks.example.com/x", WebhookOptions())


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("https://evil.example.net/x", "not on the service's webhook allow-list"),
        ("https://hooks.example.com.evil.net/x", "not on the service's webhook allow-list"),
        ("ftp://hooks.example.com/x", "not an http"),
        ("https://user:pw@hooks.example.com/x", "credentials"),
        ("not a url", "not an http"),
    ],
)
def test_urls_off_the_allow_list_are_refused_by_name(secret_file, url, why):
    with pytest.raises(InvalidArgument, match=r"^webhook_url: ") as error:
        webhooks.check_url(url, options(secret_file), resolve=public)
    assert why in str(error.value)


@pytest.mark.parametrize(
    "host",
    ["169.254.169.254", "127.0.0.1", "10.1.2.3", "192.168.0.1", "[::1]", "[::ffff:127.0.0.1]", "0.0.0.0"],
)
def test_loopback_link_local_and_private_addresses_are_refused_even_when_allowed_by_name(secret_file, host):
    allowed = options(secret_file, allowed_hosts=[host.strip("[]")])
    with pytest.raises(InvalidArgument, match="non-public address"):
        webhooks.check_url(f"http://{host}/latest/meta-data", allowed, resolve=public)
    assert webhooks.check_url(
        f"http://{host}/x",
        options(secret_file, allowed_hosts=[host.strip("[]")], allow_private_addresses=True),
    )


def test_a_name_that_resolves_to_a_private_address_is_refused(secret_file):
    with pytest.raises(InvalidArgument, match=r"10\.0\.0\.5"):
        webhooks.check_url("https://hooks.example.com/x", options(secret_file), resolve=internal)
    assert webhooks.check_url("https://hooks.example.com/x", options(secret_file), resolve=public)


def test_subdomains_are_allowed_by_a_wildcard_entry(secret_file):
    wildcard = options(secret_file, allowed_hosts=["*.example.com"])
    assert webhooks.check_url("https://a.hooks.example.com/x", wildcard, resolve=public)
    with pytest.raises(InvalidArgument):
        webhooks.check_url("https://example.com.evil.net/x", wildcard, resolve=public)


def test_a_secret_is_required_once_hosts_are_allowed():
    with pytest.raises(ValueError, match="secret_file"):
        WebhookOptions(allowed_hosts=["hooks.example.com"])


def test_retries_until_the_receiver_takes_it_and_the_signature_verifies(secret_file):
    settings = options(secret_file, allowed_hosts=["127.0.0.1"], allow_private_addresses=True, backoff_s=0.05)
    failures: list[tuple[int, str]] = []

    async def attempted(attempt: int, error: str) -> None:
        failures.append((attempt, error))

    with WebhookReceiver(statuses=[500, 503]) as receiver:
        body = json.dumps({"type": "video.completed", "data": {"id": "x"}}).encode()
        outcome = asyncio.run(webhooks.deliver(receiver.url, "msg_1", body, settings, attempted))
        assert outcome == (True, 3, "")
        assert failures == [(1, "HTTP 500"), (2, "HTTP 503")]
        received = receiver.wait_for(3)
    secret = secret_file.read_text().strip()
    for headers, payload in received:
        assert headers["webhook-id"] == "msg_1"  # the same on every retry: receivers deduplicate
        assert Webhook(secret).verify(payload, headers) == {"type": "video.completed", "data": {"id": "x"}}
    with pytest.raises(Exception, match="signature"):
        Webhook(webhooks.new_secret()).verify(received[-1][1], received[-1][0])


def test_a_receiver_that_keeps_failing_gets_max_attempts_and_redirects_are_not_followed(secret_file):
    settings = options(
        secret_file, allowed_hosts=["127.0.0.1"], allow_private_addresses=True, backoff_s=0.01, max_attempts=3
    )

    async def attempted(attempt: int, error: str) -> None:
        pass

    with WebhookReceiver(statuses=[302, 302, 302, 302]) as receiver:
        outcome = asyncio.run(webhooks.deliver(receiver.url, "msg_2", b"{}", settings, attempted))
        assert outcome == (False, 3, "HTTP 302") and len(receiver.wait_for(3)) == 3


def test_a_job_with_a_webhook_is_due_once_when_it_ends_and_its_delivery_is_recorded():
    book = JobBook()
    record, _ = book.create("svd", webhook_url="https://hooks.example.com/x")
    assert record.webhook_state == WEBHOOK_PENDING and book.deliveries() == []
    book.start(record.job_id)
    book.succeed(record.job_id, summary())
    (due,) = book.deliveries()
    assert due.job_id == record.job_id and due.summary is not None
    assert book.deliveries() == [] and [r.job_id for r in book.storage.webhooks_pending()] == [record.job_id]
    book.webhook_attempted(record.job_id, 2, "", WEBHOOK_DELIVERED)
    done = book.get(record.job_id)
    assert (done.webhook_state, done.webhook_attempts) == (WEBHOOK_DELIVERED, 2)
    assert book.storage.webhooks_pending() == []


def test_the_message_is_the_video_object_of_the_http_api():
    book = JobBook()
    record, _ = book.create("svd", webhook_url="https://hooks.example.com/x")
    cancelled = book.cancel(record.job_id)
    message_id, body = webhooks.message(cancelled, ttl_s=60)
    event = json.loads(body)
    assert message_id == f"msg_{record.job_id}" and event["type"] == "video.cancelled"
    assert event["data"]["id"] == record.job_id and event["data"]["status"] == "failed"
