"""Serve's gRPC proxy message limit: set from ServeConfig through the variable Ray actually reads."""

from __future__ import annotations

import inspect
import os

from serve.client import MAX_MESSAGE_BYTES
from serve.config import ServeConfig
from serve.service import PROXY_MAX_MESSAGE_ENV, limit_proxy_messages


def test_the_variable_is_the_one_ray_serve_reads_for_its_grpc_servers():
    from ray.serve._private import constants

    assert f'"{PROXY_MAX_MESSAGE_ENV}"' in inspect.getsource(constants)
    assert ("grpc.max_receive_message_length", constants.RAY_SERVE_GRPC_MAX_MESSAGE_SIZE) in (
        constants.DEFAULT_GRPC_SERVER_OPTIONS
    )


def test_limit_proxy_messages_sets_it_for_the_processes_ray_starts(monkeypatch):
    monkeypatch.delenv(PROXY_MAX_MESSAGE_ENV, raising=False)
    limit_proxy_messages(5 << 20)
    assert os.environ[PROXY_MAX_MESSAGE_ENV] == str(5 << 20)


def test_default_limit_fits_the_largest_image_and_matches_the_client():
    from serve.request import MAX_IMAGE_BYTES

    default = ServeConfig.model_fields["max_message_bytes"].default
    assert MAX_IMAGE_BYTES < default == MAX_MESSAGE_BYTES
