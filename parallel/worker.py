"""One rank of a sequence-parallel HunyuanVideo group: distributed init, pipeline, xDiT, one request a time.

Each rank loads the same weights through `serve.engine.Engine`, with the transformer built as xfuser's
`xFuserHunyuanVideoTransformer3DWrapper` (as xfuser 0.7's own HunyuanVideo runner does), then sets up
xfuser's runtime state, which creates the Ulysses / ring / CFG process groups. Every rank runs the
whole pipeline with the same seed; the wrapper splits the video tokens and gathers the result, so all
ranks hold the same latents after every step. Rank 0 reports progress and returns the encoded video.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from parallel import cpu_compat
from parallel.config import TransformerGeometry, attention_backend, validate, validate_request
from parallel.fp8 import ParameterBytes, parameter_bytes
from parallel.pipeline import stage_of, stage_ranks
from parallel.vae import VaeSplit, split_vae_decode
from serve.catalog import MemoryOptions, ModelSpec
from serve.compile import CompileOptions
from serve.config import ParallelOptions
from serve.engine import Engine, FloatFrames, GenerationOutput
from serve.events import EncodedVideo, ProgressCallback
from serve.request import GenerationRequest

log = logging.getLogger(__name__)

DEFAULT_COLLECTIVE_TIMEOUT_S = 600.0


def distributed_backend() -> str:
    """NCCL where CUDA is present, gloo on the CPU."""
    return "nccl" if torch.cuda.is_available() else "gloo"


class CollectiveCancel:
    """Stands in for the `threading.Event` that `Engine.generate` polls, but agrees across ranks.

    `Engine` calls `is_set()` once before the run and once after every denoising step, on every rank
    at the same points; here that call is an all-reduce (MAX) of each rank's local flag, so a cancel
    that reaches any rank stops all of them after the same step and no rank is left in a collective.
    """

    def __init__(self, local: threading.Event, group: Any) -> None:
        self.local = local
        self.group = group

    def is_set(self) -> bool:
        flag = torch.tensor([1 if self.local.is_set() else 0], dtype=torch.int32)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.group)
        return bool(flag.item())


def _sum_over_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """The sum of `tensor` over all ranks (every rank calls this at the same point of the same step)."""
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


class _XDiTFamily:
    """The model family's loading, with the transformer built as xDiT's parallel wrapper.

    `without_text_encoders`: leave the text encoders out (a rank that receives rank 0's embeddings):
    HunyuanVideo's Llama encoder alone is 16 GB in bf16 that such a rank never uses.
    """

    def __init__(
        self,
        family: Any,
        transformer_cls: type,
        without_text_encoders: bool = False,
        stage: tuple[int, int, int, int] | None = None,
    ) -> None:
        self.family = family
        self.transformer_cls = transformer_cls
        self.without_text_encoders = without_text_encoders
        # (pipeline_degree, this rank's stage, patches, warm-up steps): keep only that stage's blocks
        self.stage = stage

    def load_pipeline(self, pipeline_cls: type, source: Any, load_kwargs: dict[str, Any]) -> Any:
        kwargs = dict(load_kwargs)
        for name in transformer_names(source.path):  # Wan 2.2 A14B: both experts run in parallel
            transformer = self.transformer_cls.from_pretrained(
                str(source.path), subfolder=name, torch_dtype=load_kwargs.get("torch_dtype")
            )
            install = getattr(transformer, "install_xdit_attention_processors", None)
            if install is not None:  # HunyuanVideo's wrapper; Wan's installs them as it is built
                install()
            if self.stage is not None:  # before the pipeline moves the weights to the device
                transformer.keep_own_stage(*self.stage)
            kwargs[name] = transformer
        if self.without_text_encoders:
            kwargs |= {name: None for name in text_encoder_names(source.path)}
        return self.family.load_pipeline(pipeline_cls, source, kwargs)

    def pipeline_kwargs(self, request: GenerationRequest, image: Any) -> dict[str, Any]:
        return self.family.pipeline_kwargs(request, image)

    def configured(self, pipe: Any, request: GenerationRequest) -> AbstractContextManager[None]:
        return self.family.configured(pipe, request)


def _components(checkpoint: Any) -> dict[str, Any]:
    """The components a diffusers checkpoint directory declares (its model_index.json), present ones only."""
    import json
    from pathlib import Path

    index = json.loads((Path(checkpoint) / "model_index.json").read_text())
    return {name: value for name, value in index.items() if isinstance(value, list) and value[1]}


def transformer_names(checkpoint: Any) -> list[str]:
    """`transformer`, and `transformer_2` where the checkpoint has a second expert."""
    return sorted(name for name in _components(checkpoint) if name.startswith("transformer"))


def text_encoder_names(checkpoint: Any) -> list[str]:
    """The text-encoder components of a diffusers checkpoint directory (`text_encoder`, `text_encoder_2`)."""
    return sorted(name for name in _components(checkpoint) if name.startswith("text_encoder"))


# xDiT's sequence-parallel transformers by family (module under xfuser's transformers, class); HunyuanVideo's
# is chosen below, with its true-CFG split.
_XDIT_TRANSFORMERS = {
    "wan": ("transformer_wan", "xFuserWanTransformer3DWrapper"),
    "hunyuanvideo15": ("transformer_hunyuan_video15", "xFuserHunyuanVideo15Transformer3DWrapper"),
}


def _transformer_class(family: str, cfg_degree: int, pipeline_degree: int = 1) -> type:
    """xDiT's sequence-parallel transformer of the family: HunyuanVideo's (cut into pipeline stages when
    pipeline_degree > 1; with cfg=2, a subclass running each true-CFG branch on its rank group), Wan's or
    HunyuanVideo 1.5's."""
    if family in _XDIT_TRANSFORMERS:
        import importlib

        module, name = _XDIT_TRANSFORMERS[family]
        return getattr(importlib.import_module(f"xfuser.model_executor.models.transformers.{module}"), name)
    from xfuser.core.distributed import get_classifier_free_guidance_rank
    from xfuser.model_executor.models.transformers.transformer_hunyuan_video import (
        xFuserHunyuanVideoTransformer3DWrapper,
    )

    base: type = xFuserHunyuanVideoTransformer3DWrapper
    if pipeline_degree > 1:
        from parallel.pipeline import pipeline_transformer_class

        base = pipeline_transformer_class(base)
    if cfg_degree == 1:
        return base

    class CfgSplitHunyuanVideoTransformer(base):
        """Splits HunyuanVideoPipeline's two true-CFG calls per step over the two CFG rank groups.

        The pipeline calls the transformer for the conditional branch, then for the unconditional one,
        and combines the two only after the second call. xDiT 0.7's wrapper (which lists no CFG parallelism
        for HunyuanVideo) chunks only the token tensors over the CFG groups, not the timestep, guidance or
        pooled projections, and a batch of [cond, uncond] would share one text-padding mask (the union),
        which changes the result. So each group passes its own branch: the token tensors twice
        ([own, own], of which the wrapper keeps this group's half) and the per-sample conditioning once;
        the wrapper's CFG all-gather then returns [cond, uncond] on every rank. The first call returns a
        buffer that the second call fills in before the pipeline reads it.
        """

        _pending: tuple[dict[str, Any], torch.Tensor] | None = None

        def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            return_dict = kwargs.pop("return_dict", True)
            inputs = {
                "hidden_states": hidden_states,
                **dict(zip(_FORWARD_ARGS, args, strict=False)),
                **kwargs,
            }
            if self._pending is None:
                buffer = torch.empty_like(hidden_states)
                self._pending = (inputs, buffer)
                result = buffer
            else:
                cond_inputs, buffer = self._pending
                self._pending = None
                own = cond_inputs if get_classifier_free_guidance_rank() == 0 else inputs
                doubled = {k: torch.cat([v, v]) if k in _TOKEN_INPUTS else v for k, v in own.items()}
                both = super().forward(**doubled, return_dict=False)[0]
                batch = hidden_states.shape[0]
                buffer.copy_(both[:batch])
                result = both[batch:]
            if not return_dict:
                return (result,)
            from diffusers.models.modeling_outputs import Transformer2DModelOutput

            return Transformer2DModelOutput(sample=result)

        def reset_branches(self) -> None:
            self._pending = None

    return CfgSplitHunyuanVideoTransformer


_TOKEN_INPUTS = frozenset({"hidden_states", "encoder_hidden_states", "encoder_attention_mask"})
_FORWARD_ARGS = (
    "timestep",
    "encoder_hidden_states",
    "encoder_attention_mask",
    "pooled_projections",
    "guidance",
    "attention_kwargs",
)


class RankWorker:
    """One rank: `setup()` joins the group and loads the pipeline; `generate()` runs a request with the rest.

    A plain object, so it runs in a Ray actor (parallel.group) or in any process a test starts.
    """

    def __init__(
        self,
        spec: ModelSpec,
        weights: str,
        memory: MemoryOptions | None,
        parallel: ParallelOptions,
        rank: int,
        init_method: str,
        collective_timeout_s: float = DEFAULT_COLLECTIVE_TIMEOUT_S,
        compile: CompileOptions | None = None,
    ) -> None:
        self.spec = spec
        self.parallel = parallel
        self.rank = rank
        self.world_size = parallel.world_size
        self.init_method = init_method
        self.timeout = timedelta(seconds=collective_timeout_s)
        self.engine = Engine(spec, weights, memory, compile=compile)
        self.geometry: TransformerGeometry | None = None
        self._control: Any = None
        self.fp8_report: ParameterBytes | None = None
        self.load_seconds = 0.0
        self.prompt_encodes = 0  # prompts this rank encoded itself (rank 0 only: the others receive them)
        self.videos_encoded = 0  # videos this rank encoded (rank 0 only)
        self.attention_backend = attention_backend(parallel, on_gpu=torch.cuda.is_available())
        self.attention_backend_used = ""  # xfuser's choice, once its runtime is up
        self.vae_split = VaeSplit.NONE
        self.stage = 0  # this rank's pipeline stage (0 without pipeline parallelism)
        self.last_output: Any = None  # a rank other than 0: its last GenerationOutput (no frames)

    def setup(self) -> float:
        """Join the process group, load the pipeline and build xDiT's runtime; returns the seconds it took."""
        start = time.perf_counter()
        cpu_compat.apply()
        self._init_distributed()
        stages = self.parallel.pipeline_degree
        self.stage = stage_of(self.rank, self.world_size, stages)
        self.engine.family = _XDiTFamily(
            self.engine.family,
            _transformer_class(self.spec.family, self.parallel.cfg_degree, stages),
            without_text_encoders=self.rank != 0,
            stage=(stages, self.stage, self.parallel.pipeline_patches, self.parallel.pipeline_warmup_steps)
            if stages > 1
            else None,
        )
        self.engine.load()
        if self.engine.memory.fp8_weights:
            self.fp8_report = parameter_bytes(self.engine.pipe.transformer, self.engine.dtype)
            log.info("rank %d: FP8 transformer weights %s", self.rank, self.fp8_report.describe())
        assert self.engine.source is not None
        self.geometry = TransformerGeometry.from_checkpoint(self.engine.source.path)
        validate(self.parallel, self.geometry, self.world_size, true_cfg=self.parallel.cfg_degree == 2)
        self._init_xdit_runtime()
        if self.parallel.parallel_vae and self.world_size > 1:
            vae_group = dist.new_group(ranks=list(range(self.world_size)), timeout=self.timeout)
            try:
                self.vae_split = split_vae_decode(self.engine.pipe.vae, vae_group, self.rank, self.world_size)
            except ValueError as unsupported:  # DistVAE has no adapter for this VAE: rank 0 decodes alone
                log.warning("rank %d: VAE decode not split: %s", self.rank, unsupported)
        # Step-cache decisions are taken from measures summed over every rank of the replica.
        self.engine.cache_reduce = _sum_over_ranks
        self.load_seconds = time.perf_counter() - start
        log.info("rank %d/%d ready in %.1fs", self.rank, self.world_size, self.load_seconds)
        return self.load_seconds

    def _init_distributed(self) -> None:
        from xfuser.core.distributed import init_distributed_environment

        backend = distributed_backend()
        # Ray gives each rank actor one visible GPU, so every rank's device is cuda:0 in its own process.
        local_rank = 0 if torch.cuda.is_available() and torch.cuda.device_count() == 1 else self.rank
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)  # before the NCCL communicators are made (as xfuser does)
        if not dist.is_initialized():
            dist.init_process_group(
                backend,
                init_method=self.init_method,
                world_size=self.world_size,
                rank=self.rank,
                timeout=self.timeout,
            )
        init_distributed_environment(
            world_size=self.world_size,
            rank=self.rank,
            distributed_init_method=self.init_method,
            local_rank=local_rank,
            backend=backend,
        )

    def _init_xdit_runtime(self) -> None:
        from xfuser import xFuserArgs
        from xfuser.core.distributed import get_runtime_state, initialize_runtime_state

        args = xFuserArgs(
            model=str(self.engine.source.path if self.engine.source else ""),
            ulysses_degree=self.parallel.ulysses_degree,
            ring_degree=self.parallel.ring_degree,
            use_cfg_parallel=self.parallel.cfg_degree == 2,
            # Pipeline stages are xfuser's data-parallel groups (parallel/pipeline.py: the rank layout).
            data_parallel_degree=self.parallel.pipeline_degree,
            attention_backend=self.attention_backend,
        )
        engine_config, _ = args.create_config()
        initialize_runtime_state(self.engine.pipe, engine_config)
        if self.parallel.pipeline_degree > 1:
            from xfuser.core.distributed import get_dp_group

            expected = stage_ranks(self.rank, self.world_size, self.parallel.pipeline_degree)
            assert get_dp_group().ranks == expected, (get_dp_group().ranks, expected)
        self.attention_backend_used = get_runtime_state().attention_backend.name
        # Control messages (cancel) on their own CPU group, off the accelerator's streams.
        self._control = dist.new_group(backend="gloo", timeout=self.timeout)
        self._apply_timeout_to_all_groups()

    def _apply_timeout_to_all_groups(self) -> None:
        """xfuser and yunchang make their groups with torch's default timeout (10-30 min): use ours."""
        from torch.distributed import distributed_c10d as c10d

        world = getattr(c10d, "_world", None)  # private: if a torch release moves it, keep the defaults
        for group in list(world.pg_map if world is not None else ()):
            with contextlib.suppress(ValueError, RuntimeError, AssertionError):  # groups this rank is not in
                c10d._set_pg_timeout(self.timeout, group)

    def _reset_request_state(self) -> None:
        """What a request leaves in the transformer: a true-CFG branch a cancel left pending, PipeFusion's
        warm-up count and kept K/V."""
        transformer = self.engine.pipe.transformer
        for name in ("reset_branches", "reset_patches"):
            reset = getattr(transformer, name, None)
            if reset is not None:
                reset()

    @contextlib.contextmanager
    def _request(self, request: GenerationRequest) -> Iterator[None]:
        """Validate `request`, start it from a clean transformer, and clean up after it however it ends."""
        self._prepare(request)
        try:
            yield
        finally:
            self._reset_request_state()

    def _prepare(self, request: GenerationRequest) -> None:
        if self.geometry is None:
            raise RuntimeError("setup() has not run")
        validate_request(self.parallel, self.geometry, request)
        self._reset_request_state()

    def generate(
        self,
        request: GenerationRequest,
        cancel: threading.Event,
        on_progress: ProgressCallback | None = None,
    ) -> EncodedVideo | None:
        """Run one request with the other ranks; rank 0 returns the encoded video, the others None."""
        collective = CollectiveCancel(cancel, self._control)
        with self._request(request), self._prompt_from_rank_0():
            if self.rank == 0:
                video = self.engine.generate_video(request, on_progress, collective)  # type: ignore[arg-type]
                self.videos_encoded += 1
                return video
            self.last_output = self._generate(request, None, collective, decode=True)
            return None

    def run(
        self, request: GenerationRequest, on_progress: ProgressCallback | None = None, decode: bool = True
    ) -> GenerationOutput:
        """Run one request with the other ranks, without encoding a video; this rank's output (benchmarks).

        `decode=False` stops every rank at the latents.
        """
        collective = CollectiveCancel(threading.Event(), self._control)
        with self._request(request), self._prompt_from_rank_0():
            return self._generate(request, on_progress, collective, decode)

    def _generate(
        self,
        request: GenerationRequest,
        on_progress: ProgressCallback | None,
        collective: CollectiveCancel,
        decode: bool,
    ) -> GenerationOutput:
        """Only rank 0 makes frames: the others decode their share of a split VAE decode (without one,
        they stop at the latents) and do no post-processing."""
        return self.engine.generate(
            request,
            on_progress,
            collective,  # type: ignore[arg-type]
            decode=decode and (self.rank == 0 or self.vae_split is not VaeSplit.NONE),
            postprocess=self.rank == 0,
        )

    @contextlib.contextmanager
    def _prompt_from_rank_0(self) -> Iterator[None]:
        """One text encode per request: rank 0 encodes the prompt, the other ranks receive its embeddings.

        Every rank runs the same pipeline code for the same request, so `encode_prompt` is called at the
        same points (the prompt, then the negative one under true CFG) on all of them.
        """
        pipe = self.engine.pipe
        encode = pipe.encode_prompt

        def shared(*args: Any, **kwargs: Any) -> Any:
            message: list[Any] = [None]
            if self.rank == 0:
                self.prompt_encodes += 1
                message[0] = tuple(
                    t.cpu() if isinstance(t, torch.Tensor) else t for t in encode(*args, **kwargs)
                )
            dist.broadcast_object_list(message, src=0, group=self._control)
            device = self.engine.device
            return tuple(t.to(device) if isinstance(t, torch.Tensor) else t for t in message[0])

        pipe.encode_prompt = shared
        try:
            yield
        finally:
            del pipe.encode_prompt  # the class's method shows through again

    def frames(self, request: GenerationRequest) -> FloatFrames | None:
        """The pipeline's float frames in [0, 1] and forwards (no progress, no encoding): rank 0's."""
        with self._request(request), self._prompt_from_rank_0():
            frames = self.engine.float_frames(request)
        return frames if self.rank == 0 else None

    def shutdown(self) -> None:
        """Leave the process group (best effort: peers may already be gone)."""
        try:
            from xfuser.core.distributed import get_runtime_state

            get_runtime_state().destroy_distributed_env()
        except Exception:
            log.debug("xfuser teardown failed", exc_info=True)
        if dist.is_initialized():
            try:
                dist.destroy_process_group()
            except Exception:
                log.debug("destroy_process_group failed", exc_info=True)
