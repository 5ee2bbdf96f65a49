"""What a file-system failure means to a user, in one sentence.

Read-only folders, missing permissions, full disks and exhausted quotas are predictable: the user
can fix them (another folder, more space), so they surface as :class:`~climdl.errors.OutputError`
with a sentence that names the path and the cause, never as a traceback. Writers that fail without
an ``errno`` (netCDF-C reports a full disk as "NetCDF: HDF error") are diagnosed from the free
space left on the device.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from climdl.errors import OutputError

__all__ = ["EMPTY", "FULL_BELOW", "describe_os_error", "disk_is_full", "output_error"]

# Below this many free bytes a failed write without an errno ("NetCDF: HDF error") is taken to
# be a full disk: a failed write has used up what was left, and one chunk of a climdl output is
# at most a few tens of MB. A write that fails with "permission denied" on a device with less than
# EMPTY free bytes is also a full disk: HDF5 reports a create after a failed write that way.
FULL_BELOW = 64 * 2**20
EMPTY = 2**20

_CAUSES = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exhausted",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}


def describe_os_error(exc: OSError) -> str | None:
    """The cause of a user-fixable file-system error ("permission denied", ...), else None."""
    return _CAUSES.get(exc.errno) if exc.errno is not None else None


def disk_is_full(path: str | os.PathLike[str], below: int = FULL_BELOW) -> bool:
    """Whether the device holding ``path`` (or its nearest existing parent) has fewer than
    ``below`` bytes free to the user."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free < below
    except OSError:
        return False


def output_error(exc: BaseException, path: str | os.PathLike[str]) -> OutputError | None:
    """The :class:`OutputError` for a write to ``path`` that failed with ``exc``, or None when the
    failure is not one a user can fix (a bug keeps its traceback)."""
    final = Path(path)
    code = exc.errno if isinstance(exc, OSError) else None
    if code in (errno.ENOSPC, errno.EDQUOT):
        full = True
    elif code in (errno.EACCES, errno.EPERM):  # HDF5's word for a create on a full device
        full = disk_is_full(final, EMPTY)
    else:  # "NetCDF: HDF error" and other writers' errors without an errno
        full = code is None and isinstance(exc, (OSError, RuntimeError)) and disk_is_full(final)
    if full:
        space = _CAUSES[errno.EDQUOT if code == errno.EDQUOT else errno.ENOSPC]
        return OutputError(
            f"cannot write {final}: {space}; free some space or choose another output folder."
        )
    cause = describe_os_error(exc) if isinstance(exc, OSError) else None
    if cause is None:
        return None
    return OutputError(f"cannot write {final.parent}: {cause}; choose a folder you can write to.")
