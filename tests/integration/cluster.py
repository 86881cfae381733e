"""Looking at the Serve replicas of the test cluster from the driver: their actors, waiting for them."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPLICA_PREFIX = "SERVE_REPLICA::"
SERVE_NAMESPACE = "serve"


def replica_names(app: str, deployment: str | None = None) -> set[str]:
    """Actor names of the live replicas of `app` (one deployment, or all); a restart changes the name."""
    import ray

    prefix = f"{REPLICA_PREFIX}{app}#" + (f"{deployment}#" if deployment else "")
    return {
        actor["name"]
        for actor in ray.util.list_named_actors(all_namespaces=True)
        if actor["name"].startswith(prefix)
    }


def kill_replica(app: str, deployment: str) -> str:
    """Kill the process of the one replica of a deployment, as an OOM killer or a node loss would."""
    import ray

    (name,) = replica_names(app, deployment)
    ray.kill(ray.get_actor(name, namespace=SERVE_NAMESPACE), no_restart=True)
    return name


def wait_until(
    condition: Callable[[], Any], timeout_s: float, interval_s: float = 0.5, what: str = ""
) -> Any:
    """Poll `condition` until it returns something truthy; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = condition()
            if result:
                return result
        except Exception as error:  # the service may be restarting
            last_error = error
        time.sleep(interval_s)
    raise AssertionError(
        f"timed out after {timeout_s}s waiting for {what or condition} (last error: {last_error})"
    )


def job_record(results_dir: Path, job_id: str) -> Any:
    """A job's record straight from the job store actor (no Router involved)."""
    import ray

    from serve.jobs import job_store

    return ray.get(job_store(str(Path(results_dir).resolve())).get.remote(job_id))
