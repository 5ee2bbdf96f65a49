"""What a file-system failure means to a user, in one sentence.

Read-only folders, missing permissions, full disks and exhausted quotas are predictable: the user
can fix them (another folder, more space), so they surface as :class:`~climdl.errors.OutputError`
with a sentence that names the path and the cause, never as a traceback. Writers that fail without
an ``errno`` (netCDF-C reports a full disk as "NetCDF: HDF error") are diagnosed by a probe write.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from climdl.errors import OutputError

__all__ = [
    "PROBE_BYTES",
    "check_writable",
    "describe_os_error",
    "nearest_folder",
    "output_error",
    "space_error",
]

# The size of the probe write that tells a full disk or an exhausted quota from other failures.
PROBE_BYTES = 2**20

_CAUSES = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exhausted",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}


# Paths of the wrong shape: a file where the path needs a folder, or a folder where it names a
# file (``-o results.nc/x.nc`` with results.nc a file; ``-o existing_folder`` for a file).
_SHAPES = {
    errno.ENOTDIR: "{name} is a file, not a folder",
    errno.EEXIST: "{name} is a file, not a folder",
    errno.EISDIR: "{name} is a folder, not a file",
}


def describe_os_error(exc: OSError) -> str | None:
    """The cause of a user-fixable file-system error ("permission denied", "x.nc is a file, not
    a folder", ...), else None."""
    if exc.errno in _SHAPES:
        name = exc.filename
        if exc.errno != errno.EISDIR and name:  # the file in the way, not the folder wanted
            blocker = next((p for p in (Path(name), *Path(name).parents) if p.is_file()), None)
            if blocker is None:  # EEXIST of a folder or link: not a shape problem
                return f"{name} already exists" if exc.errno == errno.EEXIST else None
            name = str(blocker)
        return _SHAPES[exc.errno].format(name=name or "a part of the path")
    return _CAUSES.get(exc.errno) if exc.errno is not None else None


def nearest_folder(path: str | os.PathLike[str]) -> Path:
    """The folder ``path`` would be created in, or its nearest ancestor that exists."""
    folder = Path(path).parent
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    return folder


def space_error(path: str | os.PathLike[str]) -> int | None:
    """``ENOSPC`` or ``EDQUOT`` if a probe write of :data:`PROBE_BYTES` beside ``path`` (in its
    nearest existing folder) fails for lack of space or quota, else None.

    Writers that fail without an errno (netCDF-C's "HDF error") or with a misleading one (HDF5
    reports a create on a full device as "permission denied") are diagnosed by asking the file
    system directly: free-space figures miss quotas and reserved blocks.
    """
    try:
        with tempfile.TemporaryFile(dir=nearest_folder(path)) as probe:
            probe.write(b"\0" * PROBE_BYTES)
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as exc:
        return exc.errno if exc.errno in (errno.ENOSPC, errno.EDQUOT) else None
    return None


def output_error(exc: BaseException, path: str | os.PathLike[str]) -> OutputError | None:
    """The :class:`OutputError` for a write to ``path`` that failed with ``exc``, or None when the
    failure is not one a user can fix (a bug keeps its traceback)."""
    final = Path(path)
    code = exc.errno if isinstance(exc, OSError) else None
    if code in (errno.EACCES, errno.EPERM) or (
        code is None and isinstance(exc, (OSError, RuntimeError))
    ):  # netCDF-C's "HDF error", HDF5's "permission denied" on a full device: ask the disk
        code = space_error(final) or code
    if code in (errno.ENOSPC, errno.EDQUOT):
        space = _CAUSES[code]
        return OutputError(
            f"cannot write {final}: {space}; free some space or choose another output folder."
        )
    cause = describe_os_error(exc) if isinstance(exc, OSError) else None
    if cause is None:
        return None
    if code in _SHAPES:
        return OutputError(f"cannot write {final}: {cause}; choose another output path.")
    return OutputError(f"cannot write {final.parent}: {cause}; choose a folder you can write to.")


def check_writable(path: str | os.PathLike[str]) -> None:
    """Refuse, before any work, an output ``path`` whose folder (or nearest existing ancestor)
    cannot take a file: a read-only or full file system, missing permissions.

    Nothing is created (the probe is an anonymous temporary file), so a run refused later for
    another reason leaves no folder behind.

    Args:
        path: the file to be written (need not exist, nor its folder).

    Raises:
        OutputError: one sentence naming the folder and the cause.
    """
    try:
        with tempfile.TemporaryFile(dir=nearest_folder(path)):
            pass
    except OSError as exc:
        err = output_error(exc, path)
        if err is None:
            raise
        raise err from exc
