"""Where finished videos are kept: a directory shared by every replica (a volume on Kubernetes)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

from serve.errors import Aborted, InvalidArgument, NotFound

JOB_ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")
EXTENSIONS = {"video/mp4": ".mp4", "image/gif": ".gif"}
PROGRESSIVE_MIME = "video/mp4"  # a long clip's file (fragmented MP4) while it grows


def check_job_id(job_id: str) -> str:
    """Job ids are server-made uuid4 hex strings; anything else is rejected (no path from user input)."""
    if not JOB_ID_PATTERN.fullmatch(job_id):
        raise InvalidArgument("job_id", "must be the 32-character hex id SubmitJob returned")
    return job_id


class ResultStore:
    """Finished videos on disk, one file per job, written atomically."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, job_id: str, mime_type: str) -> Path:
        return self.root / f"{check_job_id(job_id)}{EXTENSIONS[mime_type]}"

    def put(self, job_id: str, data: bytes, mime_type: str) -> Path:
        """Store a job's video; readers never see a partial file."""
        path = self._path(job_id, mime_type)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".partial-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def find(self, job_id: str) -> Path:
        for mime_type in EXTENSIONS:
            path = self._path(job_id, mime_type)
            if path.is_file():
                return path
        raise NotFound(f"no video stored for job {job_id}")

    def chunks(self, job_id: str, chunk_bytes: int) -> Iterator[tuple[int, int, bytes]]:
        """(offset, total size, data) pieces of a stored video."""
        path = self.find(job_id)
        total = path.stat().st_size
        with path.open("rb") as handle:
            offset = 0
            while data := handle.read(chunk_bytes):
                yield offset, total, data
                offset += len(data)

    def delete(self, job_id: str) -> None:
        for mime_type in EXTENSIONS:
            self._path(job_id, mime_type).unlink(missing_ok=True)
        self.growing_path(job_id).unlink(missing_ok=True)

    # A long clip's file while its job runs: appended to section by section, read by any number of
    # viewers meanwhile, renamed to the finished file's name when the job succeeds (the same bytes).

    def growing_path(self, job_id: str) -> Path:
        return self.root / f"{check_job_id(job_id)}.growing"

    def start_growing(self, job_id: str) -> None:
        """An empty growing file (a new attempt of the job starts over)."""
        self.growing_path(job_id).write_bytes(b"")

    def append_growing(self, job_id: str, data: bytes) -> None:
        with self.growing_path(job_id).open("ab") as handle:
            handle.write(data)

    def discard_growing(self, job_id: str) -> None:
        """No growing file for the job (it failed or was cancelled); none there is fine too."""
        with contextlib.suppress(OSError):
            self.growing_path(job_id).unlink(missing_ok=True)

    def finish_growing(self, job_id: str, mime_type: str, sha256: str) -> Path:
        """The growing file becomes the job's video, once its digest is the one the summary states."""
        growing = self.growing_path(job_id)
        digest = hashlib.sha256(growing.read_bytes()).hexdigest()
        if digest != sha256:
            raise RuntimeError(f"job {job_id}: the file written section by section is not the video made")
        path = self._path(job_id, mime_type)
        os.replace(growing, path)
        return path

    def read_growing(self, job_id: str, offset: int, max_bytes: int) -> bytes | None:
        """Up to `max_bytes` of the growing file from `offset`; None when there is none (not started, or
        finished: renamed); raises Aborted when it is shorter than `offset` (the job started over)."""
        try:
            with self.growing_path(job_id).open("rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                if size < offset:
                    raise Aborted(f"job {job_id} started again after its model replica died; fetch it again")
                handle.seek(offset)
                return handle.read(max_bytes)
        except FileNotFoundError:
            return None

    def read_finished(self, job_id: str, offset: int, max_bytes: int) -> bytes:
        """Up to `max_bytes` of the finished video from `offset`."""
        with self.find(job_id).open("rb") as handle:
            handle.seek(offset)
            return handle.read(max_bytes)
