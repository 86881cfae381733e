"""Sections encoded one by one into a fragmented MP4: every prefix of pieces plays, the whole is one file."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest

from serve.fmp4 import SectionMuxer, boxes
from tests.support import ffprobe

FPS = 24
SECTION = 9


def section(seed: int, frames: int = SECTION, height: int = 48, width: int = 64) -> np.ndarray:
    """Smooth frames (a moving gradient), so that H.264 keeps them close and they can be compared."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack(
        [
            np.stack([(x * 4 + t * 8 + seed * 40) % 256, (y * 5 + seed * 30) % 256, np.full_like(x, 128)], -1)
            for t in range(frames)
        ]
    ).astype(np.uint8)


def decoded(data: bytes) -> tuple[np.ndarray, list[float]]:
    """Frames and their presentation times (s) of an MP4."""
    with av.open(io.BytesIO(data)) as container:
        frames = list(container.decode(video=0))
    return np.stack([f.to_ndarray(format="rgb24") for f in frames]), [float(f.time) for f in frames]


def test_every_prefix_of_pieces_is_a_file_that_decodes_to_the_sections_so_far():
    muxer = SectionMuxer(FPS)
    sections = [section(i) for i in range(4)]
    data = b""
    for done, frames in enumerate(sections, start=1):
        piece = muxer.add(frames)
        kinds = [kind for kind, _, _ in boxes(piece)]
        assert kinds[:2] == ([b"ftyp", b"moov"] if done == 1 else [b"moof", b"mdat"])
        data += piece
        got, times = decoded(data)
        assert len(got) == done * SECTION
        # Each frame at its own time: sections follow one another, none starts again at zero.
        assert times == pytest.approx([i / FPS for i in range(done * SECTION)])
        want = np.concatenate(sections[:done]).astype(np.int16)
        assert np.abs(got.astype(np.int16) - want).mean() < 6.0  # H.264 at crf 18 on sharp edges
    assert muxer.frames_written == 4 * SECTION and muxer.bytes_written == len(data)


def test_ffprobe_reads_the_duration_of_the_whole_file():
    muxer = SectionMuxer(FPS)
    data = b"".join(muxer.add(section(i, frames=n)) for i, n in enumerate([24, 24, 11, 1]))
    frames, duration = ffprobe(data)
    assert frames == 60
    assert duration == pytest.approx(60 / FPS, abs=1 / FPS)


def test_odd_sizes_are_padded_and_an_empty_section_adds_nothing():
    muxer = SectionMuxer(FPS)
    assert muxer.add(np.zeros((0, 33, 47, 3), np.uint8)) == b""
    frames, _ = decoded(muxer.add(section(0, height=33, width=47)))
    assert frames.shape == (SECTION, 34, 48, 3)


def test_float_frames_are_accepted_like_the_pipelines_give_them():
    muxer = SectionMuxer(FPS)
    frames, _ = decoded(muxer.add(section(1).astype(np.float32) / 255.0))
    assert len(frames) == SECTION
