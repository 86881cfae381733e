"""Exact admission: a model holds at most what its replicas run plus its queue."""

from __future__ import annotations

import pytest

from serve.admission import Admission, capacity
from serve.config import ModelDeployment
from serve.errors import ResourceExhausted


def model(**fields) -> ModelDeployment:
    return ModelDeployment.model_validate({"name": "svd", **fields})


def test_capacity_is_every_replica_running_plus_the_queue():
    assert (
        capacity(model(max_ongoing_requests=2, max_queued_requests=3, autoscaling={"max_replicas": 4})) == 11
    )
    assert capacity(model(max_queued_requests=-1)) > 10**6


def test_requests_beyond_capacity_are_refused_until_one_ends():
    admission = Admission([model(max_queued_requests=1)])
    admission.acquire("svd")
    admission.acquire("svd")
    with pytest.raises(ResourceExhausted, match="limit 2"):
        admission.acquire("svd")
    admission.release("svd")
    with admission.slot("svd"):
        assert admission.in_flight["svd"] == 2
    assert admission.in_flight["svd"] == 1
