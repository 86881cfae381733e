"""Frames to MP4/GIF: what a browser and a decoder need."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from serve.request import OutputFormat
from serve.video import encode, probe_mp4, to_uint8


def frames(count: int = 6, height: int = 32, width: int = 48) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.random((count, height, width, 3), dtype=np.float32)


def test_mp4_decodes_to_the_same_frames_size_and_fps():
    data = encode(frames(), fps=12, output_format=OutputFormat.MP4)
    assert probe_mp4(data) == (6, 32, 48, 12.0)


def test_mp4_is_h264_yuv420p_with_index_first():
    import av

    data = encode(frames(), fps=8, output_format=OutputFormat.MP4)
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
    # faststart: the moov atom comes before the media data, so playback starts while loading.
    assert data.index(b"moov") < data.index(b"mdat")


def test_odd_sizes_are_padded_for_yuv420p():
    count, height, width, _ = probe_mp4(encode(frames(3, 31, 45), 8, OutputFormat.MP4))
    assert (count, height, width) == (3, 32, 46)


def test_gif_has_every_frame_and_loops():
    image = Image.open(io.BytesIO(encode(frames(5), fps=10, output_format=OutputFormat.GIF)))
    assert image.n_frames == 5 and image.info.get("loop") == 0 and image.info["duration"] == 100


def test_float_frames_are_clipped_and_rounded():
    converted = to_uint8(np.array([[[[-0.5, 0.5, 1.5]]]], dtype=np.float32))
    assert converted.tolist() == [[[[0, 128, 255]]]]
