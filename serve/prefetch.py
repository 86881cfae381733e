"""Download the weights of a config's hub models into the Hugging Face cache (the model-cache volume).

Serving never downloads: `weights: hub` reads the local cache only (serve.weights). On Kubernetes a Job
runs `python -m serve.prefetch /etc/videogen/serve-config.yaml` once per release to fill the shared
volume that every Ray worker mounts at HF_HOME.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from serve.catalog import get_spec
from serve.config import AppConfig, ServeConfig
from serve.weights import HUB


class Download(BaseModel):
    """One repository to fetch; `pipeline` repos go through diffusers (only the files it loads)."""

    repo_id: str
    variant: str | None = None
    pipeline: bool = True


def app_configs(data: dict[str, Any]) -> list[AppConfig]:
    """The applications of a ServeConfig file or of a Serve deploy config (serveConfigV2)."""
    if "applications" in data:
        return [AppConfig.model_validate(app.get("args", {})) for app in data["applications"]]
    return [ServeConfig.model_validate(data).app]


def downloads(apps: list[AppConfig]) -> list[Download]:
    """What the `weights: hub` models of `apps` load, each repository once, in config order."""
    wanted: dict[str, Download] = {}
    for app in apps:
        for model in app.models:
            if model.weights != HUB:
                continue
            spec = get_spec(model.name)
            # A repo that holds one component of an assembled pipeline is fetched whole, as are the
            # repos of the other components.
            assembled = bool(spec.component_repo_ids)
            wanted.setdefault(
                spec.repo_id, Download(repo_id=spec.repo_id, variant=spec.variant, pipeline=not assembled)
            )
            for repo_id in spec.component_repo_ids:
                wanted.setdefault(repo_id, Download(repo_id=repo_id))
            if spec.adapter_repo_id:
                wanted.setdefault(
                    spec.adapter_repo_id, Download(repo_id=spec.adapter_repo_id, pipeline=False)
                )
    return list(wanted.values())


def fetch(item: Download) -> str:
    """Download one repository into the Hugging Face cache; returns its snapshot directory."""
    if item.pipeline:
        from diffusers import DiffusionPipeline

        return str(DiffusionPipeline.download(item.repo_id, variant=item.variant))
    from huggingface_hub import snapshot_download

    return snapshot_download(item.repo_id)


def main(argv: list[str] | None = None, fetcher: Callable[[Download], str] = fetch) -> int:
    """Fetch every hub model of the config file given on the command line."""
    parser = argparse.ArgumentParser(prog="python -m serve.prefetch", description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path, help="a ServeConfig file or a Serve deploy config")
    args = parser.parse_args(argv)
    items = downloads(app_configs(yaml.safe_load(args.config.read_text())))
    for item in items:
        print(f"fetching {item.repo_id}" + (f" ({item.variant})" if item.variant else ""), file=sys.stderr)
        print(f"  -> {fetcher(item)}", file=sys.stderr)
    print(f"{len(items)} repositories in the cache", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
