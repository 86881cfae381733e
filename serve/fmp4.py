"""A video made section by section as one fragmented MP4 whose every prefix of pieces plays.

Long-clip models decode their clip a section at a time. Each section is encoded on its own (H.264, a
keyframe first, no B-frames) into a fragmented MP4, and its movie fragments are appended to what was
sent before: the first piece carries the file header (`ftyp`, `moov`), every piece after it only
`moof` + `mdat` boxes, renumbered (`mfhd`) and moved to the section's start time (`tfdt`). So the bytes
sent so far are always a file that players and browsers play up to the last whole section, and the
finished file is the same bytes, nothing rewritten at the end.

All sections share one encoder configuration, so their H.264 parameter sets (the `avcC` in the header)
are equal; that is checked for every section, never assumed.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from fractions import Fraction

import numpy as np

from serve.video import even_sized, to_uint8

FRAGMENTED = {"movflags": "frag_keyframe+empty_moov+default_base_moof"}
HEADER_BOXES = (b"ftyp", b"moov")
FRAGMENT_BOXES = (b"moof", b"mdat")
KEYFRAME_INTERVAL = 250  # frames; x264's default, longer than any section


def boxes(data: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[bytes, int, int]]:
    """(type, offset, size) of the ISO-BMFF boxes in data[start:end], in order."""
    end = len(data) if end is None else end
    offset = start
    while offset + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, offset)
        header = 8
        if size == 1:
            (size,) = struct.unpack_from(">Q", data, offset + 8)
            header = 16
        if size < header or offset + size > end:
            raise ValueError(f"box {kind!r} at {offset} runs past its parent ({size} bytes)")
        yield kind, offset, size
        offset += size


def child(data: bytes | bytearray, parent_offset: int, parent_size: int, kind: bytes) -> tuple[int, int]:
    """(offset, size) of the first `kind` box directly inside the box at parent_offset."""
    for found, offset, size in boxes(bytes(data), parent_offset + 8, parent_offset + parent_size):
        if found == kind:
            return offset, size
    raise ValueError(f"no {kind!r} box inside the box at {parent_offset}")


def _timescale(header: bytes) -> int:
    """The video track's timescale, from moov/trak/mdia/mdhd."""
    moov = next((o, s) for k, o, s in boxes(header) if k == b"moov")
    trak = child(header, *moov, b"trak")
    mdia = child(header, *trak, b"mdia")
    offset, _ = child(header, *mdia, b"mdhd")
    version = header[offset + 8]
    return struct.unpack_from(">I", header, offset + (28 if version == 1 else 20))[0]


class SectionMuxer:
    """Encode sections of frames into the pieces of one fragmented MP4 (see the module's docstring)."""

    def __init__(self, fps: int, crf: int = 18) -> None:
        self.fps = fps
        self.crf = crf
        self.frames_written = 0
        self.bytes_written = 0
        self.fragments = 0
        self.parameter_sets: bytes | None = None
        self.ticks_per_second = 0

    def _encode(self, frames: np.ndarray) -> tuple[bytes, bytes]:
        """One section as a fragmented MP4 of its own, and its H.264 parameter sets."""
        import av

        _, height, width, _ = frames.shape
        buffer = io.BytesIO()
        with av.open(buffer, mode="w", format="mp4", options=FRAGMENTED) as container:
            stream = container.add_stream("libx264", rate=Fraction(self.fps))
            stream.width, stream.height = width, height
            stream.pix_fmt = "yuv420p"
            # No B-frames: decode order is display order, so a section needs no frame of the next one.
            # One keyframe interval for every section whatever its length (each starts with a keyframe
            # anyway): x264 derives the parameter sets from it, and they must not change.
            stream.options = {
                "crf": str(self.crf),
                "preset": "veryfast",
                "bf": "0",
                "g": str(KEYFRAME_INTERVAL),
            }
            for array in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
            container.mux(stream.encode())
            parameter_sets = bytes(stream.codec_context.extradata or b"")
        return buffer.getvalue(), parameter_sets

    def add(self, frames: np.ndarray) -> bytes:
        """Encode one section (float in [0, 1] or uint8, frames x height x width x 3); the bytes to append."""
        frames = even_sized(to_uint8(frames))
        if not len(frames):
            return b""
        encoded, parameter_sets = self._encode(frames)
        if self.parameter_sets is None:
            self.parameter_sets = parameter_sets
        elif parameter_sets != self.parameter_sets:
            raise RuntimeError("the encoder changed its H.264 parameter sets between sections")
        piece = bytearray()
        for kind, offset, size in boxes(encoded):
            if kind in HEADER_BOXES and self.frames_written == 0:
                piece += encoded[offset : offset + size]
                if kind == b"moov":
                    self.ticks_per_second = _timescale(encoded[: offset + size])
            elif kind in FRAGMENT_BOXES:
                start = len(piece)
                piece += encoded[offset : offset + size]
                if kind == b"moof":
                    self._renumber(piece, start, size)
            # mfra (the random-access index of this section alone) and anything else is left out.
        self.frames_written += len(frames)
        self.bytes_written += len(piece)
        return bytes(piece)

    def _renumber(self, piece: bytearray, moof: int, size: int) -> None:
        """Give the fragment at `moof` the next sequence number and this section's start time."""
        self.fragments += 1
        mfhd, _ = child(piece, moof, size, b"mfhd")
        struct.pack_into(">I", piece, mfhd + 12, self.fragments)
        start = Fraction(self.frames_written * self.ticks_per_second, self.fps)
        if start.denominator != 1:
            raise RuntimeError(f"timescale {self.ticks_per_second} cannot place frame {self.frames_written}")
        traf = child(piece, moof, size, b"traf")
        tfdt, _ = child(piece, *traf, b"tfdt")
        if piece[tfdt + 8] == 1:
            (base,) = struct.unpack_from(">Q", piece, tfdt + 12)
            struct.pack_into(">Q", piece, tfdt + 12, base + int(start))
        else:
            (base,) = struct.unpack_from(">I", piece, tfdt + 12)
            struct.pack_into(">I", piece, tfdt + 12, base + int(start))
