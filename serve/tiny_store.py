"""Whether a directory holds this code's tiny checkpoints, decided without importing diffusers."""

from __future__ import annotations

import hashlib
from importlib.metadata import version
from pathlib import Path

FINGERPRINT_FILE = ".fingerprint"
TINY_SEED = 0


def tiny_fingerprint(seed: int = TINY_SEED) -> str:
    """Changes whenever the checkpoints would change: the builder, the catalog, library versions."""
    here = Path(__file__).parent
    digest = hashlib.sha256()
    for source in (here / "tiny.py", here / "catalog.py"):
        digest.update(source.read_bytes())
    versions = " ".join(version(name) for name in ("diffusers", "transformers", "torch"))
    digest.update(f"{versions} {seed}".encode())
    return digest.hexdigest()


def ensure_tiny_checkpoints(out_dir: Path, seed: int = TINY_SEED) -> bool:
    """Write every tiny checkpoint unless `out_dir` already holds this code's; True when written."""
    out_dir = Path(out_dir)
    marker = out_dir / FINGERPRINT_FILE
    fingerprint = tiny_fingerprint(seed)
    if marker.is_file() and marker.read_text() == fingerprint:
        return False
    from serve.tiny import write_tiny_checkpoints

    write_tiny_checkpoints(out_dir, seed=seed)
    marker.write_text(fingerprint)
    return True
