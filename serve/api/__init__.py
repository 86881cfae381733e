"""The generated gRPC code for videogen.v1 (built from proto/ at install time by setup.py)."""

from serve.api.videogen.v1 import videogen_pb2 as pb
from serve.api.videogen.v1 import videogen_pb2_grpc as pb_grpc

__all__ = ["pb", "pb_grpc"]
