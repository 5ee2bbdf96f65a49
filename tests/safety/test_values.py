"""Silently wrong values stop with one sentence: plausible ranges after unit conversion, all-NaN
fields (DESIGN section 5; issue 13, item 4). Through the real CLI where a user would meet them."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from climdl.cli import main
from climdl.data import prepare_dask
from climdl.data._prepare_io import coarse_from_dataset
from climdl.data.prepare import prepare
from climdl.data.prepare_dask import BlockSource
from climdl.data.prepare_grids import covered_coarse_grid
from climdl.data.reader import open_dataset
from climdl.data.units import check_plausible, value_range
from climdl.data.variables import G0, ML_BENCH_PREDICTORS, geopotential_range, plausible_range
from climdl.errors import DataError
from climdl.inference.job import JobConfig
from climdl.inference.parts import parts_dir
from tests.argv import downscale_argv

FINE = "train/ESD_pseudo_reality/target/pr_tasmax_CNRM-CM5_1961-1980.nc"
PERFECT = "test/historical/predictors/perfect/CNRM-CM5_1981-2000.nc"


def _edit(
    src: Path, out: Path, days: int, change: Callable[[xr.Dataset], None] | None = None
) -> Path:
    """The first ``days`` of ``src`` written to ``out`` after ``change`` (in place)."""
    with xr.open_dataset(src) as ds:
        part = ds.isel(time=slice(0, days)).load()
    if change is not None:
        change(part)
    part.to_netcdf(out)
    return out


def _relabel(var: str, units: str) -> Callable[[xr.Dataset], None]:
    def change(ds: xr.Dataset) -> None:
        ds[var].attrs["units"] = units

    return change


def _one_line(err: str) -> str:
    assert err.startswith("climdl: error: ") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    return err


# ----------------------------------------------------------------------------- the table
def test_ranges_hold_the_sample_and_exclude_unit_slips() -> None:
    for name in (*ML_BENCH_PREDICTORS, "tasmax", "tasmin", "tas", "pr", "orog", "sftlf"):
        assert plausible_range(name) is not None, name
    assert plausible_range("nonsense") is None
    # observed geopotential heights (m) at 500/700/850 hPa lie inside; height read as
    # geopotential (9.8x too low) and geopotential read as height (9.8x too high) do not
    for level, (h_lo, h_hi) in {500: (4600, 6000), 700: (2500, 3300), 850: (900, 1700)}.items():
        lo, hi = geopotential_range(level)
        assert lo <= G0 * h_lo and G0 * h_hi <= hi
        assert h_hi < lo and G0 * G0 * h_lo > hi


@pytest.mark.parametrize(
    ("name", "low", "high", "declared", "cause"),
    [
        ("tasmax", 527.0, 600.0, "degC", "the units say 'degC' but the values look like K?"),
        ("t_850", -40.0, 35.0, "K", "the units say 'K' but the values look like degC?"),
        ("z_500", 4900.0, 5900.0, "m2 s-2", "the units say 'm2 s-2' but the values look like m?"),
        ("q_850", 0.0, 20.0, "kg kg-1", "the values look like g kg-1?"),
        ("pr", 0.0, 4.0e6, "kg m-2 s-1", "the values look like mm day-1?"),
        ("pr", -30.0, 0.0, "mm day-1", "sign-reversed"),
        ("sftlf", 0.0, 100.0, "1", "the values look like %?"),
        ("t_850", -9999.0, 300.0, "K", "a fill value not declared as _FillValue?"),
    ],
)
def test_message_names_range_found_plausible_range_cause_and_flag(
    name: str, low: float, high: float, declared: str, cause: str
) -> None:
    with pytest.raises(DataError) as info:
        check_plausible(
            [name], [low], [high], attrs={name: {"climdl_source_units": declared}}, where="f.nc"
        )
    text = str(info.value)
    bounds = plausible_range(name)
    assert bounds is not None
    lo, hi = bounds
    assert text.startswith(f"{name} in f.nc has values from {low:.6g} to {high:.6g}")
    assert f"plausible range {lo:.6g} to {hi:.6g}" in text
    assert cause in text and "--no-range-check" in text and text.count(". ") == 0


def test_plausible_and_missing_values_pass() -> None:
    check_plausible(["tasmax", "pr"], [250.0, -0.05], [320.0, 800.0])  # noise below 0 is fine
    check_plausible(["tasmax", "unknown"], [np.nan, -1e9], [np.nan, 1e9])  # all NaN, no table
    x = np.full((2, 2, 3, 3), np.nan, np.float32)
    x[:, 0] = 280.0
    x[0, 0, 0, 0] = np.inf
    lo, hi = value_range(x, axis=(0, 2, 3))
    assert lo[0] == 280.0 and hi[0] == np.inf and np.isnan(lo[1]) and np.isnan(hi[1])


def test_job_config_carries_the_switch() -> None:
    off = JobConfig(checkpoints=("a.ckpt",), range_check=False)
    assert JobConfig.from_json(off.to_json()).range_check is False
    old = '{"checkpoints": ["a.ckpt"]}'  # a config written before the switch existed
    assert JobConfig.from_json(old).range_check is True


def test_embedded_sample_is_plausible(sample_root: Path) -> None:
    """No false alarm on any file of the ALPS sample (targets, predictors, static fields)."""
    files = sorted(sample_root.rglob("*.nc"))
    assert len(files) > 20
    for path in files:
        ds = open_dataset(path)
        names = [str(v) for v in ds.data_vars]
        lows = [float(ds[v].min()) for v in names]
        highs = [float(ds[v].max()) for v in names]
        check_plausible(names, lows, highs, where=str(path))


@pytest.mark.slow
def test_sa_sample_is_plausible(tmp_path: Path) -> None:
    from climdl.data.sample import write_sample

    root = write_sample(tmp_path, "SA", years=1, seed=0).root
    for path in sorted(root.rglob("*.nc")):
        ds = open_dataset(path)
        names = [str(v) for v in ds.data_vars]
        check_plausible(
            names, [float(ds[v].min()) for v in names], [float(ds[v].max()) for v in names]
        )


# ----------------------------------------------------------------------------- prepare
def test_prepare_refuses_kelvin_labelled_celsius(
    sample_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = _edit(sample_root / FINE, tmp_path / "tasmax_degC.nc", 40, _relabel("tasmax", "degC"))
    out, stats = tmp_path / "coarse.nc", tmp_path / "stats.json"
    argv = ["prepare", str(bad), "--out", str(out), "--variables", "tasmax", "--stats",
            str(stats), "--chunk-days", "20", "-q"]  # fmt: skip
    assert main(argv) == 2
    err = _one_line(capsys.readouterr().err)
    assert f"tasmax in {bad} has values from " in err
    found = re.search(r"values from ([0-9.]+) to ([0-9.]+) K", err)
    assert found is not None and 500 < float(found[1]) < float(found[2]) < 620
    assert "outside its plausible range 150 to 350 K" in err
    assert "the units say 'degC' but the values look like K?" in err
    assert "time steps 1961-01-01 to 1961-01-20" in err  # the first block: it stops early
    assert "--no-range-check" in err
    assert not out.exists() and not stats.exists() and not list(tmp_path.glob(".*.tmp"))
    assert main([*argv, "--no-range-check"]) == 0  # the user knows better: as told
    with xr.open_dataset(out) as ds:
        assert float(ds["tasmax"].min()) > 500.0
    assert stats.exists()


def test_prepare_refuses_rate_labelled_as_mass_flux(sample_root: Path, tmp_path: Path) -> None:
    bad = _edit(sample_root / FINE, tmp_path / "pr.nc", 10, _relabel("pr", "kg m-2 s-1"))
    with pytest.raises(DataError, match=r"pr in .* values look like mm day-1\?"):
        prepare(bad, tmp_path / "o.nc", coarse_grid="covered", variables=["pr"], device="cpu")
    assert not (tmp_path / "o.nc").exists()


def test_prepare_refuses_on_dask_workers_too(sample_root: Path, tmp_path: Path) -> None:
    """A Dask block checks like an in-process one (the switch travels in the BlockSource)."""
    bad = _edit(sample_root / FINE, tmp_path / "bad.nc", 5, _relabel("tasmax", "degC"))
    coarse = coarse_from_dataset(covered_coarse_grid(open_dataset(bad)), "covered")
    source = BlockSource(
        run="values-test", files=(str(bad),), names=("tasmax",), n_times=5, coarse=coarse,
        subcells=2, smoothing=0, device="cpu", chunk_days=5, torch_threads=1,
    )  # fmt: skip
    try:
        with pytest.raises(DataError, match="look like K"):
            prepare_dask.run_block(source, 0, 5, 0, 5)
        source = BlockSource(**{**source.__dict__, "run": "values-off", "range_check": False})
        assert prepare_dask.run_block(source, 0, 5, 0, 5).values.min() > 500.0
    finally:
        prepare_dask.release()


def test_prepare_refuses_an_all_nan_field(
    sample_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def blank(ds: xr.Dataset) -> None:
        ds["tasmax"][:] = np.nan

    bad = _edit(sample_root / FINE, tmp_path / "nan.nc", 20, blank)
    out, stats = tmp_path / "coarse.nc", tmp_path / "stats.json"
    argv = ["prepare", str(bad), "--out", str(out), "--stats", str(stats), "-q"]
    for extra in ([], ["--no-range-check"]):  # not a matter of ranges: always refused
        assert main([*argv, *extra]) == 2
        err = _one_line(capsys.readouterr().err)
        assert f"tasmax in {bad} has no valid value (all NaN or fill values)" in err
        assert "statistics of count 0" in err
        assert not out.exists() and not stats.exists() and not list(tmp_path.glob(".*.tmp"))


def test_prepare_refuses_a_training_period_without_data(sample_root: Path, tmp_path: Path) -> None:
    def blank_start(ds: xr.Dataset) -> None:
        ds["tasmax"][:10] = np.nan

    bad = _edit(sample_root / FINE, tmp_path / "gap.nc", 20, blank_start)
    with pytest.raises(DataError, match="no valid value in the training period 1961-01-01 to "):
        prepare(bad, tmp_path / "o.nc", coarse_grid="covered", variables=["tasmax"],
                train_period=("1961-01-01", "1961-01-10"), device="cpu")  # fmt: skip
    assert not (tmp_path / "o.nc").exists()


def test_prepare_keeps_partly_masked_fields(
    sample_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A sea mask (NaN over part of the domain, every day) is legitimate: no refusal."""

    def sea(ds: xr.Dataset) -> None:
        ds["tasmax"][:, :40, :] = np.nan

    src = _edit(sample_root / FINE, tmp_path / "sea.nc", 10, sea)
    out = tmp_path / "coarse.nc"
    assert main(["prepare", str(src), "--out", str(out), "--variables", "tasmax", "-q"]) == 0
    with xr.open_dataset(out) as ds:
        values = ds["tasmax"].values
        assert np.isfinite(values).any() and 200.0 < np.nanmin(values) < np.nanmax(values) < 340.0


