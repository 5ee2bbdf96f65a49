"""The archive steps of ``downscale --format cordex-cmip6`` around the ordinary run.

Before the run: RUN.yaml checked against the CV (:func:`archive_metadata`), the years against
the driving experiment, the staging file named by the archive identity and days, and the DRS
version (RUN.yaml's, or the day the run started: :func:`archive_plan`, :func:`record_version`).
After it: the staging file split into the archive (:mod:`climdl.inference.cordex_archive`),
removed (:func:`discard_staging`), and the archive reopened as the run's result
(:func:`archive_result`). ``--resume`` of a run whose computation is over publishes a finished
staging file of the same run, or reports a complete archive (:func:`archive_resume`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time as _time
import warnings
from pathlib import Path
from typing import Any

import xarray as xr

from climdl.data.cordex import CordexRun, check_period, load_run, valid_version
from climdl.errors import ConfigError, OutputError
from climdl.inference.cordex_archive import FORMAT as CORDEX_FORMAT
from climdl.inference.cordex_archive import (
    RUN_DIGEST,
    STAGING,
    PlannedFile,
    publish,
    staging_name,
)
from climdl.inference.job import Job
from climdl.inference.members import MEMBER
from climdl.inference.output import Format
from climdl.inference.parts import _RunLock as RunLock
from climdl.inference.parts import parts_dir
from climdl.inference.result import DownscaleResult
from climdl.parallel.launch import barrier

__all__ = [
    "archive_metadata",
    "archive_plan",
    "archive_result",
    "archive_resume",
    "discard_staging",
    "publish_run",
    "record_version",
    "remove_if_empty",
    "run_digest",
]

log = logging.getLogger(__name__)


def archive_metadata(
    fmt: Format, metadata: str | Path | None, output: str | Path | None
) -> CordexRun | None:
    """RUN.yaml checked against the CV for ``--format cordex-cmip6`` (else refused)."""
    if fmt != CORDEX_FORMAT:
        if metadata is not None:
            raise ConfigError("--metadata is read by --format cordex-cmip6 only.")
        return None
    if metadata is None:
        raise ConfigError(
            "--format cordex-cmip6 needs --metadata RUN.yaml (institution_id, source_id, "
            "driving_source_id, ... : the attributes climdl cannot know)."
        )
    if output is None:
        raise ConfigError("--format cordex-cmip6 needs an archive folder (--output ROOT/).")
    root = Path(output)
    if root.suffix.lower() in (".nc", ".nc4", ".zarr") or (root.exists() and not root.is_dir()):
        raise ConfigError(
            f"--format cordex-cmip6 writes a tree of files: give the archive's root folder as "
            f"--output, not {root}."
        )
    return load_run(metadata)


def run_digest(job: Job) -> str:
    """SHA-256 of what defines the run (checkpoints, inputs and their fingerprints, period,
    settings): stored in the staging file, compared before a resumed run publishes it."""
    text = json.dumps(job.manifest(), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _version_file(staging: Path) -> Path:
    return staging.with_name(staging.name + ".version")


def archive_plan(archive: CordexRun, root: Path, job: Job, resume: bool) -> tuple[CordexRun, Path]:
    """The run's years checked against the experiment, its staging file (named by the archive
    identity and the days, in ``ROOT/.climdl-cordex``), and the DRS version: RUN.yaml's, or
    the day the run started when it is resumed (recorded beside the staging file)."""
    time = job.ds.time
    years = time.dt.year.values
    check_period(archive, int(years[0]), int(years[-1]))
    first, last = (t.strftime("%Y%m%d") for t in (time.values[0], time.values[-1]))
    staging = root / STAGING / staging_name(archive, job.targets, first, last)
    side = _version_file(staging)
    if not archive.version_given and resume and side.is_file():
        recorded = side.read_text(encoding="utf-8", errors="replace").strip()
        if valid_version(recorded):
            archive = archive.with_version(recorded)
    return archive, staging


def record_version(archive: CordexRun, staging: Path) -> None:
    """Note the run's DRS version beside its staging file (when RUN.yaml names none), for a
    resumed run to keep."""
    if archive.version_given:
        return
    staging.parent.mkdir(parents=True, exist_ok=True)
    _version_file(staging).write_text(archive.version + "\n", encoding="utf-8")


def publish_run(
    staging: Path, planned: list[PlannedFile], archive: CordexRun, *, overwrite: bool
) -> None:
    """Split the finished staging file into the archive, then discard it (in that order: a
    publication killed half way leaves the staging file for ``--resume``)."""
    publish(staging, planned, archive, overwrite=overwrite)
    discard_staging(staging)


def discard_staging(staging: Path) -> None:
    """The published run's staging file and version record, and the folder if empty."""
    staging.unlink(missing_ok=True)
    _version_file(staging).unlink(missing_ok=True)
    remove_if_empty(staging.parent)


