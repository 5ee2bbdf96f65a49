"""An output folder whose set of files appears whole or not at all.

A command that writes several files into ``--out`` (``climdl evaluate``: summaries, fields,
report; ``climdl sensitivity``: ``sensitivity.nc``, ``summary.csv``, report) writes each file
atomically, but the set written file by file is left half done by a full disk, an error or a
Ctrl-C: summaries without the report look like a finished run, and a rerun refuses the folder as
holding an earlier one. So :func:`staged_folder` yields a hidden temporary folder on the file
system of ``--out`` into which every file is written, and which is removed (with the parent
folders made for it) on any failure or interrupt.

* A missing ``--out``: the temporary folder is made beside it and becomes it by one rename.
* An existing ``--out``: the temporary folder is made *inside* it and its entries are renamed in
  one by one (a window of a few renames). Renaming onto a non-empty folder is impossible, and a
  mount point, or a folder in a parent the user cannot write, can be neither replaced nor
  staged beside.
* An entry that exists is never replaced without ``overwrite``. With it, those the new set
  replaces and, in a folder holding an earlier run of the command (its marker file), that run's
  *own* other entries (a predicate each command supplies) are moved aside first and deleted
  once the new ones are in place, so that no stale report stays beside new numbers while the
  user's other files are kept; a folder of a new name that no earlier run wrote is refused, not
  deleted. If a rename fails, the new entries go back and the earlier set returns.
* The hidden folders of other runs of the command (alive, or killed) are never touched.

Full disks, read-only folders and missing permissions become the sentences of
:mod:`climdl.io.oserrors`, naming ``--out`` rather than the hidden folder.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from climdl.errors import OutputError
from climdl.io.oserrors import output_error
from climdl.io.umask import private_to_usual

__all__ = ["content", "stage_prefix", "staged_folder"]


def stage_prefix(command: str) -> str:
    """The prefix of the hidden folders a command makes inside an existing output folder.

    Folders with it that a killed run left (``kill -9``) are not counted as content and are
    removed by the next run of the same command.
    """
    return f".climdl-{command}."


def content(out: Path, command: str) -> list[str]:
    """The entries of the folder ``out``, without the temporary folders ``command`` left."""
    prefix = stage_prefix(command)
    return sorted(p.name for p in out.iterdir() if not p.name.startswith(prefix))


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
    """Remove the temporary folder and the (empty) parent folders made for it."""
    shutil.rmtree(stage, ignore_errors=True)
    _remove_parents(created)


def _merge(
    stage: Path, out: Path, own: Callable[[str], bool], marker: str, overwrite: bool, command: str
) -> None:
    """Rename the entries of ``stage`` into the existing folder ``out`` (same file system).

    An entry of ``out`` with a name of the new set is refused without ``overwrite``. The entries
    replaced (those with a new name and, with ``overwrite`` over an earlier run of the command,
    that run's own) are moved aside first, into a hidden folder in ``out``, and deleted once the
    new entries are in place; if a rename fails, the new entries go back into ``stage`` and the
    earlier ones return (if they cannot all return, they are kept aside and the error says
    where). A folder of the new set's name that no earlier run wrote is refused, not deleted.
    """
    names = sorted(p.name for p in stage.iterdir())
    clash = [n for n in names if os.path.lexists(out / n)]
    if clash and not overwrite:
        raise OutputError(
            f"{out} already holds {', '.join(clash)}; pass --overwrite to replace them."
        )
    prefix = stage_prefix(command)
    # what the new set replaces and, when the folder holds an earlier run of the command (its
    # marker file), that run's other entries; never another run's stage, alive or not
    earlier = overwrite and (out / marker).is_file()
    old = [
        n
        for n in (p.name for p in out.iterdir())
        if not n.startswith(prefix) and (n in names or (earlier and own(n)))
    ]
    foreign = [n for n in old if not earlier and (out / n).is_dir() and not (out / n).is_symlink()]
    if foreign:
        raise OutputError(
            f"{out} holds the folder(s) {', '.join(foreign)}, which this run would replace but "
            f"no earlier {command} run wrote (no {marker}); move them or choose another --out."
        )
    aside = Path(tempfile.mkdtemp(prefix=prefix, suffix=".replaced", dir=out))
    moved: list[str] = []
    try:
        for n in old:
            os.replace(out / n, aside / n)
            moved.append(n)
        for n in names:
            os.replace(stage / n, out / n)
    except BaseException:
        for n in names:  # the new entries that arrived go back, the earlier ones return
            if os.path.lexists(out / n) and not os.path.lexists(stage / n):
                with contextlib.suppress(OSError):
                    os.replace(out / n, stage / n)
        for n in moved:
            with contextlib.suppress(OSError):
                os.replace(aside / n, out / n)
        if any(os.path.lexists(aside / n) for n in moved):  # not all back: keep them, said
            raise OutputError(
                f"replacing the earlier results in {out} failed part-way; they are kept in {aside}."
            ) from None
        shutil.rmtree(aside, ignore_errors=True)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def _folder_error(exc: OSError, out: Path, inside: bool) -> OutputError | None:
    """The sentence for a temporary folder that cannot be made in (or beside) ``out``."""
    if not inside:
        return output_error(exc, out)
    # a path in ``out``, so that a permission sentence names ``out``; a space one names it too
    placeholder = out / stage_prefix("placeholder")
    err = output_error(exc, placeholder)
    return None if err is None else OutputError(str(err).replace(str(placeholder), str(out)))


def _make_stage(out: Path, command: str) -> tuple[Path, list[Path]]:
    """The temporary folder for ``out`` and the parent folders made for it.

    Beside a missing ``out`` (same parent, so one rename makes it ``out``); inside an existing
    one, which may be a mount point or sit in a folder the user cannot write.
    """
    real = out.resolve()  # a symlinked --out: stage on its target's file system
    inside = real.is_dir()
    created = [] if inside else _parents_to_create(real.parent)
    try:
        if inside:
            stage = Path(tempfile.mkdtemp(prefix=stage_prefix(command), suffix=".tmp", dir=real))
        else:
            real.parent.mkdir(parents=True, exist_ok=True)
            stage = Path(tempfile.mkdtemp(prefix=f".{real.name}.", suffix=".tmp", dir=real.parent))
        private_to_usual(stage, folder=True)  # mkdtemp makes 0700; outputs get the usual ones
    except OSError as exc:
        _remove_parents(created)
        err = _folder_error(exc, out, inside)
        if err is None:
            raise
        raise err from exc
    return stage, created


@contextlib.contextmanager
def staged_folder(
    out_dir: str | os.PathLike[str],
    *,
    own: Callable[[str], bool],
    marker: str,
    command: str,
    overwrite: bool = False,
    check: Callable[[Path], None] | None = None,
) -> Iterator[Path]:
    """Yield an empty temporary folder whose entries become ``out_dir``'s when the block
    succeeds; on any failure or interrupt it is removed and ``out_dir`` is left as it was.

    Args:
        out_dir: the output folder (need not exist; a file there is refused).
        own: whether an entry of ``out_dir`` (its name) belongs to the command, that is, is
            replaced with ``overwrite`` even when the new set has no entry of that name, if the
            folder holds an earlier run (``marker``).
        marker: the file every run of the command writes (``summary.json``): only a folder
            holding it has an earlier run whose other entries ``overwrite`` removes.
        command: the command's name, in the hidden folders' names (``"evaluate"``).
        overwrite: whether existing entries may be replaced (the new set's names and the
            command's own); without it an existing entry of a new name is refused.
        check: the command's own refusal of ``out_dir`` (an :class:`OutputError`), run before
            the temporary folder is made and again before the entries are renamed in (the
            folder may have been filled meanwhile).

    Yields:
        The temporary folder to write every output into.

    Raises:
        OutputError: ``out_dir`` cannot be written (full disk, read-only, no permission), is a
            file, or holds an entry that may not be replaced; the sentence names ``out_dir``.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out} exists and is not a folder; choose another --out.")
    if check is not None:
        check(out)
    stage, created = _make_stage(out, command)
    real = out.resolve()

    def named(exc: OutputError) -> OutputError:
        """The same sentence naming ``out_dir`` as given, not the temporary folder."""
        text = str(exc).replace(str(stage), str(out))
        return OutputError(
            text if real == out else text.replace(f"{real}{os.sep}", f"{out}{os.sep}")
        )

    def merge() -> None:
        if check is not None:
            check(out)
        _merge(stage, real, own, marker, overwrite, command)
        stage.rmdir()

    try:
        yield stage
        if stage.parent == real:
            merge()
        else:
            try:
                os.rename(stage, real)  # the whole set appears at once
            except OSError as exc:  # made meanwhile: merge into it
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY) or not real.is_dir():
                    raise
                merge()
    except OutputError as exc:
        _remove(stage, created)
        raise named(exc) from exc
    except (OSError, RuntimeError) as exc:
        failed = exc.filename if isinstance(exc, OSError) and exc.filename else out
        err = output_error(exc, failed)  # judged before the partial files are removed
        _remove(stage, created)
        if err is None:
            raise
        raise named(err) from exc
    except BaseException:  # another failure or Ctrl-C: no partial set is left behind
        _remove(stage, created)
        raise
