"""Per-model health for grpc.health.v1: is a model's deployment able to take a request now?

A model is SERVING when Serve reports a running replica of its deployment, or when it scales to zero
and its deployment is not failing (the request starts a replica). Serve's status comes from its
controller, asked at most every STATUS_TTL_S by each Router replica, so health probes cost nothing.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from serve.config import ModelDeployment

API_SERVICE = "videogen.v1.VideoGeneration"
STATUS_TTL_S = 5.0
FAILING = frozenset({"UNHEALTHY", "DEPLOY_FAILED"})


class ModelHealth:
    """Serve's deployment statuses of this Router's application, cached for STATUS_TTL_S."""

    def __init__(self) -> None:
        self._deployments: dict[str, Any] = {}
        self._read_at = float("-inf")
        self._lock = asyncio.Lock()

    async def serving(self, model: ModelDeployment) -> bool:
        deployment = (await self._statuses()).get(model.deployment_name)
        if deployment is None:
            return False
        running = deployment.replica_states.get("RUNNING", 0)
        return running > 0 or (model.autoscaling.scales_to_zero and deployment.status not in FAILING)

    async def _statuses(self) -> dict[str, Any]:
        async with self._lock:
            if time.monotonic() - self._read_at > STATUS_TTL_S:
                self._deployments = await asyncio.to_thread(_read_statuses)
                self._read_at = time.monotonic()
            return self._deployments


def _read_statuses() -> dict[str, Any]:
    """Deployment name -> Serve's DeploymentStatusOverview, for the application this replica is in."""
    from ray import serve

    application = serve.get_replica_context().app_name
    app = serve.status().applications.get(application)
    return dict(app.deployments) if app is not None else {}
