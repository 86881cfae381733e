"""Where a model's weights are on this machine: tiny checkpoints, a directory, or the HF cache."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel

from serve.catalog import ModelSpec
from serve.errors import WeightsMissing

TINY = "tiny"
HUB = "hub"
DEFAULT_TINY_DIR = Path("var/tiny-models")


class WeightsSource(BaseModel):
    """Local directories a pipeline loads from."""

    path: Path
    adapter_path: Path | None = None

    def describe(self) -> str:
        return str(self.path) if self.adapter_path is None else f"{self.path} + {self.adapter_path}"


def tiny_dir() -> Path:
    """Where the tiny checkpoints live (`VIDEOGEN_TINY_DIR`, else var/tiny-models)."""
    return Path(os.environ.get("VIDEOGEN_TINY_DIR", DEFAULT_TINY_DIR)).resolve()


def _fetch_hint(repo_id: str) -> str:
    return f"hf download {repo_id}  (or: hf download {repo_id} --local-dir DIR, then set weights: DIR)"


def from_hf_cache(repo_id: str) -> Path:
    """A repo's snapshot in the Hugging Face cache (never downloaded here); else WeightsMissing."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except LocalEntryNotFoundError:
        from huggingface_hub import constants

        raise WeightsMissing(
            f"weights of {repo_id} are not in the Hugging Face cache ({constants.HF_HUB_CACHE}); "
            f"fetch them on a machine with hub access: {_fetch_hint(repo_id)}"
        ) from None


def _existing_dir(path: Path, spec: ModelSpec, what: str) -> Path:
    if not (path / "model_index.json").is_file() and not (path / "config.json").is_file():
        raise WeightsMissing(
            f"{what} of model {spec.name!r} not found in {path}; "
            f"for tiny weights run `videogen tiny-models --out {path.parent}`, "
            f"for real ones: {_fetch_hint(spec.repo_id)}"
        )
    return path


def resolve_weights(spec: ModelSpec, weights: str) -> WeightsSource:
    """Resolve `weights` ("tiny", "hub" or a directory) to local paths; raises WeightsMissing."""
    if weights == TINY:
        root = tiny_dir() / spec.name
    elif weights == HUB:
        adapter = from_hf_cache(spec.adapter_repo_id) if spec.adapter_repo_id else None
        return WeightsSource(path=from_hf_cache(spec.repo_id), adapter_path=adapter)
    else:
        root = Path(weights).expanduser().resolve()
    if spec.adapter_repo_id is None:
        return WeightsSource(path=_existing_dir(root, spec, "weights"))
    # Adapter models keep the base model in base/ and the adapter in motion_adapter/ (tiny layout);
    # a directory with only the base model takes the adapter from the Hugging Face cache.
    base = root / "base" if (root / "base").is_dir() else root
    adapter = root / "motion_adapter"
    return WeightsSource(
        path=_existing_dir(base, spec, "base weights"),
        adapter_path=_existing_dir(adapter, spec, "motion adapter")
        if adapter.is_dir()
        else from_hf_cache(spec.adapter_repo_id),
    )
