"""``climdl sample``: the embedded default dataset in the CORDEX ML-Bench layout.

Writes, deterministically, a small dataset whose directory tree, file names, variables,
dimensions and attributes follow the benchmark (see ``data_catalog/cordex-ml-bench.yaml``)::

    <out>/<DOMAIN>/<DOMAIN>_domain/
      train/ESD_pseudo_reality/predictors/<GCM>_1961-1980.nc, Static_fields.nc
      train/ESD_pseudo_reality/target/pr_tasmax_<GCM>_1961-1980.nc
      train/Emulator_hist_future/predictors/<GCM>_1961-1980_2080-2099.nc, Static_fields.nc
      train/Emulator_hist_future/target/pr_tasmax_<GCM>_1961-1980_2080-2099.nc
      test/<historical|mid_century|end_century>/predictors/<perfect|imperfect>/<GCM>_<period>.nc
      test/<period>/target/pr_tasmax_<GCM>_<period>.nc      <- sample only: withheld by the benchmark

File names carry the benchmark's period labels; each file holds the first ``years`` years of
its period (``--years``). The test periods exist for the training GCM and the transfer GCM,
whose RCM run uses another calendar. Values come from :mod:`climdl.data.synthetic`: plausible
physics, not real data, and no claim about skill on real data can rest on them.

``EUR12-ROT`` writes the same layout on a 128 x 128 window of the EURO-CORDEX EUR-11 rotated-pole
grid around the Alps (``rlat``/``rlon`` axes, 2-D ``lat``/``lon`` and a ``crs`` grid mapping, as
CORDEX files hold them), with ALPS's climate and predictor grid.

``size`` (``--size``) 256 or 512 writes the widened ALPS domain of that many 12.5 km cells a
side (for domain parallelism) under its own folder name, ``ALPS256`` or ``ALPS512``, so it
never mixes with the benchmark-sized sample; the default (128) writes the benchmark's grid.
A 512 x 512 year of one variable is ~380 MB as float32, so the widened domains hold only what
domain-parallel training, its test and downscaling need (``train/ESD_pseudo_reality`` and
``test/historical`` of the training GCM; one year at 512: ~100 CPU seconds, 360 MB), are
generated in blocks of days and keep in memory only the years that later files still need.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from climdl import __version__
from climdl.data.grids import grid_mapping_name
from climdl.data.sample_grids import BENCHMARK_SIZE
from climdl.data.synthetic import Run, SyntheticClimate
from climdl.data.variables import ML_BENCH_PREDICTORS, canonical_attrs
from climdl.errors import ConfigError
from climdl.io.netcdf import write_netcdf
from climdl.io.provenance import CF_CONVENTIONS, climdl_source, stamped

__all__ = ["SampleResult", "write_sample"]

log = logging.getLogger(__name__)

TRAIN_EXPERIMENTS = {
    "ESD_pseudo_reality": [(1961, 1980)],
    "Emulator_hist_future": [(1961, 1980), (2080, 2099)],
}
TEST_PERIODS = {
    "historical": (1981, 2000),
    "mid_century": (2041, 2060),
    "end_century": (2080, 2099),
}
#: what the widened domains (``size`` 256, 512) hold: a 512 x 512 year is ~0.8 GB of fields to
#: compute and compress, so they keep what domain-parallel training, its test and downscaling
#: need (the training GCM's ESD experiment and historical test period; no transfer GCM)
WIDE_TRAIN_EXPERIMENTS = {"ESD_pseudo_reality": [(1961, 1980)]}
WIDE_TEST_PERIODS = {"historical": (1981, 2000)}
PREDICTOR_TIME_UNITS = "days since 1950-01-01"
# Decimal digits kept by lossless-after-quantisation compression (netCDF least_significant_digit):
# far below the weather noise, and 3-4x smaller files. Targets keep 0.1 K and 0.1 mm/day.
PREDICTOR_DIGITS = {
    **{f"z_{lev}": 0 for lev in (500, 700, 850)},
    **{f"{v}_{lev}": 2 for v in "tuv" for lev in (500, 700, 850)},
    **{f"q_{lev}": 6 for lev in (500, 700, 850)},
}


@dataclass(frozen=True)
class SampleResult:
    """What ``write_sample`` produced.

    Attributes:
        root: the domain folder (``<out_dir>/<DOMAIN>/<DOMAIN>_domain``).
        files: the files written.
        seconds: wall time.
    """

    root: Path
    files: list[Path]
    seconds: float

    @property
    def nbytes(self) -> int:
        """Total size of the written files in bytes."""
        return sum(f.stat().st_size for f in self.files)


def period_label(blocks: list[tuple[int, int]]) -> str:
    """Benchmark file label of one or more (start, end) year blocks, e.g. ``1961-1980_2080-2099``."""
    return "_".join(f"{a}-{b}" for a, b in blocks)


def _years(blocks: list[tuple[int, int]], n: int) -> list[int]:
    return [y for a, b in blocks for y in range(a, min(b, a + n - 1) + 1)]


def _time_coord(
    dates: np.ndarray, units: str, calendar: str, bounds: bool
) -> dict[str, xr.DataArray]:
    attrs = {"standard_name": "time", "long_name": "time", "axis": "T"}
    if bounds:
        attrs["bounds"] = "time_bnds"
    out = {"time": xr.DataArray(dates, dims="time", attrs=attrs)}
    if bounds:
        import datetime

        lo = np.array([d - datetime.timedelta(hours=12) for d in dates], dtype=object)
        hi = np.array([d + datetime.timedelta(hours=12) for d in dates], dtype=object)
        out["time_bnds"] = xr.DataArray(np.stack([lo, hi], axis=1), dims=("time", "bnds"))
    return out


def _time_encoding(units: str, calendar: str) -> dict[str, dict[str, object]]:
    enc: dict[str, object] = {
        "units": units,
        "calendar": calendar,
        "dtype": "f8",
        "_FillValue": None,
    }
    return {"time": enc, "time_bnds": dict(enc)}


def _global_attrs(climate: SyntheticClimate, run: Run, title: str, **extra: str) -> dict[str, str]:
    spec = climate.spec
    return {
        "Conventions": CF_CONVENTIONS,
        "title": title,
        "institution": "climdl",
        "source": climdl_source("synthetic climate (plausible physics, not real data)"),
        "domain": climate.name,
        "rcm_model_id": spec.rcm,
        "driving_model_id": run.gcm,
        "experiment_id": f"historical+{spec.scenario}",
        "synthetic_seed": str(climate.seed),
        "history": stamped("climdl sample"),
        "comment": "Embedded sample in the CORDEX ML-Bench layout for tests, demos and benchmarks.",
        **extra,
    }


#: a file to write: its path, what makes its dataset, its digits, the (gcm, year) it reads
_Job = tuple[Path, Callable[[], xr.Dataset], dict[str, int], set[tuple[str, int]]]


def _grid_text(climate: SyntheticClimate) -> str:
    """README lines on a rotated or widened domain's grids (nothing for the benchmark grids)."""
    window = climate.spec.rotated
    if window is not None:
        return (
            f"\n{climate.name}: {window.size} x {window.size} target cells of {window.step:g} "
            f"degrees on a rotated pole\n(grid_north_pole_latitude {window.pole_lat:g}, "
            f"grid_north_pole_longitude {window.pole_lon:g}), a window of the {window.parent}.\n"
            "Its climate and predictor grid are ALPS's.\n"
        )
    if climate.size == BENCHMARK_SIZE:
        return ""
    ny, nx = climate.target.lat.shape
    cy, cx = climate.coarse.lat.size, climate.coarse.lon.size
    return (
        f"\nWidened {climate.spec.name} domain ({climate.name}): {ny} x {nx} target cells of the "
        f"benchmark's 12.5 km Lambert grid,\n{cy} x {cx} coarse 2-degree predictor cells "
        "covering it. It holds the training GCM's ESD_pseudo_reality experiment and\n"
        "historical test period only (no transfer GCM, no future test periods).\n"
    )


