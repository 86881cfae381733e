"""Translation between the protobuf messages and the service's own types, in one place."""

from __future__ import annotations

from typing import Any

from serve.api import pb
from serve.catalog import FloatRange, IntRange, ModelSpec, Task
from serve.config import ModelDeployment
from serve.engine import EncodedVideo, ProgressEvent, Stage
from serve.jobs import JobRecord, JobState
from serve.request import GenerationRequest, OutputFormat, RequestFields

_TASKS = {Task.T2V: pb.TASK_T2V, Task.I2V: pb.TASK_I2V}
_STAGES = {
    "queued": pb.STAGE_QUEUED,
    Stage.PREPARING.value: pb.STAGE_PREPARING,
    Stage.DENOISING.value: pb.STAGE_DENOISING,
    Stage.ENCODING.value: pb.STAGE_ENCODING,
    Stage.DONE.value: pb.STAGE_DONE,
}
_JOB_STATES = {
    JobState.QUEUED: pb.JOB_STATE_QUEUED,
    JobState.RUNNING: pb.JOB_STATE_RUNNING,
    JobState.SUCCEEDED: pb.JOB_STATE_SUCCEEDED,
    JobState.FAILED: pb.JOB_STATE_FAILED,
    JobState.CANCELLED: pb.JOB_STATE_CANCELLED,
}


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
        output_format=OutputFormat.GIF if params.output_format == pb.OUTPUT_FORMAT_GIF else OutputFormat.MP4,
        motion_bucket_id=_optional(params, "motion_bucket_id"),
        noise_aug_strength=_optional(params, "noise_aug_strength"),
        decode_chunk_size=_optional(params, "decode_chunk_size"),
        true_cfg_scale=_optional(params, "true_cfg_scale"),
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
    )


def progress(event: ProgressEvent | None = None, *, queued: bool = False) -> pb.Progress:
    if queued or event is None:
        return pb.Progress(stage=pb.STAGE_QUEUED)
    return pb.Progress(
        stage=_STAGES[event.stage.value],
        step=event.step,
        total_steps=event.total_steps,
        elapsed_seconds=event.elapsed_seconds,
    )


def summary_dict(request: GenerationRequest, video: EncodedVideo, queue_s: float, total_s: float) -> dict:
    """What GenerationSummary carries, as plain data (also stored in job records)."""
    import hashlib

    return {
        "model": request.model,
        "seed": video.seed,
        "num_frames": video.num_frames,
        "fps": request.fps,
        "height": request.height,
        "width": request.width,
        "num_inference_steps": video.steps_completed,
        "video_bytes": len(video.data),
        "mime_type": video.mime_type,
        "sha256": hashlib.sha256(video.data).hexdigest(),
        "queue_seconds": queue_s,
        "inference_seconds": video.inference_seconds,
        "encode_seconds": video.encode_seconds,
        "total_seconds": total_s,
    }


def summary(data: dict) -> pb.GenerationSummary:
    return pb.GenerationSummary(**data)


def job(record: JobRecord) -> pb.Job:
    message = pb.Job(
        job_id=record.job_id,
        state=_JOB_STATES[record.state],
        model=record.model,
        progress=pb.Progress(
            stage=_STAGES.get(record.stage, pb.STAGE_UNSPECIFIED),
            step=record.step,
            total_steps=record.total_steps,
            elapsed_seconds=record.elapsed_seconds,
        ),
        error=record.error,
        error_code=record.error_code,
        created_at=record.created_at,
        started_at=record.started_at,
        finished_at=record.finished_at,
        idempotency_key=record.idempotency_key,
    )
    if record.summary:
        message.summary.CopyFrom(summary(record.summary))
    return message
