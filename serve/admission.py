"""Exact per-model admission control in each Router replica.

Serve's own `max_queued_requests` is approximate under bursts (its handle counts requests while
they are being assigned, so it rejects too many or too few); a caller must get RESOURCE_EXHAUSTED
exactly when a model already holds all the requests it can run plus its queue.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator

from serve.config import ModelDeployment
from serve.errors import ResourceExhausted


def capacity(model: ModelDeployment) -> int:
    """Requests one Router admits for a model: all its replicas could run, plus its queue."""
    if model.max_queued_requests < 0:
        return 1 << 30
    return model.autoscaling.max_replicas * model.max_ongoing_requests + model.max_queued_requests


class Admission:
    """Counts the requests in flight per model and refuses those beyond the model's capacity."""

    def __init__(self, models: list[ModelDeployment]) -> None:
        self.limits = {model.name: capacity(model) for model in models}
        self.in_flight: Counter[str] = Counter()

    def acquire(self, model: str) -> None:
        if self.in_flight[model] >= self.limits[model]:
            raise ResourceExhausted(
                f"model {model!r} is at capacity: {self.in_flight[model]} requests running or queued "
                f"(limit {self.limits[model]}); retry later"
            )
        self.take(model)

    def take(self, model: str) -> None:
        """Count a request admitted by an earlier look at `free` (a job claimed from the job store)."""
        self.in_flight[model] += 1

    def free(self, model: str) -> int:
        """Requests the model can still admit."""
        return max(0, self.limits[model] - self.in_flight[model])

    def release(self, model: str) -> None:
        self.in_flight[model] -= 1

    @contextlib.contextmanager
    def slot(self, model: str) -> Iterator[None]:
        self.acquire(model)
        try:
            yield
        finally:
            self.release(model)
