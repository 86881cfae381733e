"""Replacing a method of one pipeline object (its scheduler's step, its VAE's decode, ...) for one run."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def replaced(owner: Any, name: str, value: Any) -> Iterator[None]:
    """`owner.name = value` for the duration; then what was there: another hook's wrapper (hooks nest), or
    the class's method showing through again."""
    wrapped = vars(owner).get(name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        if wrapped is None:
            delattr(owner, name)
        else:
            setattr(owner, name, wrapped)


def no_frames(video: Any, *args: Any, **kwargs: Any) -> Any:
    """A `postprocess_video` that makes no frames (the pipeline's output then holds none)."""
    return video[:0]
