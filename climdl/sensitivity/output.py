"""The files of an emulator sensitivity run: ``sensitivity.nc`` (CF-1.10) and ``summary.csv``.

The NetCDF holds, per target ``T``: the per-day changes under each attack
(``T_mean_change(time, attack)``, ``T_max_abs_change``, ``T_rms_change`` and, for ``pr``,
``pr_wet_fraction_change``), and the per-predictor maps on the model's coarse grid averaged over
the days (``T_saliency(predictor, y, x)``, ``T_bound_sensitivity``). ``attack`` and ``predictor``
are string coordinates; the bound of each predictor is the string variable ``predictor_bound``
(its units differ from one predictor to the next). The report (:mod:`climdl.evaluation.
sensitivity_report`) reads it back. ``summary.csv`` has one row per target and attack: the
median and the largest size over the days of each measure.

Both files are written under temporary names and renamed once complete; a folder that already
holds a run's outputs is refused unless the caller asks to overwrite it.
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from climdl import __version__
from climdl.data.spec import Grid
from climdl.errors import OutputError
from climdl.inference.output import TIME_UNITS, grid_coords, space_dims, time_bounds
from climdl.io.netcdf import atomic_path, write_netcdf
from climdl.io.oserrors import check_writable
from climdl.io.provenance import CF_CONVENTIONS, climdl_source, history_entry

if TYPE_CHECKING:
    from climdl.inference.job import Job

__all__ = [
    "ATTACKS",
    "MEASURES",
    "OUTPUT_NAME",
    "RUN_FILES",
    "SCHEMA_VERSION",
    "SUMMARY_NAME",
    "SummaryRow",
    "TargetMaps",
    "check_out_dir",
    "emulator_attrs",
    "emulator_dataset",
    "summary_rows",
    "write_outputs",
]

ATTACKS = ("fgsm", "pgd", "pgd_rms", "random", "random_max")
"""The ``attack`` coordinate, in order."""
MEASURES = ("mean_change", "max_abs_change", "rms_change", "wet_fraction_change")
"""The per-day measures (the last one for pr only), in the order of the measure axis."""
OUTPUT_NAME = "sensitivity.nc"
SUMMARY_NAME = "summary.csv"
SCHEMA_VERSION = 1
WET_DAY_THRESHOLD = "1 mm day-1"
RUN_FILES = (OUTPUT_NAME, SUMMARY_NAME, "report.html", "report.md", "figures")
"""The entries a run with its report writes into ``--out`` (its own, for ``--overwrite``)."""

_LONG_NAMES = {
    "mean_change": "signed change of the domain-mean {t}",
    "max_abs_change": "largest absolute change of {t} at a grid point",
    "rms_change": "root-mean-square change of {t} over the domain",
    "wet_fraction_change": "signed change of the fraction of grid points with {t} >= "
    + WET_DAY_THRESHOLD,
}

_SIGNED = (
    "signed for fgsm, pgd (the sign with the larger change), pgd_rms and random_max (the draw "
    "with the largest change in size); random: the mean over the draws of its size"
)
_COMMENTS = {
    "mean_change": _SIGNED,
    "max_abs_change": "random: the mean over the draws; random_max: the largest draw",
    "rms_change": "random: the mean over the draws; random_max: the largest draw",
    "wet_fraction_change": _SIGNED,
}


@dataclass
class TargetMaps:
    """One target's results over the run.

    Attributes:
        name: the target (``tasmax``).
        attrs: the target's CF attributes from the checkpoint.
        units: the target's units.
        measures: per-day measures [day, attack, measure] (measures in :data:`MEASURES` order).
        saliency: integrated gradients [predictor, y, x], mean over the days.
        bound_sensitivity: ``|d mean / dx| * radius`` [predictor, y, x], mean over the days.
        baseline: the integrated gradients' reference input, in words.
    """

    name: str
    attrs: dict[str, str]
    units: str
    measures: np.ndarray
    saliency: np.ndarray
    bound_sensitivity: np.ndarray
    baseline: str


@dataclass(frozen=True)
class SummaryRow:
    """One target and attack: the median and the largest size of each measure over the days.

    Attributes:
        target: the target.
        attack: the attack (:data:`ATTACKS`).
        units: the target's units (the wet fraction's are ``1``).
        days: days analysed.
        median_abs_mean_change: median over days of ``|mean_change|``.
        max_abs_mean_change: largest ``|mean_change|``.
        median_max_abs_change: median of ``max_abs_change``.
        max_max_abs_change: largest ``max_abs_change``.
        median_rms_change: median of ``rms_change``.
        max_rms_change: largest ``rms_change``.
        median_abs_wet_fraction_change: median of ``|wet_fraction_change|`` (pr), else None.
        max_abs_wet_fraction_change: largest ``|wet_fraction_change|`` (pr), else None.
    """

    target: str
    attack: str
    units: str
    days: int
    median_abs_mean_change: float
    max_abs_mean_change: float
    median_max_abs_change: float
    max_max_abs_change: float
    median_rms_change: float
    max_rms_change: float
    median_abs_wet_fraction_change: float | None = None
    max_abs_wet_fraction_change: float | None = None


def check_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Refuse, before any work, an output folder that cannot take a run's files.

    Nothing is created: a run refused later (bad bounds, bad inputs) leaves no folder behind.

    Args:
        out_dir: the output folder (need not exist).
        overwrite: whether an earlier run's files may be replaced.

    Raises:
        OutputError: ``out_dir`` is a file, holds an earlier run's files (without
            ``overwrite``), or lies where nothing can be written.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir} is a file; give a folder for --out.")
    existing = [n for n in RUN_FILES if (out_dir / n).exists()]
    if existing and not overwrite:
        raise OutputError(
            f"{out_dir} already holds a sensitivity run ({', '.join(existing)}); pass "
            "--overwrite to replace it or choose another --out folder."
        )
    check_writable(out_dir / OUTPUT_NAME)


def emulator_attrs(
    job: Job,
    *,
    bounds: str,
    pgd_steps: int,
    random_draws: int,
    ig_steps: int,
    seed: int,
    n_days: int,
    wet_day: bool,
    history: str | None,
) -> dict[str, Any]:
    """Global attributes: what was attacked, how, with which bounds, from which files.

    Args:
        job: the open run (checkpoints, inputs, grid adapter).
        bounds: the bounds (:func:`climdl.sensitivity.bounds.describe`).
        pgd_steps: PGD ascent steps.
        random_draws: random corners per day.
        ig_steps: integrated-gradient quadrature points.
        seed: seed of the random draws.
        n_days: days analysed.
        wet_day: whether a target is pr (the wet-day threshold is recorded).
        history: the command line (None: the library call).

    Returns:
        The attributes.
    """
    members = job.emulators.describe()
    networks = ", ".join(sorted({e["network"] for e in members}))
    kind = job.source.kind or "unspecified"
    previous = job.ds.attrs.get("history")
    attrs: dict[str, Any] = {
        "Conventions": CF_CONVENTIONS,
        "title": "Sensitivity of climdl emulators to bounded perturbations of their predictors",
        "institution": "unspecified (set by the user)",
        "source": climdl_source(
            f"{networks} emulator attacked (FGSM, PGD, random corners, integrated gradients) on "
            f"{kind} large-scale predictors"
        ),
        "history": history_entry(
            history or "climdl.sensitivity.run_emulator_sensitivity()",
            str(previous) if previous else None,
        ),
        "climdl_sensitivity": "emulator",
        "climdl_sensitivity_version": np.int32(SCHEMA_VERSION),
        "climdl_version": __version__,
        "bounds": bounds,
        "pgd_steps": np.int32(pgd_steps),
        "random_draws": np.int32(random_draws),
        "ig_steps": np.int32(ig_steps),
        "seed": np.int64(seed),
        "days": np.int32(n_days),
        "checkpoints": "; ".join(f"{e['checkpoint']} sha256:{e['sha256']}" for e in members),
        "predictor_type": kind,
        "input_files": " ".join(str(p.resolve()) for p in job.source.files),
        "input_regridding": job.adapter.describe(),
        "objective": "fgsm, pgd: the domain mean of each target (both signs, the larger change "
        "kept); pgd_rms: the RMS change from the unperturbed prediction (started at a random "
        "corner); random: the mean over random corners of the bounds' box; random_max: the "
        "draw with the largest change",
    }
    if wet_day:
        attrs["wet_day_threshold"] = WET_DAY_THRESHOLD
    return attrs


def emulator_dataset(
    time: xr.DataArray,
    predictors: Sequence[str],
    predictor_bound: Sequence[str],
    grid: Grid,
    targets: Sequence[TargetMaps],
    attrs: Mapping[str, Any],
) -> xr.Dataset:
    """The run as a CF Dataset (schema: the module docstring).

    Args:
        time: the analysed days.
        predictors: the predictor names, in model order.
        predictor_bound: each predictor's bound as text (``"0.5 K"``, ``"0 (fixed)"``).
        grid: the models' coarse grid.
        targets: each target's results.
        attrs: the global attributes (:func:`emulator_attrs`).

    Returns:
        The dataset, ready for :func:`write_outputs`.
    """
    space = space_dims(grid)
    coords: dict[str, Any] = dict(grid_coords(grid))
    coords["time"] = xr.Variable(
        ("time",),
        time.values,
        {"standard_name": "time", "long_name": "time", "axis": "T", "bounds": "time_bnds"},
    )
    coords["time_bnds"] = xr.Variable(("time", "bnds"), time_bounds(time))
    coords["attack"] = xr.Variable(
        ("attack",),
        np.array(ATTACKS, dtype=object),
        {"long_name": "perturbation of the predictors"},
    )
    coords["predictor"] = xr.Variable(
        ("predictor",), np.array(list(predictors), dtype=object), {"long_name": "predictor"}
    )
    gm = grid.mapping
    map_attrs = {"grid_mapping": gm.name} if gm is not None else {}
    if gm is not None:
        coords[gm.name] = xr.Variable(
            (),
            np.int32(0),
            {"long_name": f"coordinate reference system ({gm.attrs.get('grid_mapping_name', '')})"}
            | dict(gm.attrs),
        )
    data: dict[str, xr.Variable] = {
        "predictor_bound": xr.Variable(
            ("predictor",),
            np.array(list(predictor_bound), dtype=object),
            {
                "long_name": "bound of each predictor's perturbation (in its own units, or % of "
                "its value)"
            },
        )
    }
    for tm in targets:
        t, units = tm.name, tm.units
        for k, measure in enumerate(MEASURES[: tm.measures.shape[2]]):
            data[f"{t}_{measure}"] = xr.Variable(
                ("time", "attack"),
                tm.measures[:, :, k].astype(np.float32),
                {
                    "long_name": _LONG_NAMES[measure].format(t=t),
                    "units": "1" if measure == "wet_fraction_change" else units,
                    "comment": _COMMENTS[measure],
                },
            )
        data[f"{t}_saliency"] = xr.Variable(
            ("predictor", *space),
            tm.saliency.astype(np.float32),
            {
                "long_name": f"integrated gradients of the domain-mean {t}, mean over days",
                "units": units,
                "comment": f"attribution of the domain mean relative to {tm.baseline}",
            }
            | map_attrs,
        )
        data[f"{t}_bound_sensitivity"] = xr.Variable(
            ("predictor", *space),
            tm.bound_sensitivity.astype(np.float32),
            {
                "long_name": f"first-order change of the domain-mean {t} when the predictor "
                "moves by its bound at the grid point, mean over days",
                "units": units,
                "comment": "|d mean / d predictor| x bound",
            }
            | map_attrs,
        )
    ds = xr.Dataset(data, coords=coords, attrs=dict(attrs))
    for v in ("lat", "lon"):
        if v in ds.coords:
            ds[v].attrs.setdefault("standard_name", "latitude" if v == "lat" else "longitude")
            ds[v].attrs.setdefault("units", "degrees_north" if v == "lat" else "degrees_east")
    return ds


def _encoding(ds: xr.Dataset, calendar: str) -> dict[str, dict[str, Any]]:
    enc: dict[str, dict[str, Any]] = {
        "time": {"units": TIME_UNITS, "calendar": calendar, "dtype": "float64", "_FillValue": None},
        "time_bnds": {"dtype": "float64", "_FillValue": None},
    }
    aux = [str(c) for c in ("lat", "lon") if c in ds.coords and c not in ds.dims]
    for name in ds.variables:
        name = str(name)
        if name in enc:
            continue
        e: dict[str, Any] = {"_FillValue": None}
        if ds[name].dtype == np.float32 and ds[name].ndim == 3:
            e |= {"zlib": True, "complevel": 1, "shuffle": True}
            if aux:
                e["coordinates"] = " ".join(aux)
        enc[name] = e
    return enc


def summary_rows(targets: Sequence[TargetMaps]) -> list[SummaryRow]:
    """One row per target and attack: median and maximum over days of each measure's size.

    Args:
        targets: each target's results.

    Returns:
        The rows, targets in order, attacks in :data:`ATTACKS` order.
    """
    rows = []
    for tm in targets:
        size = np.abs(tm.measures)  # [day, attack, measure]
        for a, attack in enumerate(ATTACKS):
            med = np.median(size[:, a], axis=0)
            top = size[:, a].max(axis=0)
            wet = size.shape[2] > 3
            rows.append(
                SummaryRow(
                    tm.name,
                    attack,
                    tm.units,
                    int(size.shape[0]),
                    float(med[0]),
                    float(top[0]),
                    float(med[1]),
                    float(top[1]),
                    float(med[2]),
                    float(top[2]),
                    float(med[3]) if wet else None,
                    float(top[3]) if wet else None,
                )
            )
    return rows


def write_outputs(
    ds: xr.Dataset,
    rows: Sequence[SummaryRow],
    out_dir: Path,
    calendar: str,
    *,
    overwrite: bool = False,
) -> tuple[Path, Path]:
    """Write ``sensitivity.nc`` and ``summary.csv`` in ``out_dir``, each atomically.

    The CSV is renamed into place only after the NetCDF is complete, and removed if it fails.

    Args:
        ds: the dataset (:func:`emulator_dataset`).
        rows: the summary (:func:`summary_rows`).
        out_dir: the output folder (created).
        calendar: the time axis's calendar.
        overwrite: replace earlier files.

    Returns:
        The paths of the NetCDF and of the CSV.
    """
    nc_path, csv_path = out_dir / OUTPUT_NAME, out_dir / SUMMARY_NAME
    names = [f.name for f in dataclasses.fields(SummaryRow)]
    with atomic_path(csv_path, overwrite=overwrite) as tmp:
        with tmp.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(names)
            for row in rows:
                values = [getattr(row, n) for n in names]
                writer.writerow(
                    [
                        "" if v is None else (f"{v:.6g}" if isinstance(v, float) else v)
                        for v in values
                    ]
                )
        write_netcdf(ds, nc_path, encoding=_encoding(ds, calendar), overwrite=overwrite)
    return nc_path, csv_path
