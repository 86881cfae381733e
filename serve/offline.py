"""Keep Ray on loopback: no usage-stats reports and no cloud-metadata probes (README "Network hygiene")."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import yaml

log = logging.getLogger(__name__)

BOOTSTRAP_CONFIG = "ray_bootstrap_config.yaml"
RAY_ENVIRONMENT = {
    "RAY_USAGE_STATS_ENABLED": "0",
    # A cluster started by `ray start` still reports "disabled" to this URL: point it at loopback.
    "RAY_USAGE_STATS_REPORT_URL": "http://127.0.0.1:9/usage",
}


def prepare_ray_environment(home: Path | None = None) -> Path:
    """Call before the first `ray.init`: sets the env vars and makes Ray see a local provider.

    Without `~/ray_bootstrap_config.yaml` saying `provider: {type: local}`, Ray's dashboard
    guesses the cloud by calling 169.254.169.254 and metadata.google.internal at every start.
    """
    os.environ.update(RAY_ENVIRONMENT)
    path = (home or Path.home()) / BOOTSTRAP_CONFIG
    if path.exists():
        provider = (yaml.safe_load(path.read_text()) or {}).get("provider") or {}
        if provider.get("type") != "local":
            log.warning("%s names provider %r: Ray may probe cloud metadata addresses", path, provider)
        return path
    path.write_text(
        "# Written by videogen-serve: tells Ray this is no cloud VM (no metadata probes).\n"
        "provider:\n  type: local\n"
    )
    return path
