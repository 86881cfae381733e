"""Test-only replicas that inject faults into the real serving path (imported by Ray workers too)."""

from __future__ import annotations

import threading
import time
from typing import Any

import torch

from serve.deployments import ModelServer
from serve.request import GenerationRequest

FAKE_OOM_MARKER = "FAKE-OOM"
FAKE_SLOW_MARKER = "FAKE-SLOW"
FAKE_SLOW_STEP_S = 0.2


class FaultyModelServer(ModelServer):
    """A real tiny-model replica whose scheduler misbehaves when a prompt asks it to (a test fake).

    Prompt containing FAKE_OOM_MARKER: the second scheduler step raises torch.OutOfMemoryError, inside
    the pipeline's own loop, as a CUDA allocation failure would. FAKE_SLOW_MARKER: every step takes at
    least FAKE_SLOW_STEP_S, so a long request is long on any machine. Other requests run normally.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fault: str | None = None
        self.step_calls = 0
        scheduler = self.engine.pipe.scheduler
        real_step = type(scheduler).step
        lock = threading.Lock()

        def step(scheduler_self: Any, *step_args: Any, **step_kwargs: Any) -> Any:
            with lock:
                self.step_calls += 1
                fault, calls = self.fault, self.step_calls
            if fault == FAKE_OOM_MARKER and calls >= 2:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (fake)")
            if fault == FAKE_SLOW_MARKER:
                time.sleep(FAKE_SLOW_STEP_S)
            return real_step(scheduler_self, *step_args, **step_kwargs)

        # A subclass, not an instance attribute: the engine's progress hook wraps `scheduler.step` itself.
        scheduler.__class__ = type(f"Faulty{type(scheduler).__name__}", (type(scheduler),), {"step": step})

    async def _run(self, request: GenerationRequest, *args: Any, **kwargs: Any) -> Any:
        # The engine runs one request at a time; the fault applies to this one only.
        self.step_calls = 0
        self.fault = next((m for m in (FAKE_OOM_MARKER, FAKE_SLOW_MARKER) if m in request.prompt), None)
        try:
            return await super()._run(request, *args, **kwargs)
        finally:
            self.fault = None
