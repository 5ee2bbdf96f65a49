"""``climdl plot`` picks the step the user named and dates its title; ``climdl evaluate`` takes
``--seasons none`` and non-daily series; folders given as files are named as folders (issue 13)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

from climdl.cli import main
from climdl.data.grids import target_grid

CROP = {"y": slice(40, 56), "x": slice(40, 56)}  # 16 x 16 points of the ALPS grid: fast


def _grid() -> xr.Dataset:
    return target_grid("ALPS").isel(CROP)


def _series(
    path: Path,
    offsets: np.ndarray,
    units: str,
    calendar: str = "standard",
    *,
    scalar_time: bool = False,
) -> Path:
    """tasmax whose value at step i is 280 + i K, at ``offsets`` in ``units`` (CF time)."""
    n = len(offsets)
    ds = _grid()
    values = 280.0 + np.arange(n, dtype="f4")[:, None, None] + np.zeros((n, 16, 16), "f4")
    ds["tasmax"] = (
        ("time", "y", "x"),
        values,
        {"units": "K", "standard_name": "air_temperature", "grid_mapping": "Lambert_Conformal"},
    )
    ds = ds.assign_coords(
        time=("time", np.asarray(offsets, float), {"units": units, "calendar": calendar})
    )
    if scalar_time:
        ds = ds.isel(time=0)  # one step saved without its dimension: time is a scalar coordinate
    ds.to_netcdf(path)
    return path


def _maps(fig: Any) -> list[Any]:
    return [ax for ax in fig.axes if hasattr(ax, "projection")]


def _drawn(fig: Any) -> tuple[str, float]:
    """Title and the (uniform) value of the one map of a figure."""
    (ax,) = _maps(fig)
    mesh = next(c for c in ax.collections if c.get_gid() == "field")
    return ax.get_title(), float(np.nanmean(mesh.get_array()))


def _plot(path: Path, out: Path, *extra: str) -> int:
    return main(["plot", str(path), "--var", "tasmax", "--out", str(out), "-q", *extra])


# ----------------------------------------------------------------------------- plot --time
@pytest.mark.parametrize(
    ("offsets", "units", "calendar", "date", "title", "index"),
    [
        # daily at 12:00 (the RCM convention): the old nearest-step rule drew 1981-07-14
        (np.arange(10) + 0.5, "days since 1981-07-10", "standard", "1981-07-15", "1981-07-15", 5),
        (np.arange(10) + 0.0, "days since 1981-07-10", "standard", "1981-07-15", "1981-07-15", 5),
        (np.arange(40) + 0.5, "days since 2001-02-01", "360_day", "2001-02-30", "2001-02-30", 29),
        (np.arange(40) + 0.5, "days since 2001-02-15", "noleap", "2001-03-01", "2001-03-01", 14),
        # monthly means stamped mid-month: the step of that month, not a tie with June
        (np.arange(12) * 30 + 15.0, "days since 2001-01-01", "360_day", "2001-07-01", "07-16", 6),
        # the first and last month, more than a day from their mid-month stamps
        (np.arange(12) * 30 + 15.0, "days since 2001-01-01", "360_day", "2001-01-01", "01-16", 0),
        (np.arange(12) * 30 + 15.0, "days since 2001-01-01", "360_day", "2001-12-30", "12-16", 11),
    ],
    ids=[
        "daily-12h",
        "daily-00h",
        "360_day-12h",
        "noleap-12h",
        "monthly-360_day",
        "first-month",
        "last-month",
    ],
)
def test_plot_time_date_draws_the_step_of_that_day(
    tmp_path: Path,
    figures: list[Any],
    offsets: np.ndarray,
    units: str,
    calendar: str,
    date: str,
    title: str,
    index: int,
) -> None:
    path = _series(tmp_path / "f.nc", offsets, units, calendar)
    assert _plot(path, tmp_path / "f.png", "--time", date) == 0
    heading, value = _drawn(figures[-1])
    assert heading.endswith(title), heading
    assert value == pytest.approx(280.0 + index)


def test_plot_time_sub_daily_needs_a_time_of_day(
    tmp_path: Path, figures: list[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    path = _series(tmp_path / "f6h.nc", np.arange(20) * 0.25, "days since 1981-07-14")
    assert _plot(path, tmp_path / "f.png", "--time", "1981-07-15") == 2
    err = capsys.readouterr().err
    assert err.startswith("climdl: error:") and err.count("\n") == 1, err
    assert "4 time steps on 1981-07-15" in err and "time of day" in err and "18:00" in err
    assert _plot(path, tmp_path / "f.png", "--time", "1981-07-15 18:00") == 0
    heading, value = _drawn(figures[-1])
    assert heading.endswith("1981-07-15 18:00")
    assert value == pytest.approx(280.0 + 7)


def test_plot_time_with_time_of_day_takes_the_nearest_step(
    tmp_path: Path, figures: list[Any]
) -> None:
    path = _series(tmp_path / "f.nc", np.arange(10) + 0.5, "days since 1981-07-10")
    assert _plot(path, tmp_path / "f.png", "--time", "1981-07-15T11:00") == 0
    assert _drawn(figures[-1]) == ("tasmax, 1981-07-15", pytest.approx(285.0))


def test_plot_time_date_missing_from_a_daily_series_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    offsets = np.r_[np.arange(5), np.arange(6, 10)] + 0.5  # 1981-07-15 left out
    path = _series(tmp_path / "gap.nc", offsets, "days since 1981-07-10")
    assert _plot(path, tmp_path / "f.png", "--time", "1981-07-15") == 2
    err = capsys.readouterr().err
    assert "no time step on 1981-07-15" in err and "1981-07-14 and 1981-07-16" in err, err


# ----------------------------------------------------------------------------- plot title
def test_plot_without_time_dates_a_scalar_time_step(tmp_path: Path, figures: list[Any]) -> None:
    path = _series(tmp_path / "one.nc", np.array([5.5]), "days since 1981-07-10", scalar_time=True)
    with xr.open_dataset(path) as ds:
        assert "time" not in ds["tasmax"].dims and ds["time"].ndim == 0
    assert _plot(path, tmp_path / "one.png") == 0
    assert _drawn(figures[-1])[0] == "tasmax, 1981-07-15"
    # the same with --vs: both panels carry the date
    assert _plot(path, tmp_path / "vs.png", "--vs", str(path)) == 0
    titles = [ax.get_title() for ax in _maps(figures[-1])]
    assert sum("1981-07-15" in t for t in titles) == 2, titles


def test_plot_without_time_dates_a_single_step(tmp_path: Path, figures: list[Any]) -> None:
    path = _series(tmp_path / "one.nc", np.array([5.5]), "days since 1981-07-10")
    assert _plot(path, tmp_path / "one.png") == 0
    assert _drawn(figures[-1])[0] == "tasmax, 1981-07-15"


# ----------------------------------------------------------------------------- folders
def test_a_folder_given_as_a_file_is_named_a_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "outputs"
    folder.mkdir()
    path = _series(tmp_path / "f.nc", np.arange(3) + 0.5, "days since 1981-07-10")
    runs = [
        ["plot", str(folder), "--var", "tasmax", "-o", str(tmp_path / "a.png")],
        ["plot", str(path), "--var", "tasmax", "-t", "0", "--vs", str(folder)],
        ["evaluate", "--truth", str(folder), "--pred", str(path)],
        ["evaluate", "--truth", str(path), "--pred", str(path), "--baseline", f"b={folder}"],
    ]
    for argv in runs:
        if argv[0] == "plot" and "-o" not in argv:
            argv += ["-o", str(tmp_path / "b.png")]
        if argv[0] == "evaluate":
            argv += ["--out", str(tmp_path / "ev"), "--no-report", "-q"]
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("climdl: error:") and err.count("\n") == 1, err
        assert f"{folder} is a folder" in err and "does not exist" not in err, err


# ----------------------------------------------------------------------------- evaluate
def _climate(path: Path, freq: str, n: int, seed: int) -> Path:
    """tasmax and pr on 16 x 16 points at time step ``freq`` (noleap calendar)."""
    rng = np.random.default_rng(seed)
    ds = _grid()
    time = xr.date_range("1981-01-01", periods=n, freq=freq, use_cftime=True, calendar="noleap")
    cycle = 10.0 * np.sin(2 * np.pi * np.arange(n) / max(n / 3, 1))[:, None, None]
    ds["tasmax"] = (
        ("time", "y", "x"),
        (285.0 + cycle + rng.normal(0, 1, (n, 16, 16))).astype("f4"),
        {"units": "K", "grid_mapping": "Lambert_Conformal"},
    )
    ds["pr"] = (
        ("time", "y", "x"),
        rng.gamma(0.5, 6, (n, 16, 16)).astype("f4"),
        {"units": "mm day-1", "grid_mapping": "Lambert_Conformal"},
    )
    ds.assign_coords(time=time).to_netcdf(path)
    return path


def _evaluate(truth: Path, pred: Path, out: Path, *extra: str) -> int:
    argv = ["evaluate", "--truth", str(truth), "--pred", str(pred), "--out", str(out)]
    return main([*argv, "--no-report", "-q", *extra])


def test_evaluate_seasons_none_gives_annual_numbers_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    truth = _climate(tmp_path / "t.nc", "D", 3 * 365, 0)
    pred = _climate(tmp_path / "p.nc", "D", 3 * 365, 1)
    out = tmp_path / "o"
    assert _evaluate(truth, pred, out, "--seasons", "none") == 0, capsys.readouterr().err
    doc = json.loads((out / "summary.json").read_text())
    assert doc["meta"]["seasons"] == []
    keys = [k for v in doc["summary"].values() for k in v]
    assert "rmse" in keys and not any(s in k for k in keys for s in ("DJF", "MAM", "JJA", "SON"))
    assert "bias_txx" in keys and "bias_cdd" in keys  # daily data: every index
    # none mixed with seasons is one clear sentence
    assert _evaluate(truth, pred, tmp_path / "o2", "--seasons", "none", "DJF") == 2
    err = capsys.readouterr().err
    assert err.startswith("climdl: error:") and "none" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("freq", "n", "label"), [("MS", 48, "monthly"), ("6h", 4 * 730, "6-hourly")]
)
def test_evaluate_non_daily_data_skips_daily_indices_with_one_warning(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    freq: str,
    n: int,
    label: str,
) -> None:
    truth = _climate(tmp_path / "t.nc", freq, n, 0)
    pred = _climate(tmp_path / "p.nc", freq, n, 1)
    out = tmp_path / "o"
    with caplog.at_level(logging.WARNING, logger="climdl"):
        rc = _evaluate(truth, pred, out)
    assert rc == 0, capsys.readouterr().err
    warned = [r.getMessage() for r in caplog.records if "not daily" in r.getMessage()]
    assert len(warned) == 1, warned
    assert f"the data are {label}, not daily" in warned[0]
    for name in ("TXx", "TXn", "summer days", "Rx1day", "SDII", "CDD", "CWD", "lag-1"):
        assert name in warned[0]
    doc = json.loads((out / "summary.json").read_text())
    assert doc["meta"]["time_step"] == label
    assert doc["meta"]["n_days"] == n  # every step matched
    assert "TXx" in doc["meta"]["skipped_indices"]["tasmax"]
    tas, pr = doc["summary"]["tasmax"], doc["summary"]["pr"]
    for key in ("rmse", "rmse_JJA", "bias", "ralsd", "bias_mean", "bias_p99", "bias_iav"):
        assert np.isfinite(tas[key]["values"]["emulator"]), key
    assert np.isfinite(pr["bias_mean"]["values"]["emulator"])
    for key in ("bias_txx", "bias_txn", "bias_su", "bias_lag1"):
        assert key not in tas
    for key in ("bias_rx1day", "bias_sdii", "bias_cdd", "bias_cwd", "bias_lag1"):
        assert key not in pr


def test_evaluate_refuses_series_of_different_time_steps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    truth = _climate(tmp_path / "t.nc", "D", 365, 0)
    pred = _climate(tmp_path / "p.nc", "MS", 12, 1)
    assert _evaluate(truth, pred, tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert err.startswith("climdl: error:") and err.count("\n") == 1, err
    assert "different time steps" in err and "daily" in err and "monthly" in err, err


def test_names_with_rich_markup_are_printed_as_text(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """A model name (or a file's variable label) like ``a[/]`` is text: rich used to raise a
    MarkupError in its progress thread and the summary table."""
    truth = _climate(tmp_path / "t.nc", "D", 365, 0)
    pred = _climate(tmp_path / "p.nc", "D", 365, 1)
    argv = ["evaluate", "--truth", str(truth), "--pred", str(pred), "--name", "a[/]"]
    assert main([*argv, "--no-report", "--out", str(tmp_path / "o")]) == 0
    err = capfd.readouterr().err
    assert "Traceback" not in err and "MarkupError" not in err
    assert "a[/]" in err  # the table's column header, as given
