"""Load a diffusers pipeline, apply memory options, run it with progress and cancellation."""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from serve import video
from serve.catalog import MemoryOptions, ModelSpec
from serve.compile import CompileOptions, compile_blocks
from serve.errors import Cancelled, InvalidArgument, ResourceExhausted, VideogenError
from serve.events import EncodedVideo, PieceCallback, ProgressCallback, ProgressEvent, Stage
from serve.families import get_family
from serve.hooks import no_frames, replaced
from serve.metrics import device_label
from serve.request import GenerationRequest, OutputFormat
from serve.sections import SectionCallback, SectionPlan, section_frames
from serve.stage_timing import StageSeconds, stage_clock
from serve.step_cache import ForwardCounts, Reduce, step_cache
from serve.text_encoder_offload import offload_text_encoders
from serve.weights import TINY, WeightsSource, resolve_weights

log = logging.getLogger(__name__)


# Encoding runs in its own thread: the encoder and torch each leave floating-point state (e.g.
# flush-to-zero) in the threads they run in, which made the same seed give different bytes.
_ENCODER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="video-encode")


class FloatFrames(BaseModel):
    """The pipeline's float frames in [0, 1] (no encoding) and its forwards: parity checks, benchmarks."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    frames: np.ndarray
    forwards: ForwardCounts


class GenerationOutput(BaseModel):
    """Decoded frames (uint8, frames x height x width x 3) and what it took to make them."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    frames: np.ndarray
    seed: int
    inference_seconds: float
    frame_count: int = Field(
        description="frames made (a long clip's went to on_section, and `frames` is empty)"
    )
    steps_completed: int
    peak_memory_bytes: int
    forwards: ForwardCounts
    stages: StageSeconds


def accelerator() -> torch.device | None:
    """The CUDA device when one is present; None on the CPU."""
    return torch.device("cuda") if torch.cuda.is_available() else None


def compute_dtype(spec: ModelSpec, device: torch.device) -> torch.dtype:
    """The model's dtype on an accelerator; float32 on the CPU, where half precision is slow or missing."""
    return getattr(torch, spec.torch_dtype) if device.type == "cuda" else torch.float32


def denoisers(pipe: Any) -> list[torch.nn.Module]:
    """The pipeline's denoisers: its transformer, both experts of Wan 2.2 A14B, or its UNet."""
    experts = [module for name in ("transformer", "transformer_2") if (module := getattr(pipe, name, None))]
    return experts or [pipe.unet]


def apply_memory_options(pipe: Any, options: MemoryOptions, device: torch.device, dtype: torch.dtype) -> Any:
    """Apply the diffusers memory savers that fit this device, then place the pipeline."""
    for denoiser in denoisers(pipe):
        if options.fp8_weights:
            # Weights stay in float8_e4m3fn and are upcast layer by layer for each forward.
            denoiser.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=dtype)
        if options.fp8_gemms:
            from parallel.fp8 import enable_fp8_gemms

            enable_fp8_gemms(denoiser)  # raises off a GPU of compute capability 8.9+
    if options.vae_tiling and hasattr(pipe.vae, "enable_tiling"):
        pipe.vae.enable_tiling()
    if options.vae_slicing and hasattr(pipe.vae, "enable_slicing"):
        pipe.vae.enable_slicing()
    if options.attention_slicing and hasattr(pipe, "enable_attention_slicing"):
        pipe.enable_attention_slicing()
    if options.cpu_offload and device.type == "cuda":
        pipe.enable_model_cpu_offload()
    else:
        if options.cpu_offload:
            log.info("cpu_offload needs an accelerator; the pipeline stays on %s", device)
        pipe.to(device)
    if options.text_encoder_offload:
        offload_text_encoders(pipe, device)
    return pipe


