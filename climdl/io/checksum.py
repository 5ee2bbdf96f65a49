"""SHA-256 of whole files: the identity of a checkpoint written into an output's provenance."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: str | Path, block: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read ``block`` bytes at a time (any file size).

    Args:
        path: the file.
        block: bytes read per step.

    Returns:
        the 64-character hex digest.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()
