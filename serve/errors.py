"""Errors a caller can act on, each carrying the gRPC status it maps to."""

from __future__ import annotations


class VideogenError(Exception):
    """Base error; `code` is the name of the gRPC status code it becomes on the wire."""

    code = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __reduce__(self):  # keep the subclass and message across Ray's pickling
        return (self.__class__, (self.message,))


class InvalidArgument(VideogenError):
    """A request field is missing, malformed or out of range; the message names the field."""

    code = "INVALID_ARGUMENT"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.detail = message

    def __reduce__(self):
        return (self.__class__, (self.field, self.detail))


class NotFound(VideogenError):
    code = "NOT_FOUND"


class ResourceExhausted(VideogenError):
    code = "RESOURCE_EXHAUSTED"


class Cancelled(VideogenError):
    code = "CANCELLED"


class WeightsMissing(VideogenError):
    """The model's weights are not on this machine; the message says how to fetch them."""

    code = "FAILED_PRECONDITION"


class Unavailable(VideogenError):
    code = "UNAVAILABLE"


class Unauthenticated(VideogenError):
    """No API key, or one the service does not know; the message never repeats the key."""

    code = "UNAUTHENTICATED"
