"""The client over TLS, as production callers reach the service through a gateway: real TLS on loopback
(tests/integration/tls_front.py) in front of the session's real service."""

from __future__ import annotations

import subprocess
import sys

import grpc
import pytest

from serve.api import pb
from serve.catalog import CATALOG
from serve.client import Tls, VideogenClient
from serve.video import probe_mp4
from tests.integration.tls_front import TlsFront, make_pki

pytestmark = pytest.mark.integration

MODEL = "cogvideox-2b"  # keeps a replica in the session's app (conftest.WARM_MODELS)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def test_the_client_lists_and_generates_through_tls_trusting_the_gateways_ca(service, pki):
    with (
        TlsFront(service.target, pki) as front,
        VideogenClient(front.target, tls=Tls(ca_file=pki.ca)) as client,
    ):
        assert {m.name for m in client.list_models(timeout=30)} == set(CATALOG)
        video = client.generate(pb.GenerationParams(model=MODEL, prompt="a fox", seed=3), timeout=120)
    assert probe_mp4(video.data)[0] == video.summary.num_frames > 0


def test_a_certificate_the_client_does_not_trust_ends_the_call_unavailable(service, pki):
    with (
        TlsFront(service.target, pki) as front,
        VideogenClient(front.target, tls=Tls()) as client,
        pytest.raises(grpc.RpcError) as error,
    ):
        client.list_models(timeout=10)  # the system's roots do not include the test CA
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_admits_only_a_client_with_a_certificate(service, pki):
    with TlsFront(service.target, pki, require_client_cert=True) as front:
        with VideogenClient(front.target, tls=Tls(ca_file=pki.ca)) as anonymous:
            with pytest.raises(grpc.RpcError) as error:
                anonymous.list_models(timeout=10)
            assert error.value.code() == grpc.StatusCode.UNAVAILABLE
        tls = Tls(ca_file=pki.ca, cert_file=pki.client_cert, key_file=pki.client_key)
        with VideogenClient(front.target, tls=tls, keepalive_s=30) as client:
            assert len(client.list_models(timeout=30)) == len(CATALOG)


def test_a_client_certificate_without_its_key_is_refused_before_connecting(pki):
    with pytest.raises(ValueError, match="cert_file and key_file"):
        Tls(ca_file=pki.ca, cert_file=pki.client_cert)


def test_the_cli_talks_tls_with_ca_cert_and_key(service, pki):
    with TlsFront(service.target, pki, require_client_cert=True) as front:
        tls = ["--ca", str(pki.ca), "--cert", str(pki.client_cert), "--key", str(pki.client_key)]
        listed = subprocess.run(
            [sys.executable, "-m", "serve.cli", "client", "--target", front.target, *tls, "models"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert {line.split()[0] for line in listed.stdout.splitlines()} == set(CATALOG)
