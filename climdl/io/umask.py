"""The process's file-creation mask, read without changing it.

Files and folders written under a temporary name (``mkstemp``/``mkdtemp`` make them private)
are given the usual permissions, ``0o666 & ~umask`` / ``0o777 & ~umask``, once complete. The
classic way to read the mask, ``os.umask(0)`` then ``os.umask(old)``, sets it for a moment:
two threads doing so at once (downscale's I/O thread beside the main thread) can leave it at
0, and every file the process creates afterwards world-writable. Linux reports it in
``/proc/self/status``; elsewhere it is read once, at import, in the importing thread.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["current_umask", "private_to_usual"]


def _from_proc() -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    m = re.search(r"^Umask:\s*([0-7]+)", text, re.MULTILINE)
    return int(m.group(1), 8) if m else None


def _read_once() -> int:
    found = _from_proc()
    if found is not None:
        return found
    mask = os.umask(0o022)  # no /proc (macOS): read once, in the importing thread
    os.umask(mask)
    return mask


_AT_IMPORT = _read_once()


def current_umask() -> int:
    """The process's umask (``/proc/self/status`` where it exists, else the one at import)."""
    found = _from_proc()
    return _AT_IMPORT if found is None else found


def private_to_usual(path: str | os.PathLike[str], folder: bool = False) -> None:
    """Give a file (``folder``: a folder) made private by ``mkstemp``/``mkdtemp`` the
    permissions a plain ``open``/``mkdir`` would have given it."""
    os.chmod(path, (0o777 if folder else 0o666) & ~current_umask())
