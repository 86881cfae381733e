"""The floor of a Generate call on Ray Serve: the same two hops and wire shape as the service, no work.

`FloorRouter` (an ingress behind Serve's gRPC proxy) calls `FloorModel` (a second deployment) with a
streaming handle, as the Router calls a model replica; the model yields one stream item carrying the
events and a video of the asked size, and the Router sends the same messages `Generate` sends: a queued
event, the progress events, the video in chunks, a summary. No validation, admission, jobs or model:
what remains is what Serve and gRPC cost on this machine, measured beside the real path.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import AsyncIterator
from typing import Any

from serve.api import pb
from serve.config import ROUTER_DEPLOYMENT
from serve.events import EncodedVideo, ProgressEvent, Stage, StreamItem

APP = "serve-floor"


class FloorModel:
    """A model replica that makes nothing: one stream item with `events` events and `video_bytes` bytes."""

    async def generate(self, events: int, video_bytes: int) -> AsyncIterator[StreamItem]:
        video = EncodedVideo(
            data=b"\0" * video_bytes,
            mime_type="video/mp4",
            seed=0,
            num_frames=1,
            inference_seconds=0.0,
            encode_seconds=0.0,
            steps_completed=0,
            peak_memory_bytes=0,
        )
        progress = [ProgressEvent(stage=Stage.DENOISING, step=i, total_steps=events) for i in range(events)]
        yield StreamItem(events=progress, video=video, queue_seconds=0.0)


class FloorRouter:
    """Generate's wire shape over one streaming call to FloorModel."""

    def __init__(self, model: Any, events: int, video_bytes: int) -> None:
        self.model, self.events, self.video_bytes = model, events, video_bytes

    async def Generate(self, request: Any, grpc_context: Any = None) -> AsyncIterator[Any]:
        yield pb.GenerateResponse(progress=pb.Progress(stage=pb.STAGE_QUEUED))
        stream = self.model.options(stream=True).generate.remote(self.events, self.video_bytes)
        async for item in stream:
            for event in item.events:
                yield pb.GenerateResponse(progress=pb.Progress(stage=pb.STAGE_DENOISING, step=event.step))
            data = item.video.data
            yield pb.GenerateResponse(chunk=pb.VideoChunk(data=data, offset=0, total_bytes=len(data)))
            yield pb.GenerateResponse(
                summary=pb.GenerationSummary(video_bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
            )


def deploy(events: int, video_bytes: int) -> str:
    """Deploy the floor application next to the service (same Serve instance); returns its name."""
    import ray.cloudpickle
    from ray import serve

    # bench/ is not an installed package: ship these classes to the replicas by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    model = serve.deployment(FloorModel).options(name="FloorModel", ray_actor_options={"num_cpus": 0.1})
    router = serve.deployment(FloorRouter).options(
        name=ROUTER_DEPLOYMENT, ray_actor_options={"num_cpus": 0.1}
    )
    serve.run(router.bind(model.bind(), events, video_bytes), name=APP, route_prefix=f"/{APP}")
    return APP