class SampleWriter:
    """Generates the files of one domain, caching fields of years shared between files."""

    def __init__(
        self,
        domain: str,
        out_dir: Path,
        years: int,
        seed: int,
        overwrite: bool,
        size: int | None = None,
    ) -> None:
        if years < 1:
            raise ConfigError("--years must be at least 1.")
        self.climate = SyntheticClimate(domain, seed, size)
        self.spec = self.climate.spec
        name = self.climate.name
        self.root = Path(out_dir) / name / f"{name}_domain"
        self.n_years = years
        self.overwrite = overwrite
        self.runs = {
            "train": Run(self.spec.gcm_train, "standard", stream=0, sensitivity=1.0),
            "transfer": Run(
                self.spec.gcm_transfer, self.spec.transfer_calendar, stream=1, sensitivity=1.25
            ),
        }
        self.grid = self.climate.target
        self.wide = self.climate.size != BENCHMARK_SIZE
        # zlib level 1 on the widened grids: a third faster than 4 for 5 % more bytes
        self.complevel = 1 if self.wide else 4
        self._surface: dict[tuple[str, int], tuple[np.ndarray, dict[str, np.ndarray]]] = {}
        self._coarse: dict[tuple[str, int], tuple[np.ndarray, dict[str, np.ndarray]]] = {}
        self.files: list[Path] = []

    # ------------------------------------------------------------- cached fields
    def _release(self, keep: set[tuple[str, int]]) -> None:
        """Drop cached years that no remaining file needs (a 512 x 512 year is ~0.8 GB)."""
        for cache in (self._surface, self._coarse):
            for key in [k for k in cache if k not in keep]:
                del cache[key]

    def _cached(
        self, cache: dict, fn: Callable, run: Run, years: list[int]
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        for y in years:
            if (run.gcm, y) not in cache:
                cache[(run.gcm, y)] = fn(run, [y])
        dates = np.concatenate([cache[(run.gcm, y)][0] for y in years])
        names = cache[(run.gcm, years[0])][1].keys()
        return dates, {n: np.concatenate([cache[(run.gcm, y)][1][n] for y in years]) for n in names}

    def surface(self, run: Run, years: list[int]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Dates and fine surface fields (pr, tasmax) of ``run`` over ``years``, cached per year."""
        return self._cached(self._surface, self.climate.surface, run, years)

    def predictors(self, run: Run, years: list[int]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Dates and coarse predictor fields of ``run`` over ``years``, cached per year."""
        return self._cached(self._coarse, self.climate.coarse_predictors, run, years)

    # ------------------------------------------------------------- datasets
    def predictor_dataset(self, run: Run, years: list[int], kind: str) -> xr.Dataset:
        """The predictors' dataset on the coarse grid, as the benchmark files hold it.

        Args:
            run: the GCM run (train or transfer).
            years: the years to cover.
            kind: ``perfect`` (upscaled RCM) or ``imperfect`` (with the GCM's bias).

        Returns:
            CF-encoded dataset of every predictor with lat/lon bounds.
        """
        dates, fields = self.predictors(run, years)
        if kind == "imperfect":
            fields = self.climate.gcm_bias(run, dates, fields)
        coarse = self.climate.coarse
        ds = xr.Dataset(
            coords={
                "lat": coarse.lat,
                "lon": coarse.lon,
                **_time_coord(dates, "", run.calendar, False),
            }
        )
        for name in ML_BENCH_PREDICTORS:
            ds[name] = xr.DataArray(
                fields[name], dims=("time", "lat", "lon"), attrs=canonical_attrs(name)
            )
        source = "upscaled RCM (perfect)" if kind == "perfect" else "driving GCM (imperfect)"
        ds.attrs = _global_attrs(
            self.climate, run, f"Large-scale predictors, {source}", predictor_type=kind
        )
        return ds

    def target_dataset(self, run: Run, years: list[int]) -> xr.Dataset:
        """The RCM's pr and tasmax of ``run`` over ``years`` on the target grid."""
        dates, fields = self.surface(run, years)
        ds = self._on_target_grid()
        ds = ds.assign_coords(_time_coord(dates, self.spec.time_units, run.calendar, True))
        gm = grid_mapping_name(self.grid)
        dims = ("time", *self.grid.lat.dims) if self.grid.lat.ndim == 2 else ("time", "lat", "lon")
        for name in ("pr", "tasmax"):
            attrs = canonical_attrs(name) | {"grid_mapping": gm, "coordinates": "lat lon"}
            ds[name] = xr.DataArray(fields[name], dims=dims, attrs=attrs)
        ds.attrs = _global_attrs(
            self.climate, run, "Regional climate model daily fields (predictands)", frequency="day"
        )
        return ds

    def static_dataset(self) -> xr.Dataset:
        """The static fields (orography) on the target grid."""
        ds = self._on_target_grid()
        dims = self.grid.lat.dims if self.grid.lat.ndim == 2 else ("lat", "lon")
        attrs = canonical_attrs("orog") | {
            "grid_mapping": grid_mapping_name(self.grid),
            "coordinates": "lat lon",
        }
        ds["orog"] = xr.DataArray(self.climate.orography, dims=dims, attrs=attrs)
        ds.attrs = _global_attrs(
            self.climate, self.runs["train"], "Static fields on the target grid"
        )
        return ds

    def _on_target_grid(self) -> xr.Dataset:
        gm = grid_mapping_name(self.grid)
        ds = xr.Dataset(coords=self.grid.coords)
        ds[gm] = self.grid[gm]
        return ds

    # ------------------------------------------------------------- writing
    def _write(self, ds: xr.Dataset, path: Path, digits: dict[str, int]) -> None:
        digits = {**PREDICTOR_DIGITS, **digits}
        enc: dict[str, dict[str, object]] = {}
        if "time" in ds.coords:
            units = self.spec.time_units if "time_bnds" in ds else PREDICTOR_TIME_UNITS
            enc.update(_time_encoding(units, ds.time.values[0].calendar))
            if "time_bnds" not in ds:
                enc.pop("time_bnds")
        for name, var in ds.data_vars.items():
            if var.ndim >= 2:
                e: dict[str, object] = {
                    "zlib": True,
                    "complevel": self.complevel,
                    "shuffle": True,
                    "dtype": "f4",
                    "_FillValue": np.float32(np.nan),
                }
                if "time" in var.dims:
                    e["chunksizes"] = (min(32, var.sizes["time"]), *var.shape[1:])
                if name in digits:
                    e["least_significant_digit"] = digits[name]
                enc[str(name)] = e
        for name in ds.coords:
            if name not in enc:
                enc[str(name)] = {"_FillValue": None}
        write_netcdf(ds, path, encoding=enc, overwrite=self.overwrite)
        self.files.append(path)

    def write_all(self, progress: Callable[[str], None] | None = None) -> list[Path]:
        """Write every file of the layout; ``progress`` is called with each file name."""
        gcm1 = self.runs["train"]
        target_digits = {"tasmax": 1, "pr": 1}
        jobs: list[_Job] = []
        experiments = WIDE_TRAIN_EXPERIMENTS if self.wide else TRAIN_EXPERIMENTS
        periods = WIDE_TEST_PERIODS if self.wide else TEST_PERIODS
        runs = [gcm1] if self.wide else list(self.runs.values())
        for exp, blocks in experiments.items():
            years = _years(blocks, self.n_years)
            label = period_label(blocks)
            base = self.root / "train" / exp
            uses = {(gcm1.gcm, y) for y in years}
            jobs += [
                (
                    base / "predictors" / f"{gcm1.gcm}_{label}.nc",
                    functools.partial(self.predictor_dataset, gcm1, years, "perfect"),
                    {},
                    uses,
                ),
                (base / "predictors" / "Static_fields.nc", self.static_dataset, {}, set()),
                (
                    base / "target" / f"pr_tasmax_{gcm1.gcm}_{label}.nc",
                    functools.partial(self.target_dataset, gcm1, years),
                    target_digits,
                    uses,
                ),
            ]
        for period, block in periods.items():
            years = _years([block], self.n_years)
            label = period_label([block])
            base = self.root / "test" / period
            for run in runs:
                uses = {(run.gcm, y) for y in years}
                for kind in ("perfect", "imperfect"):
                    jobs.append(
                        (
                            base / "predictors" / kind / f"{run.gcm}_{label}.nc",
                            functools.partial(self.predictor_dataset, run, years, kind),
                            {},
                            uses,
                        )
                    )
                jobs.append(
                    (
                        base / "target" / f"pr_tasmax_{run.gcm}_{label}.nc",
                        functools.partial(self.target_dataset, run, years),
                        target_digits,
                        uses,
                    )
                )
        self._run_jobs(jobs, progress)
        (self.root / "README.txt").write_text(
            _README.format(
                version=__version__,
                years=self.n_years,
                seed=self.climate.seed,
                grid=_grid_text(self.climate),
            )
        )
        return self.files

    def _run_jobs(self, jobs: list[_Job], progress: Callable[[str], None] | None) -> None:
        for i, (path, make, digits, _) in enumerate(jobs):
            if progress:
                progress(str(path.relative_to(self.root)))
            ds = make()
            self._release(set().union(*(uses for *_, uses in jobs[i + 1 :])))
            self._write(ds, path, digits)


_README = """climdl embedded sample (climdl {version}), {years} year(s) per period, seed {seed}.

Layout and file format follow CORDEX ML-Bench. Each file holds the first {years} year(s) of the
period in its name. Unlike the benchmark, which withholds them, test/<period>/target/ holds the
test-period truth, so downscaled test periods can be evaluated.

Synthetic data with plausible physics (orography, lapse rate, seasonal cycle, warming trend,
orographic precipitation, day-to-day weather): not real data.
{grid}"""


def write_sample(
    out_dir: str | Path,
    domain: str = "ALPS",
    years: int = 1,
    seed: int = 0,
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
    size: int | None = None,
) -> SampleResult:
    """Write the embedded sample for ``domain`` under ``out_dir``; return the files written.

    Args:
        out_dir: the folder the benchmark tree is written under.
        domain: ``ALPS``, ``SA`` or ``EUR12-ROT`` (the EURO-CORDEX rotated-pole window around
            the Alps); a sized folder name such as ``ALPS512`` also works.
        years: years per period (at least 1).
        seed: the random seed (same seed, same files).
        overwrite: replace existing files.
        progress: called with each file's name as it is written.
        size: target cells per side: None or 128, the benchmark grid (folder ``<DOMAIN>``); 256
            or 512, the widened ALPS domain (folder ``ALPS256``/``ALPS512``).

    Returns:
        The domain folder, the files written and the time taken.

    Raises:
        ConfigError: ``years`` below 1, an unknown domain or an unsupported size.
        OutputError: a file exists (without ``overwrite``) or cannot be written.
    """
    start = time.perf_counter()
    writer = SampleWriter(domain, Path(out_dir), years, seed, overwrite, size)
    files = writer.write_all(progress)
    return SampleResult(writer.root, files, time.perf_counter() - start)
