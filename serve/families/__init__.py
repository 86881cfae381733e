"""One module per model family: how a validated request becomes pipeline arguments."""

from __future__ import annotations

import importlib
from contextlib import AbstractContextManager
from types import ModuleType
from typing import Any, Protocol

from PIL import Image

from serve.request import GenerationRequest
from serve.weights import WeightsSource


class Family(Protocol):
    """What every family module provides.

    Optional: `SECTION_KIND` and `steps_per_section` (long-clip models, serve/sections.py), and
    `step_hook(pipe, on_step)` where the engine's hook on the scheduler cannot count the steps (SkyReels-V2
    diffusion forcing steps a copy of the scheduler per latent frame).
    """

    def load_pipeline(self, pipeline_cls: type, source: WeightsSource, load_kwargs: dict[str, Any]) -> Any:
        """Build the pipeline from local weights."""
        ...

    def pipeline_kwargs(self, request: GenerationRequest, image: Image.Image | None) -> dict[str, Any]:
        """Arguments for the pipeline's `__call__` (without generator/output_type)."""
        ...

    def configured(self, pipe: Any, request: GenerationRequest) -> AbstractContextManager[None]:
        """Per-request settings of the pipeline itself (its scheduler, its config), undone on exit."""
        ...


def get_family(name: str) -> ModuleType:
    """The module `serve.families.<name>`."""
    return importlib.import_module(f"serve.families.{name}")
