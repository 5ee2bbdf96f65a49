"""What ``climdl sensitivity`` puts into the shared staged output folder.

A run's files (``sensitivity.nc``, ``summary.csv``, the report and its figures) are written into
the hidden temporary folder of :func:`climdl.io.staged_folder.staged_folder`, so that the set
appears in ``--out`` whole or not at all (a full disk, an error or Ctrl-C leaves nothing). This
module holds what is particular to a sensitivity run: which entries of ``--out`` are the run's
own (replaced by ``--overwrite``, other files kept) and the report, written in the temporary
folder but naming the sensitivity file where it will be.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from climdl.io.staged_folder import staged_folder
from climdl.sensitivity.output import OUTPUT_NAME, RUN_FILES

__all__ = ["COMMAND", "run_entries", "staged_run", "write_report"]

#: The command's name in the hidden folders made inside an existing ``--out``.
COMMAND = "sensitivity"


def run_entries(report: bool = True) -> Callable[[str], bool]:
    """Which entries of ``--out`` are a run's own: those whose presence refuses the run without
    ``--overwrite`` and that ``--overwrite`` replaces (the NetCDF, the summary and, when the run
    makes a report, the report and its figures)."""
    names = frozenset(RUN_FILES) if report else frozenset({OUTPUT_NAME})
    return names.__contains__


def staged_run(
    out_dir: Path, *, overwrite: bool, report: bool = True
) -> AbstractContextManager[Path]:
    """The temporary folder to write a run into (:func:`climdl.io.staged_folder.staged_folder`
    with the run's own entries); it becomes ``out_dir``'s content when the block succeeds."""
    return staged_folder(
        out_dir, own=run_entries(report), marker=OUTPUT_NAME, command=COMMAND, overwrite=overwrite
    )


def write_report(stage: Path, out_dir: Path) -> tuple[Path, ...]:
    """The stand-alone report of the run in ``stage`` (``report.html``, ``report.md``,
    ``figures/``), written into ``stage`` but naming the sensitivity file where it will be;
    returns their final paths under ``out_dir``."""
    from climdl.evaluation.sensitivity_report import write_sensitivity_report

    pages = write_sensitivity_report(stage / OUTPUT_NAME, stage, shown_as=out_dir / OUTPUT_NAME)
    return tuple(out_dir / p.name for p in pages)