@contextlib.contextmanager
def step_hook(pipe: Any, on_step: Callable[[int, int], None]) -> Iterator[None]:
    """Call `on_step(done, total)` after every denoising step, via the scheduler.

    Every family's loop but one calls `scheduler.step` once per step, while the pipelines' own callback
    APIs differ (I2VGen-XL has none, ModelScope only the legacy one), so the scheduler is the hook that
    works for them; a family whose loop does not (SkyReels-V2 diffusion forcing: a scheduler copy per
    latent frame) brings its own `step_hook`. Raising from `on_step` stops the loop at that step boundary.
    """
    scheduler = pipe.scheduler
    original = scheduler.step
    done = 0

    def step(*args: Any, **kwargs: Any) -> Any:
        nonlocal done
        result = original(*args, **kwargs)
        done += 1
        total = max(len(scheduler.timesteps) // getattr(scheduler, "order", 1), done)
        on_step(done, total)
        return result

    with replaced(scheduler, "step", step):
        yield


def _no_postprocessing(pipe: Any) -> contextlib.AbstractContextManager[None]:
    """The pipeline decodes but turns nothing into frames (its output's frames are empty)."""
    return replaced(pipe.video_processor, "postprocess_video", no_frames)


def _peak_memory_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError | MemoryError) or "out of memory" in str(exc).lower()


