"""I2VGen-XL image-to-video with a text prompt."""

from __future__ import annotations

from typing import Any

from PIL import Image

from serve.families.common import configured, text_video_kwargs
from serve.families.common import load_pipeline as load_plain
from serve.request import GenerationRequest
from serve.weights import WeightsSource

__all__ = ["configured", "load_pipeline", "pipeline_kwargs"]


def load_pipeline(pipeline_cls: type, source: WeightsSource, load_kwargs: dict[str, Any]) -> Any:
    """The pipeline, with its image latents drawn from the request's generator."""
    pipe = load_plain(pipeline_cls, source, load_kwargs)
    pipe.__class__ = _seeded(type(pipe))
    return pipe


def _seeded(pipeline_cls: type) -> type:
    class SeededI2VGenXLPipeline(pipeline_cls):  # type: ignore[misc, valid-type]
        """I2VGen-XL samples the conditioning image's latents from torch's process-wide RNG, which any
        other thread of the process may draw from meanwhile (seen in a serving replica: the same seed
        gave frames differing by up to 30 levels). Here they come from the request's own generator.
        """

        _image_generator: Any = None

        def __call__(self, *args: Any, generator: Any = None, **kwargs: Any) -> Any:
            self._image_generator = generator
            try:
                return super().__call__(*args, generator=generator, **kwargs)
            finally:
                self._image_generator = None

        def prepare_image_latents(self, *args: Any, **kwargs: Any) -> Any:
            encode, generator = self.vae.encode, self._image_generator

            def seeded_encode(*encode_args: Any, **encode_kwargs: Any) -> Any:
                output = encode(*encode_args, **encode_kwargs)
                distribution = output.latent_dist
                sample = distribution.sample
                distribution.sample = lambda generator_=None: sample(generator=generator_ or generator)
                return output

            self.vae.encode = seeded_encode
            try:
                return super().prepare_image_latents(*args, **kwargs)
            finally:
                del self.vae.encode  # the class's method shows through again

    SeededI2VGenXLPipeline.__name__ = pipeline_cls.__name__
    return SeededI2VGenXLPipeline


def pipeline_kwargs(request: GenerationRequest, image: Image.Image | None) -> dict[str, Any]:
    assert image is not None, "validated requests for image-to-video models carry an image"
    kwargs = text_video_kwargs(request)
    kwargs.update(
        image=image,
        target_fps=request.fps,
        decode_chunk_size=request.decode_chunk_size or request.num_frames,
        # transformers 5 flattened CLIPTextModel; the pipeline's default clip_skip=1 reaches for the
        # removed `text_model` attribute, so the last hidden layer is used directly.
        clip_skip=None,
    )
    return kwargs
