"""Translation between the protobuf messages and the service's own types, in one place."""

from __future__ import annotations

from typing import Any

from serve.api import pb
from serve.catalog import CachePolicy, FloatRange, IntRange, ModelSpec, Task
from serve.config import ModelDeployment
from serve.errors import InvalidArgument
from serve.events import GenerationSummary, ProgressEvent, Stage
from serve.jobs import JobRecord, JobState
from serve.request import CACHE_THRESHOLD_RANGE, OutputFormat, RequestFields

_TASKS = {Task.T2V: pb.TASK_T2V, Task.I2V: pb.TASK_I2V, Task.TI2V: pb.TASK_TI2V}
_STAGES = {
    Stage.QUEUED: pb.STAGE_QUEUED,
    Stage.PREPARING: pb.STAGE_PREPARING,
    Stage.DENOISING: pb.STAGE_DENOISING,
    Stage.ENCODING: pb.STAGE_ENCODING,
    Stage.DONE: pb.STAGE_DONE,
}
_JOB_STATES = {
    JobState.QUEUED: pb.JOB_STATE_QUEUED,
    JobState.RUNNING: pb.JOB_STATE_RUNNING,
    JobState.SUCCEEDED: pb.JOB_STATE_SUCCEEDED,
    JobState.FAILED: pb.JOB_STATE_FAILED,
    JobState.CANCELLED: pb.JOB_STATE_CANCELLED,
}


# Unset (0) takes the default container; a number the API does not define is refused.
_OUTPUT_FORMATS = {
    pb.OUTPUT_FORMAT_UNSPECIFIED: OutputFormat.MP4,
    pb.OUTPUT_FORMAT_MP4: OutputFormat.MP4,
    pb.OUTPUT_FORMAT_GIF: OutputFormat.GIF,
}


_CACHE_POLICIES = {CachePolicy.OFF: pb.CACHE_POLICY_OFF, CachePolicy.FIRST_BLOCK: pb.CACHE_POLICY_FIRST_BLOCK}
# Unset (0) takes the deployment's default policy.
_CACHE_POLICIES_IN = {pb.CACHE_POLICY_UNSPECIFIED: None} | {v: k for k, v in _CACHE_POLICIES.items()}


def _enum(field: str, value: int, known: dict[int, Any], enum: Any) -> Any:
    """`known[value]`; a number the API does not define is INVALID_ARGUMENT naming the field."""
    try:
        return known[value]
    except KeyError:
        names = ", ".join(f"{enum.Name(v)} ({v})" for v in known)
        raise InvalidArgument(field, f"{value} is not one of {names}") from None


def _optional(message: Any, field: str) -> Any:
    return getattr(message, field) if message.HasField(field) else None


def request_fields(params: pb.GenerationParams) -> RequestFields:
    """The caller's fields, unchecked; zero means "use the model's default"."""
    return RequestFields(
        model=params.model,
        prompt=params.prompt,
        negative_prompt=params.negative_prompt,
        image=params.image,
        num_frames=params.num_frames or None,
        fps=params.fps or None,
        height=params.height or None,
        width=params.width or None,
        num_inference_steps=params.num_inference_steps or None,
        guidance_scale=_optional(params, "guidance_scale"),
        seed=_optional(params, "seed"),
        output_format=_enum("output_format", params.output_format, _OUTPUT_FORMATS, pb.OutputFormat),
        motion_bucket_id=_optional(params, "motion_bucket_id"),
        noise_aug_strength=_optional(params, "noise_aug_strength"),
        decode_chunk_size=_optional(params, "decode_chunk_size"),
        true_cfg_scale=_optional(params, "true_cfg_scale"),
        guidance_scale_2=_optional(params, "guidance_scale_2"),
        boundary_ratio=_optional(params, "boundary_ratio"),
        flow_shift=_optional(params, "flow_shift"),
        decode_timestep=_optional(params, "decode_timestep"),
        decode_noise_scale=_optional(params, "decode_noise_scale"),
        cache_policy=_enum("cache_policy", params.cache_policy, _CACHE_POLICIES_IN, pb.CachePolicy),
        cache_threshold=_optional(params, "cache_threshold"),
    )


def _int_range(value: IntRange) -> pb.IntRange:
    return pb.IntRange(min=value.min, max=value.max, step=value.step)


def _float_range(value: FloatRange) -> pb.FloatRange:
    return pb.FloatRange(min=value.min, max=value.max)


def model_info(spec: ModelSpec, deployment: ModelDeployment, cold_start_s: float) -> pb.ModelInfo:
    limits = spec.limits_for(deployment.tiny)
    return pb.ModelInfo(
        name=spec.name,
        task=_TASKS[spec.task],
        weights=spec.repo_id if deployment.weights == "hub" else deployment.weights,
        description=spec.description,
        default_num_frames=limits.default_num_frames,
        default_fps=limits.default_fps,
        default_height=limits.default_height,
        default_width=limits.default_width,
        default_num_inference_steps=limits.default_num_inference_steps,
        default_guidance_scale=limits.default_guidance_scale,
        num_frames=_int_range(limits.num_frames),
        fps=_int_range(limits.fps),
        height=_int_range(limits.height),
        width=_int_range(limits.width),
        num_inference_steps=_int_range(limits.num_inference_steps),
        guidance_scale=_float_range(limits.guidance_scale),
        knobs=sorted(knob.value for knob in spec.knobs),
        expected_cold_start_seconds=cold_start_s,
        gpus_per_replica=int(
            deployment.num_gpus * (deployment.parallel.world_size if deployment.parallel else 1)
        ),
        cache_policies=[_CACHE_POLICIES[policy] for policy in sorted(spec.cache_policies)],
        default_cache_policy=_CACHE_POLICIES[deployment.default_cache().policy],
        default_cache_threshold=deployment.default_cache().threshold,
        cache_threshold=_float_range(CACHE_THRESHOLD_RANGE),
        section_frames=spec.section_frames if spec.progressive else 0,
    )


def progress(event: ProgressEvent) -> pb.Progress:
    return pb.Progress(
        stage=_STAGES[event.stage],
        step=event.step,
        total_steps=event.total_steps,
        elapsed_seconds=event.elapsed_seconds,
        section=event.section,
        total_sections=event.total_sections,
    )


def summary(data: GenerationSummary) -> pb.GenerationSummary:
    fields = data.model_dump()
    fields["cache_policy"] = _CACHE_POLICIES[data.cache_policy]
    return pb.GenerationSummary(**fields)


def job(record: JobRecord) -> pb.Job:
    message = pb.Job(
        job_id=record.job_id,
        state=_JOB_STATES[record.state],
        model=record.model,
        progress=pb.Progress(
            stage=_STAGES[record.stage],
            step=record.step,
            total_steps=record.total_steps,
            elapsed_seconds=record.elapsed_seconds,
            section=record.section,
            total_sections=record.total_sections,
        ),
        error=record.error,
        error_code=record.error_code,
        created_at=record.created_at,
        started_at=record.started_at,
        finished_at=record.finished_at,
        idempotency_key=record.idempotency_key,
        webhook_url=record.webhook_url,
        webhook_state=record.webhook_state,
        webhook_attempts=record.webhook_attempts,
        webhook_error=record.webhook_error,
    )
    if record.summary is not None:
        message.summary.CopyFrom(summary(record.summary))
    return message
