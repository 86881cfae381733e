"""Webhooks: a job's outcome POSTed to the URL its caller gave, signed as Standard Webhooks specifies.

At submit time `check_url` accepts only http(s) URLs whose host is on the configured allow-list and,
unless `allow_private_addresses`, is not (and does not resolve to) a loopback, link-local (cloud
metadata), private, shared, multicast or reserved address: the service cannot be turned against its own
network. The check runs again before each attempt, as DNS may have changed. Redirects are not followed.

Once the job ends, the job store `deliver`s one message: a JSON body `{"type": "video.completed" |
"video.failed" | "video.cancelled", "timestamp", "data": <the video object of the HTTP API>}` with the
headers `webhook-id` (the same on every retry: receivers deduplicate on it, delivery is at least once),
`webhook-timestamp` and `webhook-signature` (`v1,` + base64 HMAC-SHA256 of `id.timestamp.body` under
the secret), retried with doubling backoff until a 2xx or `max_attempts`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import json
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from serve.config import WebhookOptions
from serve.errors import InvalidArgument
from serve.job_records import JobRecord

FIELD = "webhook_url"
MAX_URL_CHARS = 2048
SECRET_PREFIX = "whsec_"
EVENT_TYPES = {"succeeded": "video.completed", "failed": "video.failed", "cancelled": "video.cancelled"}

Resolver = Callable[[str, int], list[str]]


def _resolve(host: str, port: int) -> list[str]:
    return sorted({info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)})


def host_allowed(host: str, allowed: list[str]) -> bool:
    """Whether `host` is on the allow-list: named exactly, or a subdomain of a `*.domain` entry."""
    host = host.lower().rstrip(".")
    for entry in allowed:
        entry = entry.lower().rstrip(".")
        if host == entry or (entry.startswith("*.") and host.endswith(entry[1:])):
            return True
    return False


def is_public(address: str) -> bool:
    """A globally routable unicast address (not loopback, link-local, private, shared or reserved)."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def check_url(url: str, options: WebhookOptions, resolve: Resolver = _resolve) -> str:
    """`url` if webhooks may go there; else INVALID_ARGUMENT naming webhook_url and why not."""
    if len(url) > MAX_URL_CHARS:
        raise InvalidArgument(FIELD, f"{len(url)} characters is more than {MAX_URL_CHARS}")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidArgument(FIELD, f"{url!r} is not an http(s) URL with a host")
    if parts.username or parts.password:
        raise InvalidArgument(FIELD, "must not carry credentials: deliveries are signed instead")
    if not options.allowed_hosts:
        raise InvalidArgument(
            FIELD, "webhooks are not enabled on this service (webhooks.allowed_hosts is empty)"
        )
    host = parts.hostname
    if not host_allowed(host, options.allowed_hosts):
        raise InvalidArgument(
            FIELD,
            f"host {host!r} is not on the service's webhook allow-list ({', '.join(options.allowed_hosts)})",
        )
    if options.allow_private_addresses:
        return url
    try:
        addresses = [str(ipaddress.ip_address(host))]
    except ValueError:
        try:
            addresses = resolve(host, parts.port or (443 if parts.scheme == "https" else 80))
        except OSError as error:
            raise InvalidArgument(FIELD, f"host {host!r} does not resolve: {error}") from None
    private = [address for address in addresses if not is_public(address)]
    if private:
        raise InvalidArgument(
            FIELD,
            f"host {host!r} is or resolves to a non-public address ({', '.join(private)}): loopback, "
            "link-local, private and reserved addresses are refused",
        )
    return url


def read_secret(path: str | Path) -> bytes:
    """The signing key from a `whsec_<base64>` file."""
    text = Path(path).read_text().strip()
    key = base64.b64decode(text.removeprefix(SECRET_PREFIX) + "==")
    if not key:
        raise ValueError(f"webhook secret file {path} is empty")
    return key


def new_secret() -> str:
    """A fresh secret in the file's format (for `videogen webhook-secret`)."""
    import secrets

    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def sign(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header of one message: `v1,<base64 HMAC-SHA256>`."""
    digest = hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # a redirect could lead off the allow-list
        return None


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirects())


def _post(url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with _OPENER.open(request, timeout=timeout_s) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def message(record: JobRecord, ttl_s: float) -> tuple[str, bytes]:
    """(webhook-id, JSON body) of an ended job's webhook."""
    from serve.http_wire import video_object

    body = {
        "type": EVENT_TYPES[record.state.value],
        "timestamp": datetime.fromtimestamp(record.finished_at or time.time(), UTC).isoformat(),
        "data": video_object(record, ttl_s),
    }
    return f"msg_{record.job_id}", json.dumps(body, separators=(",", ":")).encode()


Attempted = Callable[[int, str], Awaitable[None]]


async def deliver(
    url: str, message_id: str, body: bytes, options: WebhookOptions, attempted: Attempted
) -> tuple[bool, int, str]:
    """POST `body` until a 2xx or `options.max_attempts`; `attempted(n, error)` after each failure that
    is retried.

    Returns (delivered, attempts made, the last error).
    """
    error = ""
    for attempt in range(1, options.max_attempts + 1):
        if attempt > 1:
            await asyncio.sleep(options.backoff_s * 2 ** (attempt - 2))
        try:
            await asyncio.to_thread(check_url, url, options)
            timestamp = int(time.time())
            headers = {
                "content-type": "application/json",
                "user-agent": "videogen-serve-webhooks",
                "webhook-id": message_id,
                "webhook-timestamp": str(timestamp),
                "webhook-signature": sign(
                    read_secret(options.secret_file or ""), message_id, timestamp, body
                ),
            }
            status = await asyncio.to_thread(_post, url, body, headers, options.timeout_s)
            if 200 <= status < 300:
                return True, attempt, ""
            error = f"HTTP {status}"
        except Exception as failure:  # refused, unreachable, timed out, no secret: tried again
            error = f"{type(failure).__name__}: {failure}"
        if attempt < options.max_attempts:
            await attempted(attempt, error)
    return False, options.max_attempts, error