def archive_resume(
    job: Job,
    planned: list[PlannedFile],
    archive: CordexRun,
    staging: Path,
    rank: int,
    world: int,
    t0: float,
    ensemble: dict[str, Any],
) -> DownscaleResult | None:
    """``--resume`` of an archive run whose computation is over: publish a finished staging
    file (its publication was interrupted), or report an archive that is complete. None: the
    run goes on as usual (its computation was interrupted, or never started)."""
    finished = staging.exists()
    complete = (
        not finished and not parts_dir(staging).exists() and all(f.path.exists() for f in planned)
    )
    barrier(world)  # every rank has looked before rank 0 changes anything
    if not (finished or complete):
        return None
    if rank != 0:
        return DownscaleResult(
            xr.Dataset(), None, job.n_days, 0.0, str(job.device), "", 0, 0, rank, world
        )
    if finished:
        lock = RunLock(staging)  # no other run publishes it at the same time
        try:
            with xr.open_dataset(staging, decode_times=False) as ds:
                digest = ds.attrs.get(RUN_DIGEST)
            if digest != run_digest(job):
                raise OutputError(
                    f"the finished run in {staging} was made from other checkpoints, inputs or "
                    "settings; pass --overwrite to start again."
                )
            publish_run(staging, planned, archive, overwrite=True)
        finally:
            lock.release()
            remove_if_empty(staging.parent)  # once the lock file is gone
    else:
        log.info("the archive of this run is complete; nothing to resume")
    return archive_result(job, planned, staging, t0, 0, 0, ensemble)


def archive_result(
    job: Job,
    planned: list[PlannedFile],
    staging: Path,
    t0: float,
    computed: int,
    resumed: int,
    ensemble: dict[str, Any],
) -> DownscaleResult:
    """The published archive, reopened lazily: each variable's files in time, realizations
    along ``member`` for an ensemble (closing the result closes every file)."""
    groups: dict[str, dict[int | None, list[Path]]] = {}
    for f in planned:
        groups.setdefault(f.variable, {}).setdefault(f.member, []).append(f.path)
    opened: list[xr.Dataset] = []
    with warnings.catch_warnings():  # areacella is named in external_variables, as CF says
        warnings.filterwarnings("ignore", "Variable.* referenced in cell_measures", UserWarning)
        variables = []
        for name, members in groups.items():
            series = [_open_series(paths) for paths in members.values()]
            opened += series
            variables.append(
                series[0]
                if len(series) == 1
                else xr.concat(  # the realizations of the variable; the rest from the first
                    series,
                    dim=MEMBER,
                    data_vars=[name],
                    coords="minimal",
                    compat="override",
                    combine_attrs="drop_conflicts",
                )
            )
    merged = xr.merge(variables, compat="override", combine_attrs="drop_conflicts")

    def close() -> None:
        for d in opened:
            d.close()

    merged.set_close(close)
    files = [f.path for f in planned]
    return DownscaleResult(
        merged,
        staging.parent.parent,  # the archive root (the staging folder is directly under it)
        job.n_days,
        _time.perf_counter() - t0,
        str(job.device),
        job.adapter.describe(),
        computed,
        resumed,
        **{k: v for k, v in ensemble.items() if k != "extra"},
        extra=dict(ensemble.get("extra", {})) | {"files": files},
    )


def _open_series(paths: list[Path]) -> xr.Dataset:
    """One variable's (and realization's) archive files, reopened lazily as one series."""
    return xr.open_mfdataset(
        paths,
        decode_times=xr.coders.CFDatetimeCoder(use_cftime=True),
        decode_coords="all",
        combine="by_coords",
        data_vars="minimal",
        coords="minimal",
        compat="override",
    )


def remove_if_empty(folder: Path) -> None:
    """Remove ``folder`` if it is empty (the staging folder once its run is published)."""
    with contextlib.suppress(OSError):
        folder.rmdir()
