"""A small Python client for the videogen.v1 API that production code can import."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from serve.api import pb, pb_grpc

# The proxy's default limit (ServeConfig.max_message_bytes): room for the largest image a request may carry.
MAX_MESSAGE_BYTES = 32 * 1024 * 1024
APPLICATION = "videogen"


@dataclass
class Video:
    """A received video and the server's summary of it."""

    data: bytes
    summary: pb.GenerationSummary

    def save(self, path: str) -> None:
        with open(path, "wb") as handle:
            handle.write(self.data)


@dataclass(frozen=True)
class Tls:
    """TLS to the endpoint: a gateway or ingress in front of Serve's gRPC proxy (which speaks plaintext).

    `ca_file`: PEM roots to trust (None: the system's). `cert_file` and `key_file`: a client certificate,
    for gateways that require one (mutual TLS). `server_name`: the name the server's certificate must
    carry when it is not the target's host (an address, say).
    """

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str | None = None

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("a client certificate needs both cert_file and key_file")

    def credentials(self) -> grpc.ChannelCredentials:
        def read(path: Path | None) -> bytes | None:
            return None if path is None else Path(path).read_bytes()

        return grpc.ssl_channel_credentials(
            root_certificates=read(self.ca_file),
            private_key=read(self.key_file),
            certificate_chain=read(self.cert_file),
        )


class IncompleteVideo(RuntimeError):
    """The stream ended before all bytes arrived, or they do not match the summary's checksum."""


def _assemble(chunks: Iterator[pb.VideoChunk]) -> bytes:
    parts: list[bytes] = []
    received, total = 0, None
    for chunk in chunks:
        if chunk.offset != received:
            raise IncompleteVideo(f"chunk at offset {chunk.offset}, expected {received}")
        parts.append(chunk.data)
        received += len(chunk.data)
        total = chunk.total_bytes or total  # 0 while a long clip's file is still growing
    if total and received != total:
        raise IncompleteVideo(f"received {received} of {total} bytes")
    return b"".join(parts)


class VideogenClient:
    """Blocking client; every call takes gRPC `timeout` (seconds) and `metadata` keywords.

    `tls`: connect over TLS (see `Tls`); plaintext without it, as to Serve's own port. `keepalive_s`:
    send HTTP/2 pings after that long without data, so that a load balancer does not drop the connection
    of a quiet call (a WatchJob between progress events); the server must allow pings that often.
    """

    def __init__(
        self,
        target: str,
        api_key: str | None = None,
        channel: grpc.Channel | None = None,
        application: str = APPLICATION,
        tls: Tls | None = None,
        keepalive_s: float | None = None,
    ) -> None:
        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ]
        if keepalive_s is not None:
            options += [
                ("grpc.keepalive_time_ms", int(keepalive_s * 1000)),
                ("grpc.keepalive_timeout_ms", 20_000),
            ]
        if channel is None and tls is not None:
            if tls.server_name:
                options.append(("grpc.ssl_target_name_override", tls.server_name))
            channel = grpc.secure_channel(target, tls.credentials(), options=options)
        self.channel = channel or grpc.insecure_channel(target, options=options)
        self.stub = pb_grpc.VideoGenerationStub(self.channel)
        # Serve's proxy routes by this metadata when it hosts several applications.
        self.metadata: list[tuple[str, str]] = [("application", application)]
        if api_key:
            self.metadata.append(("authorization", f"Bearer {api_key}"))

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> VideogenClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _kwargs(self, timeout: float | None) -> dict[str, Any]:
        return {"metadata": self.metadata, "timeout": timeout}

    def list_models(self, timeout: float | None = 30) -> list[pb.ModelInfo]:
        return list(self.stub.ListModels(pb.ListModelsRequest(), **self._kwargs(timeout)).models)

    def generate_stream(self, params: pb.GenerationParams, timeout: float | None = None) -> Any:
        """The raw Generate stream (cancellable with `.cancel()`)."""
        return self.stub.Generate(pb.GenerateRequest(params=params), **self._kwargs(timeout))

    def generate(
        self,
        params: pb.GenerationParams,
        on_progress: Callable[[pb.Progress], None] | None = None,
        timeout: float | None = None,
        on_chunk: Callable[[pb.VideoChunk], None] | None = None,
    ) -> Video:
        """Generate and wait; progress events go to `on_progress`, each chunk as it arrives to `on_chunk`
        (a long clip's come while the rest is made); the bytes are checked."""
        chunks: list[pb.VideoChunk] = []
        summary = None
        for event in self.generate_stream(params, timeout):
            kind = event.WhichOneof("event")
            if kind == "progress" and on_progress:
                on_progress(event.progress)
            elif kind == "chunk":
                chunks.append(event.chunk)
                if on_chunk:
                    on_chunk(event.chunk)
            elif kind == "summary":
                summary = event.summary
        if summary is None:
            raise IncompleteVideo("the stream ended without a summary")
        data = _assemble(iter(chunks))
        if hashlib.sha256(data).hexdigest() != summary.sha256:
            raise IncompleteVideo("checksum mismatch")
        return Video(data=data, summary=summary)

    def submit(
        self,
        params: pb.GenerationParams,
        idempotency_key: str = "",
        timeout: float | None = 30,
        webhook_url: str = "",
    ) -> pb.Job:
        request = pb.SubmitJobRequest(params=params, idempotency_key=idempotency_key, webhook_url=webhook_url)
        return self.stub.SubmitJob(request, **self._kwargs(timeout))

    def get_job(self, job_id: str, timeout: float | None = 30) -> pb.Job:
        return self.stub.GetJob(pb.GetJobRequest(job_id=job_id), **self._kwargs(timeout))

    def watch(self, job_id: str, timeout: float | None = None) -> Iterator[pb.Job]:
        return self.stub.WatchJob(pb.WatchJobRequest(job_id=job_id), **self._kwargs(timeout))

    def cancel(self, job_id: str, timeout: float | None = 30) -> pb.Job:
        return self.stub.CancelJob(pb.CancelJobRequest(job_id=job_id), **self._kwargs(timeout))

    def fetch(self, job_id: str, chunk_bytes: int = 0, timeout: float | None = None) -> bytes:
        request = pb.FetchVideoRequest(job_id=job_id, chunk_bytes=chunk_bytes)
        return _assemble(self.stub.FetchVideo(request, **self._kwargs(timeout)))

    def wait(
        self, job_id: str, on_update: Callable[[pb.Job], None] | None = None, timeout: float | None = None
    ) -> pb.Job:
        """Watch a job until it ends; returns its final state."""
        last = None
        for job in self.watch(job_id, timeout):
            last = job
            if on_update:
                on_update(job)
        if last is None:
            raise RuntimeError(f"WatchJob({job_id}) returned nothing")
        return last
