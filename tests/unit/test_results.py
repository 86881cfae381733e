"""The result store keeps finished videos whole and never builds paths from user input."""

from __future__ import annotations

import pytest

from serve.errors import InvalidArgument, NotFound
from serve.results import ResultStore

JOB = "a" * 32


def test_stored_video_comes_back_in_ordered_chunks(tmp_path):
    store = ResultStore(tmp_path)
    data = bytes(range(256)) * 100
    store.put(JOB, data, "video/mp4")
    chunks = list(store.chunks(JOB, 1000))
    assert [offset for offset, _, _ in chunks] == list(range(0, len(data), 1000))
    assert all(total == len(data) for _, total, _ in chunks)
    assert b"".join(piece for _, _, piece in chunks) == data
    assert not list(tmp_path.glob(".partial-*"))


@pytest.mark.parametrize("job_id", ["../../etc/passwd", "A" * 32, "a" * 31, "", "a" * 31 + "/"])
def test_job_ids_that_are_not_server_made_are_rejected(tmp_path, job_id):
    with pytest.raises(InvalidArgument):
        ResultStore(tmp_path).put(job_id, b"x", "video/mp4")


def test_missing_video_is_not_found(tmp_path):
    with pytest.raises(NotFound):
        list(ResultStore(tmp_path).chunks(JOB, 10))