# ----------------------------------------------------------------------------- downscale
def test_downscale_refuses_kelvin_labelled_celsius_before_any_output(
    tasmax_ckpt: Path, sample_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = _edit(sample_root / PERFECT, tmp_path / "t850_degC.nc", 30, _relabel("t_850", "degC"))
    out = tmp_path / "out.nc"
    argv = downscale_argv(tasmax_ckpt, bad, out, "-q")
    assert main(argv) == 2
    err = _one_line(capsys.readouterr().err)
    assert f"t_850 in {bad} has values from " in err
    assert "K (on 1981-01-01 12:00:00), outside its plausible range 150 to 350 K" in err
    assert "the units say 'degC' but the values look like K?" in err and "--no-range-check" in err
    assert not out.exists() and not parts_dir(out).exists()  # refused on the first day
    assert main([*argv, "--no-range-check"]) == 0
    with xr.open_dataset(out) as ds:
        assert ds.sizes["time"] == 30


def test_downscale_checks_every_chunk(
    tasmax_ckpt: Path, sample_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A fill value the file does not declare, on a later day, stops the run at its chunk."""

    def fill(ds: xr.Dataset) -> None:
        ds["t_850"][15, 3, 3] = -9999.0

    bad = _edit(sample_root / PERFECT, tmp_path / "fill.nc", 30, fill)
    out = tmp_path / "out.nc"
    argv = downscale_argv(tasmax_ckpt, bad, out, "-q", "--chunk-days", "10")
    assert main(argv) == 2
    err = _one_line(capsys.readouterr().err)
    assert f"t_850 in {bad} has values from -9999 to " in err
    assert (
        "(days 1981-01-11 12:00:00 to 1981-01-20 12:00:00)" in err
        and "fill value not declared as _FillValue" in err
    )
    assert not out.exists()
