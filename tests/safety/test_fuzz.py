"""Fuzzing the reader and the CLI entry points with a seeded corpus of damaged NetCDF files.

Each case is a small real file (a crop of the embedded sample's target or predictors) damaged one
way: truncated, bit-flipped, a wrong dtype, a missing or nonsensical attribute, a missing
coordinate, NaN everywhere, times out of order... Every case must end in a result or in one
sentence with exit 2 (:class:`~climdl.errors.ClimdlError` from the library), never a traceback,
a crash or a hang (issue 13). The corpus is deterministic (seeded), so a failure reproduces.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from climdl.errors import ClimdlError
from tests.argv import downscale_argv
from tests.fuzzing import SEED, Case, byte_damage, run_cases

CROP = {"y": slice(56, 72), "x": slice(48, 64)}


def _encode_plain(ds: xr.Dataset) -> xr.Dataset:
    for v in ds.variables.values():
        v.encoding = {}
    return ds


def _structural(base: xr.Dataset, var: str) -> Iterator[tuple[str, xr.Dataset]]:
    """Well-formed NetCDF whose contents are wrong in one way each."""

    def edit(f: Callable[[xr.Dataset], xr.Dataset | None]) -> xr.Dataset:
        ds = base.copy(deep=True)
        out = f(ds)
        return ds if out is None else out

    yield "no-units", edit(lambda d: d[var].attrs.pop("units", None) and None)
    yield "unknown-units", edit(lambda d: d[var].attrs.update(units="furlongs fortnight-1"))
    yield "empty-units", edit(lambda d: d[var].attrs.update(units=""))
    yield "int-units", edit(lambda d: d[var].attrs.update(units=3))
    yield "all-nan", edit(lambda d: d[var].values.fill(np.nan))
    yield "all-inf", edit(lambda d: d[var].values.fill(np.inf))
    yield (
        "int16-packed",
        edit(lambda d: d[var].encoding.update(dtype="int16", scale_factor=0.01, add_offset=250.0)),
    )
    yield "as-strings", edit(lambda d: d.assign({var: d[var].astype(str)}))
    yield "as-int8", edit(lambda d: d.assign({var: d[var].fillna(0).astype("int8")}))
    yield "as-bool", edit(lambda d: d.assign({var: d[var] > d[var].mean()}))
    yield "no-time-coord", edit(lambda d: d.drop_vars("time"))
    yield "time-garbage-units", edit(lambda d: _raw_time(d, "days since banana", d.time.size))
    yield (
        "time-bad-calendar",
        edit(lambda d: _raw_time(d, "days since 1981-01-01", d.time.size, calendar="martian")),
    )
    yield "time-reversed", edit(lambda d: d.isel(time=slice(None, None, -1)))
    yield "time-duplicated", edit(lambda d: xr.concat([d, d], "time"))
    yield "one-step", edit(lambda d: d.isel(time=[0]))
    yield "zero-steps", edit(lambda d: d.isel(time=slice(0, 0)))
    yield "transposed", edit(lambda d: d.transpose(*reversed(d[var].dims), ...))
    yield "one-cell", edit(lambda d: d.isel({k: [0] for k in d[var].dims if k != "time"}))
    yield (
        "no-spatial-coords",
        edit(lambda d: d.drop_vars([c for c in d.coords if c not in ("time",)])),
    )
    yield (
        "renamed-dims",
        edit(lambda d: d.rename_dims({k: f"{k}_dim" for k in d[var].dims if k != "time"})),
    )
    yield "1-d", edit(lambda d: d.isel({k: 0 for k in d[var].dims if k != "time"}))
    yield "huge-values", edit(lambda d: d[var].values.fill(1e30))
    yield (
        "fill-everywhere",
        edit(lambda d: d[var].encoding.update(_FillValue=float(d[var][0, 0, 0]))),
    )
    yield "bad-standard-name", edit(lambda d: d[var].attrs.update(standard_name="../../etc"))
    yield "no-variables", edit(lambda d: d.drop_vars(list(d.data_vars)))


def _raw_time(ds: xr.Dataset, units: str, n: int, calendar: str = "standard") -> xr.Dataset:
    ds = ds.assign_coords(time=("time", np.arange(n, dtype="f8")))
    ds["time"].attrs.update(units=units, calendar=calendar)
    return ds


def _corpus(src: Path, var: str, folder: Path, rng: np.random.Generator) -> list[Case]:
    folder.mkdir(parents=True, exist_ok=True)
    with xr.open_dataset(src) as ds:
        dims = {k: v for k, v in CROP.items() if k in ds.dims}
        if not dims:  # the predictors' coarse grid
            dims = {"lat": slice(0, 16), "lon": slice(0, 16)}
        base = _encode_plain(ds.isel(time=slice(0, 40), **dims).load())
    clean = folder / "clean.nc"
    base.to_netcdf(clean)
    cases = [Case("clean", clean)]
    for name, ds in _structural(base, var):
        path = folder / f"{name}.nc"
        try:
            ds.to_netcdf(path)
        except (ValueError, TypeError, OverflowError):  # xarray will not write it: not a case
            continue
        cases.append(Case(name, path))
    for name, data in byte_damage(clean.read_bytes(), rng):
        path = folder / f"{name}.nc"
        path.write_bytes(data)
        cases.append(Case(name, path))
    return cases


@pytest.fixture(scope="module")
def corpus(sample_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Case]]:
    rng = np.random.default_rng(SEED)
    root = tmp_path_factory.mktemp("fuzz")
    target = next((sample_root / "test" / "historical" / "target").glob("*CNRM-CM5*.nc"))
    predictors = next(
        (sample_root / "test" / "historical" / "predictors" / "imperfect").glob("*CNRM-CM5*.nc")
    )
    return {
        "target": _corpus(target, "tasmax", root / "target", rng),
        "predictors": _corpus(predictors, "t_850", root / "predictors", rng),
    }


def test_the_reader_gives_a_dataset_or_one_sentence(corpus: dict[str, list[Case]]) -> None:
    from climdl.data.reader import open_dataset

    bad, n = [], 0
    for kind, var in (("target", "tasmax"), ("predictors", "t_850")):
        for case in corpus[kind]:
            n += 1
            try:
                open_dataset(case.path, [var]).load()
            except ClimdlError as exc:
                if len(str(exc).splitlines()) != 1:
                    bad.append(f"{kind}/{case.name}: several lines: {exc}")
            except BaseException as exc:
                bad.append(f"{kind}/{case.name}: {type(exc).__name__}: {exc}"[:300])
    print(f"reader: {n} damaged files")
    assert n > 60
    assert not bad, "\n".join(bad)


def test_plot_and_evaluate_never_show_a_traceback(
    corpus: dict[str, list[Case]], tmp_path: Path
) -> None:
    clean = corpus["target"][0].path
    n1, bad1 = run_cases(
        corpus["target"],
        lambda c: [
            "plot",
            str(c.path),
            "-v",
            "tasmax",
            "-t",
            "0",
            "-o",
            str(tmp_path / "f.png"),
            "--overwrite",
            "-q",
        ],
    )
    n2, bad2 = run_cases(
        corpus["target"],
        lambda c: [
            "evaluate",
            "--truth",
            str(clean),
            "--pred",
            str(c.path),
            "--variables",
            "tasmax",
            "--no-report",
            "--out",
            str(tmp_path / "ev"),
            "--overwrite",
            "-q",
        ],
    )
    print(f"plot: {n1} damaged files, evaluate: {n2}")
    assert not bad1 + bad2, "\n".join(bad1 + bad2)


def test_prepare_never_shows_a_traceback(corpus: dict[str, list[Case]], tmp_path: Path) -> None:
    n, bad = run_cases(
        corpus["target"],
        lambda c: [
            "prepare",
            str(c.path),
            "--out",
            str(tmp_path / "coarse.nc"),
            "--coarse-grid",
            "covered:4",
            "--variables",
            "tasmax",
            "--overwrite",
            "-q",
        ],
    )
    print(f"prepare: {n} damaged files")
    assert not bad, "\n".join(bad)


def test_downscale_never_shows_a_traceback(
    corpus: dict[str, list[Case]], tasmax_ckpt: Path, tmp_path: Path
) -> None:
    n, bad = run_cases(
        corpus["predictors"],
        lambda c: downscale_argv(tasmax_ckpt, c.path, tmp_path / "out.nc", "--overwrite", "-q"),
    )
    print(f"downscale: {n} damaged files")
    assert not bad, "\n".join(bad)
