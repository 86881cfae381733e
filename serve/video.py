"""Frames -> encoded video bytes (MP4 H.264 yuv420p, or GIF), in memory."""

from __future__ import annotations

import io
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from serve.request import OutputFormat

MIME_TYPES = {OutputFormat.MP4: "video/mp4", OutputFormat.GIF: "image/gif"}


def _av() -> Any:
    """PyAV, imported on first use: a process that never encodes (ranks > 0, bench/gpu) needs no FFmpeg."""
    import av

    return av


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """Float frames in [0, 1] (or uint8) -> uint8 array of shape (frames, height, width, 3)."""
    if frames.dtype != np.uint8:
        frames = (np.clip(frames, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames of shape (n, height, width, 3), got {frames.shape}")
    return frames


def even_sized(frames: np.ndarray) -> np.ndarray:
    """yuv420p subsamples chroma 2x2: odd heights and widths are padded by one edge pixel."""
    _, height, width, _ = frames.shape
    pad_h, pad_w = height % 2, width % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return frames


def encode_mp4(frames: np.ndarray, fps: int, crf: int = 18) -> bytes:
    """H.264 in yuv420p with the index up front (faststart) so browsers play it while loading."""
    frames = even_sized(to_uint8(frames))
    _, height, width, _ = frames.shape
    # faststart rewrites the file to move the index up front, which needs a real, seekable file.
    av = _av()
    with tempfile.NamedTemporaryFile(suffix=".mp4") as handle:
        with av.open(handle.name, mode="w", options={"movflags": "+faststart"}) as container:
            stream = container.add_stream("libx264", rate=Fraction(fps))
            stream.width, stream.height = width, height
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(crf), "preset": "veryfast"}
            for array in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        return Path(handle.name).read_bytes()


def encode_gif(frames: np.ndarray, fps: int) -> bytes:
    """Looping GIF; frame duration rounded to GIF's 10 ms resolution."""
    images = [Image.fromarray(array) for array in to_uint8(frames)]
    buffer = io.BytesIO()
    duration_ms = max(10, round(1000 / fps / 10) * 10)
    images[0].save(
        buffer, format="GIF", save_all=True, append_images=images[1:], duration=duration_ms, loop=0
    )
    return buffer.getvalue()


def encode(frames: np.ndarray, fps: int, output_format: OutputFormat) -> bytes:
    """Encode frames in the requested container."""
    if output_format is OutputFormat.GIF:
        return encode_gif(frames, fps)
    return encode_mp4(frames, fps)


def decode_frames(data: bytes) -> np.ndarray:
    """Every frame of an encoded video as uint8 RGB, shape (frames, height, width, 3)."""
    with _av().open(io.BytesIO(data)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def probe_mp4(data: bytes) -> tuple[int, int, int, float]:
    """Decode an MP4 fully: (frames, height, width, fps). Used by tests and clients to check output."""
    with _av().open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        count = sum(1 for _ in container.decode(stream))
        return count, stream.height, stream.width, float(stream.average_rate)
