"""A TLS-terminating gRPC front on loopback, as a gateway stands in front of Serve's plaintext gRPC port in
production: every call of the videogen API is forwarded, its metadata and deadline too, to the service.

The certificates are made here: a CA, a server certificate for 127.0.0.1 and localhost, a client one.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from serve.api import pb

FORWARDED_METADATA_EXCLUDED = ("user-agent", "grpc-")


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_pki(directory: Path) -> Pki:
    """A CA and two certificates it signed (server: 127.0.0.1 and localhost; client), as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(common_name: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])

    def write_key(key: Any, path: Path) -> Path:
        encoding, fmt = serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8
        path.write_bytes(key.private_bytes(encoding, fmt, serialization.NoEncryption()))
        return path

    def write_cert(cert: x509.Certificate, path: Path) -> Path:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return path

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("videogen test CA"))
        .issuer_name(name("videogen test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )

    def issue(common_name: str, usage: Any, names: list[x509.GeneralName]) -> tuple[Any, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(common_name))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return key, builder.sign(ca_key, hashes.SHA256())

    server_key, server_cert = issue(
        "localhost",
        ExtendedKeyUsageOID.SERVER_AUTH,
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    client_key, client_cert = issue("videogen test client", ExtendedKeyUsageOID.CLIENT_AUTH, [])
    return Pki(
        ca=write_cert(ca, directory / "ca.pem"),
        server_cert=write_cert(server_cert, directory / "server.pem"),
        server_key=write_key(server_key, directory / "server-key.pem"),
        client_cert=write_cert(client_cert, directory / "client.pem"),
        client_key=write_key(client_key, directory / "client-key.pem"),
    )


def _identity(data: bytes) -> bytes:
    return data


class _Forward(grpc.GenericRpcHandler):
    """Every method of videogen.v1.VideoGeneration, forwarded as bytes over a plaintext channel."""

    def __init__(self, channel: grpc.Channel) -> None:
        service = pb.DESCRIPTOR.services_by_name["VideoGeneration"]
        self.channel = channel
        self.streaming = {f"/{service.full_name}/{m.name}": m.server_streaming for m in service.methods}

    @staticmethod
    def _call_kwargs(context: grpc.ServicerContext) -> dict[str, Any]:
        metadata = [
            (key, value)
            for key, value in context.invocation_metadata()
            if not key.startswith(FORWARDED_METADATA_EXCLUDED)
        ]
        return {"metadata": metadata, "timeout": context.time_remaining()}

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = details.method
        if method not in self.streaming:
            return None
        if self.streaming[method]:
            stream_call = self.channel.unary_stream(method, _identity, _identity)

            def stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
                responses = stream_call(request, **self._call_kwargs(context))
                context.add_callback(responses.cancel)
                try:
                    yield from responses
                except grpc.RpcError as error:
                    context.abort(error.code(), error.details())

            return grpc.unary_stream_rpc_method_handler(stream, _identity, _identity)
        unary_call = self.channel.unary_unary(method, _identity, _identity)

        def unary(request: bytes, context: grpc.ServicerContext) -> bytes:
            try:
                return unary_call(request, **self._call_kwargs(context))
            except grpc.RpcError as error:
                context.abort(error.code(), error.details())

        return grpc.unary_unary_rpc_method_handler(unary, _identity, _identity)


class TlsFront:
    """`with TlsFront(upstream, pki) as front:` a TLS endpoint at `front.target` until the block ends;
    `require_client_cert`: refuse clients without a certificate of the CA (mutual TLS)."""

    def __init__(self, upstream: str, pki: Pki, require_client_cert: bool = False) -> None:
        self.upstream, self.pki, self.require_client_cert = upstream, pki, require_client_cert
        self.target = ""

    def __enter__(self) -> TlsFront:
        options = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
        self.channel = grpc.insecure_channel(self.upstream, options=options)
        self.server = grpc.server(ThreadPoolExecutor(8), handlers=[_Forward(self.channel)], options=options)
        credentials = grpc.ssl_server_credentials(
            [(self.pki.server_key.read_bytes(), self.pki.server_cert.read_bytes())],
            root_certificates=self.pki.ca.read_bytes() if self.require_client_cert else None,
            require_client_auth=self.require_client_cert,
        )
        port = self.server.add_secure_port("127.0.0.1:0", credentials)
        self.server.start()
        self.target = f"127.0.0.1:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop(grace=None)
        self.channel.close()
