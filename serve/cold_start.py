"""The last measured cold start of each model: what a request waits when its model has scaled to zero.

A ModelServer records how long it took from its start to its first request answerable; the Router states
it in ListModels (`expected_cold_start_seconds`) for models that may scale to zero. One small file per
model in the results directory (shared by every node, like the videos) outlives the replicas and the
cluster, which is the point: when the number matters, no replica of the model is running to ask.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path

from pydantic import BaseModel, ValidationError

from serve.config import ModelDeployment

log = logging.getLogger(__name__)

SUBDIRECTORY = "cold_starts"


class ColdStart(BaseModel):
    """One measured cold start."""

    model: str
    weights: str
    seconds: float
    measured_at: float


def _path(results_dir: str | Path, model: ModelDeployment) -> Path:
    # Catalog names are validated by the config: safe as file names.
    return Path(results_dir) / SUBDIRECTORY / f"{model.name}.json"


def record_cold_start(results_dir: str | Path, model: ModelDeployment, seconds: float) -> None:
    """Keep `seconds` as the model's last cold start; a failure is logged, never fatal to the replica."""
    path = _path(results_dir, model)
    record = ColdStart(model=model.name, weights=model.weights, seconds=seconds, measured_at=time.time())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".partial-")
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(record.model_dump_json())
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
    except OSError as error:
        log.warning("could not record the cold start of %s in %s: %s", model.name, path, error)


def last_cold_start(results_dir: str | Path, model: ModelDeployment) -> float | None:
    """The last cold start measured for this model with the same weights, if any."""
    try:
        record = ColdStart.model_validate_json(_path(results_dir, model).read_text())
    except (OSError, ValidationError):
        return None
    return record.seconds if record.weights == model.weights else None


def expected_cold_start(results_dir: str | Path, model: ModelDeployment) -> float:
    """What ListModels states: 0 where replicas are always kept, else the last measured or the estimate."""
    if not model.autoscaling.scales_to_zero:
        return 0.0
    measured = last_cold_start(results_dir, model)
    return model.cold_start_estimate_s if measured is None else measured
