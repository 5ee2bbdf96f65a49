"""A sensitivity run's output folder appears whole or not at all.

Each file of a run (``sensitivity.nc``, ``summary.csv``, the report and its figures) is written
atomically, but a set written file by file into ``--out`` is left half done by a full disk or a
Ctrl-C: the NetCDF and the summary without the report looks like a finished run, and a rerun is
refused because the folder "already holds a sensitivity run". So every file is written into a
hidden temporary folder beside ``--out`` (same parent, same file system), which becomes ``--out``
by one rename once everything is complete, and is removed on any failure or interrupt.

When ``--out`` already holds other files (an evaluation's report, the user's own files), the
folder cannot be replaced whole: the run's entries are renamed into it one by one (those of an
earlier run, replaced only with ``overwrite``, are set aside first and deleted after), a window
of a few renames instead of the whole write.
"""

from __future__ import annotations

import contextlib
import errno
import html
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from climdl.errors import OutputError
from climdl.io.oserrors import output_error
from climdl.sensitivity.output import OUTPUT_NAME

__all__ = ["staged_dir", "write_report"]


def _parents_to_create(folder: Path) -> list[Path]:
    """The missing folders of ``folder`` and its ancestors, deepest first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _remove_parents(created: list[Path]) -> None:
    """Remove the parent folders made for the temporary folder (deepest first, if empty)."""
    for folder in created:
        with contextlib.suppress(OSError):
            folder.rmdir()


def _remove(stage: Path, created: list[Path]) -> None:
    """Remove the temporary folder and the parents made for it."""
    shutil.rmtree(stage, ignore_errors=True)
    _remove_parents(created)


def _is_empty_folder(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and not any(path.iterdir())


def _merge(stage: Path, out: Path, overwrite: bool) -> None:
    """Rename the entries of ``stage`` into the existing folder ``out``.

    Entries of an earlier run are moved aside first (into a hidden folder in ``out``, the same
    file system) and deleted once the new ones are in place; if a rename fails, they are put back.
    """
    names = sorted(p.name for p in stage.iterdir())
    clash = [n for n in names if os.path.lexists(out / n)]
    if clash and not overwrite:
        raise OutputError(
            f"{out} already holds {', '.join(clash)}; pass --overwrite to replace them."
        )
    aside = Path(tempfile.mkdtemp(prefix=".replaced.", suffix=".tmp", dir=out))
    try:
        for n in clash:
            os.replace(out / n, aside / n)
        try:
            for n in names:
                os.replace(stage / n, out / n)
        except BaseException:
            for n in clash:  # put the earlier run back where the new entry did not arrive
                if not os.path.lexists(out / n):
                    os.replace(aside / n, out / n)
            raise
    finally:
        shutil.rmtree(aside, ignore_errors=True)


@contextlib.contextmanager
def staged_dir(out_dir: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``out_dir``; it becomes ``out_dir`` when the block
    succeeds, and is removed (with any parent folders made for it) when the block fails.

    Write every file of the run into the yielded folder (the caller has refused, before any
    work, an ``out_dir`` whose earlier outputs may not be replaced:
    :func:`climdl.sensitivity.output.check_out_dir`). An ``out_dir`` that is missing or empty is
    replaced by one rename; one that holds other files gets the run's entries renamed into it.
    Full disks, read-only folders and missing permissions become the
    :class:`~climdl.errors.OutputError` sentences of :mod:`climdl.io.oserrors`, naming
    ``out_dir`` rather than the temporary folder.

    Args:
        out_dir: the run's output folder (need not exist).
        overwrite: whether entries of an earlier run in ``out_dir`` may be replaced.

    Yields:
        The temporary folder to write into.

    Raises:
        OutputError: the folder cannot be written, or an entry exists without ``overwrite``.
    """
    out = Path(out_dir)
    real = out.resolve()  # a symlinked --out: stage beside its target, on its file system
    created = _parents_to_create(real.parent)
    try:
        real.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{real.name}.", suffix=".tmp", dir=real.parent))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(stage, 0o777 & ~umask)  # mkdtemp makes 0700; outputs get the usual permissions
    except OSError as exc:
        _remove_parents(created)
        err = output_error(exc, out)
        if err is None:
            raise
        raise err from exc

    def named(exc: OutputError) -> OutputError:
        """The same sentence with the temporary folder's name replaced by ``out_dir``."""
        return OutputError(str(exc).replace(str(stage), str(out)))

    try:
        yield stage
        if not os.path.lexists(real) or _is_empty_folder(real):
            try:
                os.rename(stage, real)  # the whole set appears at once
            except OSError as exc:  # made meanwhile and no longer empty: merge into it
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
                _merge(stage, real, overwrite)
        else:
            _merge(stage, real, overwrite)
    except OutputError as exc:
        _remove(stage, created)
        raise named(exc) from exc
    except (OSError, RuntimeError) as exc:
        err = output_error(exc, out)  # judged before the partial files are removed
        _remove(stage, created)
        if err is None:
            raise
        raise named(err) from exc
    except BaseException:  # a failure or Ctrl-C: no partial set is left behind
        _remove(stage, created)
        raise
    shutil.rmtree(stage, ignore_errors=True)  # emptied by a merge


def write_report(stage: Path, out_dir: Path) -> tuple[Path, ...]:
    """The stand-alone report of the run in ``stage`` (``report.html``, ``report.md``,
    ``figures/``), written into ``stage``; returns their final paths under ``out_dir``.

    The report names the sensitivity file it was made from: the temporary folder's name is
    replaced by ``out_dir`` in both pages, so they name the file where it will be.
    """
    from climdl.evaluation.sensitivity_report import write_sensitivity_report

    pages = write_sensitivity_report(stage / OUTPUT_NAME, stage)
    for page in pages:
        text = page.read_text(encoding="utf-8")
        for old, new in (
            (str(stage), str(out_dir)),
            (html.escape(str(stage)), html.escape(str(out_dir))),
        ):
            text = text.replace(old, new)
        page.write_text(text, encoding="utf-8")
    return tuple(out_dir / p.name for p in pages)