class Engine:
    """One pipeline for one model; generates one request at a time."""

    def __init__(
        self,
        spec: ModelSpec,
        weights: str = TINY,
        memory: MemoryOptions | None = None,
        device: torch.device | None = None,
        num_threads: int | None = None,
        compile: CompileOptions | None = None,
    ) -> None:
        self.spec = spec
        self.weights = weights
        self.compile = compile  # None: eager
        self.compiled_blocks = 0
        # The catalog's memory options suit the real model; tiny checkpoints run without them unless
        # asked (VAE tiling, tuned for 480p+ inputs, mis-sizes the tiny CogVideoX VAE's output).
        self.memory = memory if memory is not None else (MemoryOptions() if weights == TINY else spec.memory)
        self.device = device or accelerator() or torch.device("cpu")
        self.dtype = compute_dtype(spec, self.device)
        self.family = get_family(spec.family)
        # CPU kernels reduce in a thread-count-dependent order: pin the count so a seed always
        # gives the same frames, whichever thread runs the request.
        self.num_threads = num_threads
        self.pipe: Any = None
        self.image_pipe: Any = None  # ti2v: the image pipeline over the same components, made on first use
        self.source: WeightsSource | None = None
        # Sums a step-cache measure over the ranks of a multi-GPU replica (parallel.worker sets it).
        self.cache_reduce: Reduce | None = None
        self.load_seconds = 0.0
        self._lock = threading.Lock()

    @property
    def tiny(self) -> bool:
        return self.weights == TINY

    @property
    def memory_device(self) -> str:
        """The `device` label of this engine's memory figures: the GPU's UUID, or `cpu`."""
        return device_label(self.device)

    def health_problem(self) -> str | None:
        """Why this replica cannot serve, or None: the pipeline lives in the replica's own process, so
        nothing beyond the process (which Serve watches itself) can fail apart from it."""
        return None

    def load(self) -> float:
        """Resolve the weights, build the pipeline and place it; returns the seconds it took."""
        import diffusers

        start = time.perf_counter()
        self.source = resolve_weights(self.spec, self.weights)
        load_kwargs: dict[str, Any] = {"torch_dtype": self.dtype}
        if self.spec.variant and self.device.type == "cuda" and not self.tiny:
            load_kwargs["variant"] = self.spec.variant
        if self.memory.text_encoder_quantization != "none":
            load_kwargs["text_encoder"] = self._quantized_text_encoder()
        pipeline_cls = getattr(diffusers, self.spec.pipeline_class)
        pipe = self.family.load_pipeline(pipeline_cls, self.source, load_kwargs)
        pipe.set_progress_bar_config(disable=True)
        self.pipe = apply_memory_options(pipe, self.memory, self.device, self.dtype)
        self.image_pipe = None
        if self.compile is not None:
            # Before any per-request hook (step cache, stage clock) wraps the blocks: see serve/compile.py.
            self.compiled_blocks = sum(compile_blocks(d, self.compile) for d in denoisers(self.pipe))
        self.load_seconds = time.perf_counter() - start
        log.info("loaded %s from %s in %.1fs", self.spec.name, self.source.describe(), self.load_seconds)
        return self.load_seconds

    def _quantized_text_encoder(self) -> torch.nn.Module:
        """The checkpoint's text encoder with bitsandbytes 8-bit or nf4 weights."""
        import json

        import transformers

        from parallel.fp8 import TextEncoderQuantization, load_text_encoder

        assert self.source is not None
        index = json.loads((self.source.path / "model_index.json").read_text())
        model_class = getattr(transformers, index["text_encoder"][1])
        mode = TextEncoderQuantization(self.memory.text_encoder_quantization)
        return load_text_encoder(self.source.path, mode, self.dtype, model_class)

    def pipeline_call_kwargs(self, request: GenerationRequest) -> dict[str, Any]:
        """Everything the pipeline's `__call__` gets for this request (seeded generator included)."""
        if request.model != self.spec.name:
            raise InvalidArgument("model", f"this engine serves {self.spec.name!r}, not {request.model!r}")
        kwargs = self.family.pipeline_kwargs(request, request.load_image())
        # A CPU generator gives the same noise, and so the same frames, on every device.
        kwargs["generator"] = torch.Generator("cpu").manual_seed(request.seed)
        kwargs["output_type"] = "np"
        return kwargs

    def pipeline_for(self, request: GenerationRequest) -> Any:
        """The pipeline that runs `request`: a ti2v model's image pipeline (sharing every component) for
        a request with an image, else the loaded one."""
        if request.image is None or self.spec.image_pipeline_class is None:
            return self.pipe
        if self.image_pipe is None:
            import diffusers

            self.image_pipe = getattr(diffusers, self.spec.image_pipeline_class).from_pipe(self.pipe)
            self.image_pipe.set_progress_bar_config(disable=True)
        return self.image_pipe

    def section_plan(self, request: GenerationRequest) -> SectionPlan | None:
        """A long-clip model's sections for this request (steps of each), else None."""
        if not self.spec.in_sections:
            return None
        return SectionPlan(steps=self.family.steps_per_section(request), num_frames=request.num_frames)

    def _frames_kept(self, request: GenerationRequest) -> int | None:
        """How many of the pipeline's frames the clip keeps: a long clip delivered whole is made in whole
        sections, cut to the frames asked for; any other model makes exactly its frames (None: all)."""
        return request.num_frames if self.spec.in_sections else None

    def float_frames(self, request: GenerationRequest) -> FloatFrames:
        """Run the request (its step caching too) and return the float frames, unencoded."""
        if self.pipe is None:
            self.load()
        kwargs = self.pipeline_call_kwargs(request)
        pipe = self.pipeline_for(request)
        plan = self.section_plan(request) if self.spec.progressive else None
        sections: list[np.ndarray] = []
        with (
            self._lock,
            self.family.configured(pipe, request),
            step_cache(denoisers(pipe), request.cache, self.cache_reduce) as forwards,
            contextlib.nullcontext()
            if plan is None
            else section_frames(pipe, plan, lambda _, f: sections.append(f), self.family.SECTION_KIND),
            torch.inference_mode(),
        ):
            output = pipe(**kwargs)
        if plan is not None:
            frames = np.concatenate(sections)
        else:
            frames = np.asarray(output.frames[0], dtype=np.float32)[: self._frames_kept(request)]
        return FloatFrames(frames=frames, forwards=forwards)

    def generate(
        self,
        request: GenerationRequest,
        on_progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
        decode: bool = True,
        postprocess: bool = True,
        on_section: SectionCallback | None = None,
    ) -> GenerationOutput:
        """Run the pipeline; reports every step and stops at the next step once `cancel` is set.

        For a rank whose frames nobody uses: `decode=False` stops at the latents (no VAE decode), and
        `postprocess=False` runs the VAE decode (its share of a split one) but makes no frames of it.
        A long-clip model gives each section's frames (uint8) to `on_section(index, frames)` as soon as
        it is decoded.
        """
        if self.pipe is None:
            self.load()
        with self._lock:
            return self._generate_locked(
                request,
                on_progress or (lambda event: None),
                cancel,
                decode,
                decode and postprocess,
                on_section,
            )

    def _generate_locked(
        self,
        request: GenerationRequest,
        on_progress: ProgressCallback,
        cancel: threading.Event | None,
        decode: bool = True,
        frames_wanted: bool = True,
        on_section: SectionCallback | None = None,
    ) -> GenerationOutput:
        start = time.perf_counter()
        steps_done = 0
        # A long clip's steps by section (progress counts over the whole clip, whatever the pipeline's
        # own count per section says), and its frames section by section when they are wanted.
        steps_plan = self.section_plan(request)
        plan = steps_plan if frames_wanted and self.spec.progressive else None
        where = {} if steps_plan is None else {"total_sections": steps_plan.total_sections}

        def on_step(done: int, total: int) -> None:
            nonlocal steps_done
            steps_done = done
            elapsed = time.perf_counter() - start
            if steps_plan is not None:  # the scheduler's count starts again with each section
                total = steps_plan.total_steps
                where["section"] = steps_plan.section_of(done)
            on_progress(
                ProgressEvent(
                    stage=Stage.DENOISING, step=done, total_steps=total, elapsed_seconds=elapsed, **where
                )
            )
            if cancel is not None and cancel.is_set():
                raise Cancelled(f"cancelled after step {done} of {total}")
            if done == total:
                on_progress(
                    ProgressEvent(
                        stage=Stage.ENCODING, step=done, total_steps=total, elapsed_seconds=elapsed, **where
                    )
                )

        sections: list[np.ndarray] = []
        made: list[int] = []

        def on_section_frames(index: int, frames: np.ndarray) -> None:
            frames = video.to_uint8(frames)
            made.append(len(frames))
            if on_section is None:
                sections.append(frames)  # returned as the clip; else the callback owns them
            else:
                on_section(index, frames)

        if cancel is not None and cancel.is_set():
            raise Cancelled("cancelled before it started")
        on_progress(ProgressEvent(stage=Stage.PREPARING, total_steps=request.num_inference_steps))
        kwargs = self.pipeline_call_kwargs(request)
        if not decode:
            kwargs["output_type"] = "latent"
        if self.num_threads is not None:
            torch.set_num_threads(self.num_threads)
        # A pipeline may draw from the global RNG as well (I2VGen-XL did, see serve/families/i2vgenxl.py):
        # seed it too, so that within one process the same seed gives the same frames.
        torch.manual_seed(request.seed)
        _peak_memory_reset(self.device)
        stopped: VideogenError | None = None
        pipe = self.pipeline_for(request)
        try:
            with (
                self.family.configured(pipe, request),
                getattr(self.family, "step_hook", step_hook)(pipe, on_step),
                step_cache(denoisers(pipe), request.cache, self.cache_reduce) as forwards,
                stage_clock(pipe) as stages,
                contextlib.nullcontext() if frames_wanted or not decode else _no_postprocessing(pipe),
                contextlib.nullcontext()
                if plan is None
                else section_frames(pipe, plan, on_section_frames, self.family.SECTION_KIND),
                torch.inference_mode(),
            ):
                output = pipe(**kwargs)
        except Cancelled as exc:
            stopped = exc.with_traceback(None)
        except Exception as exc:
            if not _is_oom(exc):
                raise
            stopped = ResourceExhausted(f"out of memory generating {request.model}: {exc}")
        if stopped is not None:
            # The stopped run's latents and activations hung off its traceback: free them now, so
            # the next request starts with the memory a finished one would have left.
            kwargs.clear()
            self._release_memory()
            raise stopped
        if plan is not None:
            frames = np.concatenate(sections) if sections else np.zeros((0, 0, 0, 3), np.uint8)
        elif frames_wanted:
            frames = video.to_uint8(np.asarray(output.frames[0])[: self._frames_kept(request)])
        else:
            frames = np.zeros((0, 0, 0, 3), np.uint8)
        return GenerationOutput(
            frames=frames,
            seed=request.seed,
            frame_count=sum(made) if plan is not None else len(frames),
            inference_seconds=time.perf_counter() - start,
            steps_completed=steps_done,
            peak_memory_bytes=_peak_memory(self.device),
            forwards=forwards,
            stages=stages,
        )

    def _release_memory(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def generate_video(
        self,
        request: GenerationRequest,
        on_progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
        on_piece: PieceCallback | None = None,
    ) -> EncodedVideo:
        """Generate, then encode to the requested container.

        A long-clip model's MP4 is encoded section by section while the rest generates (serve/fmp4.py):
        each piece goes to `on_piece` as soon as it is encoded, and the pieces in order are the file.
        """
        if self.spec.progressive and request.output_format is OutputFormat.MP4:
            return self._generate_progressively(request, on_progress, cancel, on_piece)
        output = self.generate(request, on_progress, cancel)
        start = time.perf_counter()
        data = _ENCODER.submit(video.encode, output.frames, request.fps, request.output_format).result()
        encode_seconds = time.perf_counter() - start
        return self._encoded(request, output, data, encode_seconds, on_progress)

    def _generate_progressively(
        self,
        request: GenerationRequest,
        on_progress: ProgressCallback | None,
        cancel: threading.Event | None,
        on_piece: PieceCallback | None,
    ) -> EncodedVideo:
        from serve.fmp4 import SectionMuxer

        muxer = SectionMuxer(request.fps)
        pieces: list[bytes] = []
        encode_seconds = 0.0
        began = time.perf_counter()
        first_piece_at: float | None = None

        def encode_section(frames: np.ndarray) -> None:
            nonlocal encode_seconds, first_piece_at
            start = time.perf_counter()
            piece = muxer.add(frames)
            encode_seconds += time.perf_counter() - start
            pieces.append(piece)
            if first_piece_at is None:
                first_piece_at = time.perf_counter() - began
            if on_piece is not None:
                on_piece(piece)

        pending: list[Any] = []
        try:
            output = self.generate(
                request,
                on_progress,
                cancel,
                on_section=lambda _, f: pending.append(_ENCODER.submit(encode_section, f)),
            )
        finally:
            for future in pending:  # nothing of this run is left encoding once it returns or raises
                with contextlib.suppress(Exception):
                    future.result()
        for future in pending:
            future.result()  # an encoding error surfaces here
        encoded = self._encoded(request, output, b"".join(pieces), encode_seconds, on_progress)
        return encoded.model_copy(
            update={"streamed": on_piece is not None, "first_piece_seconds": first_piece_at}
        )

    def _encoded(
        self,
        request: GenerationRequest,
        output: GenerationOutput,
        data: bytes,
        encode_seconds: float,
        on_progress: ProgressCallback | None,
    ) -> EncodedVideo:
        if on_progress is not None:
            on_progress(
                ProgressEvent(
                    stage=Stage.DONE,
                    step=output.steps_completed,
                    total_steps=output.steps_completed,
                    elapsed_seconds=output.inference_seconds + encode_seconds,
                )
            )
        return EncodedVideo(
            data=data,
            mime_type=video.MIME_TYPES[request.output_format],
            seed=output.seed,
            num_frames=output.frame_count,
            inference_seconds=output.inference_seconds,
            encode_seconds=encode_seconds,
            steps_completed=output.steps_completed,
            peak_memory_bytes=output.peak_memory_bytes,
            transformer_forwards=output.forwards.forwards,
            transformer_forwards_skipped=output.forwards.skipped,
            text_encode_seconds=output.stages.text_encode,
            vae_decode_seconds=output.stages.vae_decode,
        )
