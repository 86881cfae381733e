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


class QuotaExceeded(ResourceExhausted):
    """The caller is at its own quota (not the service at its capacity): counted apart in the metrics."""


class Cancelled(VideogenError):
    code = "CANCELLED"


class WeightsMissing(VideogenError):
    """The model's weights are not on this machine; the message says how to fetch them."""

    code = "FAILED_PRECONDITION"


class NotReady(VideogenError):
    """The request is valid but the job is not in a state for it (a video asked for before it exists)."""

    code = "FAILED_PRECONDITION"


class Aborted(VideogenError):
    """What was being read changed under the reader (a running job started over): read it again."""

    code = "ABORTED"


class JobEnded(VideogenError):
    """A job ended in failure while its caller followed it: the job's own error code and message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code

    def __reduce__(self):
        return (self.__class__, (self.code, self.message))


class Unavailable(VideogenError):
    code = "UNAVAILABLE"


class Unauthenticated(VideogenError):
    """No API key, or one the service does not know; the message never repeats the key."""

    code = "UNAUTHENTICATED"


def error_status(error: BaseException) -> tuple[str, str]:
    """The gRPC status code name and the message a caller gets for an error raised while serving.

    One mapping for every place an error ends a request: a Router's RPC and a job's record.
    """
    from ray.exceptions import RayActorError
    from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

    error = unwrapped(error)
    if isinstance(error, VideogenError):
        return error.code, error.message
    if isinstance(error, BackPressureError):
        return "RESOURCE_EXHAUSTED", f"too many requests queued for this model: {error}"
    if isinstance(error, DeploymentUnavailableError | RayActorError):
        # Ray's own text runs to many lines of actor details; its first line says what happened.
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        return "UNAVAILABLE", f"model replica unavailable: {first_line}"
    return "INTERNAL", f"{type(error).__name__}: {error}"


def is_quota_refusal(error: BaseException) -> bool:
    """Whether `error` refused a caller for its own quota (QuotaExceeded, also through Ray)."""
    return isinstance(unwrapped(error), QuotaExceeded)


def unwrapped(error: BaseException) -> BaseException:
    """Our error (or Serve's backpressure) that a Ray task raised, without Ray's wrapper."""
    from ray.exceptions import RayTaskError
    from ray.serve.exceptions import BackPressureError

    if isinstance(error, RayTaskError):
        cause = error.as_instanceof_cause()
        if isinstance(cause, VideogenError | BackPressureError):
            return cause
    return error


def replica_died(error: BaseException) -> bool:
    """Whether a call to a model replica failed because the replica's process died (not its own error)."""
    from ray.exceptions import RayActorError

    return isinstance(error, RayActorError)
