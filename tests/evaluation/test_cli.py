"""``climdl evaluate`` end to end on the embedded sample, and its predictable errors."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from climdl.cli import main

CROP = {"y": slice(48, 80), "x": slice(40, 72)}  # 32 x 32 over the Alps: fast and not blank


def _truth(sample_root: Path, period: str) -> xr.Dataset:
    path = next((sample_root / "test" / period / "target").glob("*CNRM-CM5*.nc"))
    with xr.open_dataset(path) as ds:
        return ds.isel(CROP).load()


def _write(ds: xr.Dataset, path: Path) -> Path:
    ds.to_netcdf(path)
    return path


def _perturb(ds: xr.Dataset, seed: int, *, noise: float, smooth: int = 1) -> xr.Dataset:
    """A fake prediction: truth + warm bias + noise (tasmax), smoothed truth (pr)."""
    from scipy.ndimage import uniform_filter

    rng = np.random.default_rng(seed)
    out = ds.copy()
    tas = ds["tasmax"].values
    out["tasmax"] = ds["tasmax"].copy(
        data=(tas + 0.3 + rng.normal(0, noise, tas.shape)).astype("f4")
    )
    pr = uniform_filter(ds["pr"].values, size=(1, smooth, smooth), mode="nearest")
    out["pr"] = ds["pr"].copy(data=pr.astype("f4"))
    return out


@pytest.fixture(scope="module")
def files(sample_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("evalfiles")
    hist, fut = _truth(sample_root, "historical"), _truth(sample_root, "end_century")
    return {
        "truth": _write(fut, d / "truth_future.nc"),
        "pred": _write(_perturb(fut, 1, noise=0.5), d / "pred_future.nc"),
        "base": _write(_perturb(fut, 2, noise=1.5, smooth=5), d / "base_future.nc"),
        "hist_truth": _write(hist, d / "truth_hist.nc"),
        "hist_pred": _write(_perturb(hist, 3, noise=0.5), d / "pred_hist.nc"),
        "hist_base": _write(_perturb(hist, 4, noise=1.5, smooth=5), d / "base_hist.nc"),
        "dir": d,
    }


def _evaluate(files: dict[str, Path], out: Path, *extra: str) -> dict[str, object]:
    """Run ``climdl evaluate`` on the emulator and the baseline, both periods."""
    import contextlib

    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        rc = main(
            [
                "evaluate",
                "--truth",
                str(files["truth"]),
                "--pred",
                str(files["pred"]),
                "--baseline",
                f"interpolation={files['base']}",
                "--hist-truth",
                str(files["hist_truth"]),
                "--hist-pred",
                str(files["hist_pred"]),
                "--hist-baseline",
                f"interpolation={files['hist_base']}",
                "--out",
                str(out),
                "--quiet",
                *extra,
            ]
        )
    return {"rc": rc, "out": out, "stdout": stdout.getvalue()}


@pytest.fixture(scope="module")
def evaluated(
    files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, object]:
    """Every variable and diagnostic, numbers and fields (the report is tested separately)."""
    return _evaluate(files, tmp_path_factory.mktemp("evalout") / "numbers", "--no-report")


@pytest.fixture(scope="module")
def reported(files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The report of one variable (each figure costs about a second on a small machine)."""
    return _evaluate(
        files,
        tmp_path_factory.mktemp("evalout") / "report",
        "--variables",
        "pr",
        "--seasons",
        "DJF",
    )


def test_evaluate_writes_every_output(
    evaluated: dict[str, object], reported: dict[str, object]
) -> None:
    assert evaluated["rc"] == 0 and reported["rc"] == 0
    out, rep = evaluated["out"], reported["out"]
    assert isinstance(out, Path) and isinstance(rep, Path)
    assert str(evaluated["stdout"]).strip() == str(out / "summary.json")
    assert str(reported["stdout"]).strip() == str(rep / "report.html")  # the report's path
    for name in (
        "summary.json",
        "summary.csv",
        "summary.md",
        "fields_tasmax.nc",
        "fields_pr.nc",
        "fields_tasmax-pr.nc",
    ):
        assert (out / name).is_file(), name
    for name in ("report.html", "report.md", "fields_pr.nc"):
        assert (rep / name).is_file(), name
    assert not list(out.glob(".*.tmp")) and not list(rep.glob(".*.tmp"))


def test_summary_numbers(evaluated: dict[str, object]) -> None:
    out = evaluated["out"]
    assert isinstance(out, Path)
    doc = json.loads((out / "summary.json").read_text())
    assert doc["meta"]["models"] == ["emulator", "interpolation"]
    assert doc["meta"]["n_days"] in (365, 366)
    tas, pr = doc["summary"]["tasmax"], doc["summary"]["pr"]
    # the emulator (less noise) beats the baseline on tasmax RMSE; both biased by +0.3 K
    assert tas["rmse"]["best"] == ["emulator"]
    assert tas["bias"]["values"]["emulator"] == pytest.approx(0.3, abs=0.02)
    assert tas["rmse"]["values"]["emulator"] == pytest.approx(np.hypot(0.3, 0.5), abs=0.03)
    # the smoothed baseline loses small-scale precipitation power
    assert pr["ralsd"]["values"]["interpolation"] > pr["ralsd"]["values"]["emulator"]
    for key in (
        "rmse_DJF",
        "bias_abs_JJA",
        "corr_time",
        "corr_space",
        "std_ratio",
        "wasserstein",
        "wasserstein_map",
        "bias_txx",
        "bias_su",
        "bias_p01",
        "bias_lag1",
    ):
        assert key in tas, key
    for key in (
        "bias_cdd",
        "ratio_cwd",
        "ratio_sdii",
        "bias_rx1day",
        "ratio_p99",
        "signal_mean",
        "signal_rx1day",
    ):
        assert key in pr, key
    assert tas["signal_mean"]["reference"] > 0  # the sample warms
    assert doc["summary"]["tasmax-pr"]["corr_bias"]["best"]
    csv = (out / "summary.csv").read_text().splitlines()
    assert csv[0].startswith("variable,diagnostic,label,model,value")
    assert "**" in (out / "summary.md").read_text()


def test_fields_are_cf_netcdf(evaluated: dict[str, object]) -> None:
    out = evaluated["out"]
    assert isinstance(out, Path)
    with xr.open_dataset(out / "fields_tasmax.nc") as ds:
        assert ds.attrs["Conventions"] == "CF-1.10"
        assert ds["bias"].dims == ("model", "y", "x")
        assert ds["bias"].attrs["grid_mapping"] == "Lambert_Conformal"
        assert ds["index_txx"].sizes["source"] == 3
        assert list(ds["model"].values) == ["emulator", "interpolation"]
        assert ds["psd"].dims == ("source", "wavenumber")
        assert ds["signal_mean"].sizes["signal_source"] == 3
        assert np.isfinite(ds["wasserstein"].values).all()
        assert int(ds["histogram"].sum()) > 0


def _pngs(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', html)]


def _check_report(out: Path, min_images: int) -> None:
    import matplotlib.image

    html = (out / "report.html").read_text()
    assert "<table>" in html and 'class="best"' in html
    images = _pngs(html)
    assert len(images) >= min_images
    maps = sorted((out / "figures").glob("*_bias.png")) + sorted(
        (out / "figures").glob("*index_*.png")
    )
    assert maps
    for path in maps:
        rgb = matplotlib.image.imread(path)[..., :3]
        colours = np.unique(rgb.reshape(-1, 3).round(2), axis=0)
        assert len(colours) > 50, path.name  # a field was drawn, not an empty frame
    md = (out / "report.md").read_text()
    links = re.findall(r"\]\((figures/[^)]+)\)", md)
    assert len(links) == len(images)
    for link in links:
        assert (out / link).is_file()


def test_report_renders_with_maps_that_are_not_blank(reported: dict[str, object]) -> None:
    out = reported["out"]
    assert isinstance(out, Path)
    _check_report(out, min_images=6)  # bias, mean, Rx1day, signal, PSD, histogram
    assert (out / "figures" / "pr_signal_mean.png").is_file()


@pytest.mark.slow
def test_full_report(files: dict[str, Path], tmp_path: Path) -> None:
    res = _evaluate(files, tmp_path / "full")
    assert res["rc"] == 0
    out = res["out"]
    assert isinstance(out, Path)
    _check_report(out, min_images=13)
    assert (out / "figures" / "tasmax-pr_tasmax_pr_correlation.png").is_file()


def _run(args: list[str]) -> int:
    return main(["evaluate", *args, "--quiet"])


def test_refuses_to_overwrite_without_flag(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = [
        "--truth",
        str(files["truth"]),
        "--pred",
        str(files["pred"]),
        "--variables",
        "tasmax",
        "--seasons",
        "--no-report",
        "--out",
        str(tmp_path / "o"),
    ]
    assert _run(base) == 0
    assert _run(base) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert _run([*base, "--overwrite"]) == 0


def test_other_units_and_stamps_are_aligned(files: dict[str, Path], tmp_path: Path) -> None:
    with xr.open_dataset(files["truth"]) as ds:
        truth = ds.load()
    other = truth.isel(time=slice(5, None)).copy()  # 5 days fewer
    other["pr"] = (other["pr"] / 86400.0).assign_attrs(units="kg m-2 s-1")
    other["tasmax"] = (other["tasmax"] - 273.15).assign_attrs(units="degC")
    other["time"] = other["time"].dt.floor("D")  # stamped 00:00 instead of 12:00
    pred = _write(other, tmp_path / "pred_units.nc")
    out = tmp_path / "o"
    assert (
        _run(
            [
                "--truth",
                str(files["truth"]),
                "--pred",
                str(pred),
                "--seasons",
                "DJF",
                "--no-report",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    doc = json.loads((out / "summary.json").read_text())
    assert doc["meta"]["n_days"] == truth.sizes["time"] - 5
    assert doc["summary"]["tasmax"]["rmse"]["values"]["emulator"] < 1e-4
    assert doc["summary"]["pr"]["rmse"]["values"]["emulator"] < 1e-4


@pytest.mark.parametrize(
    "case",
    [
        "missing_file",
        "missing_variable",
        "grid",
        "no_common_days",
        "bad_baseline",
        "bad_season",
        "hist_alone",
        "threshold_units",
        "threshold_without_units",
        "bbox_outside",
        "bbox_malformed",
        "wet_threshold_negative",
        "wet_threshold_infinite",
        "prediction_all_nan",
        "prediction_degc_labelled_k",
        "truth_mm_per_s_labelled_mm_per_day",
    ],
)
def test_predictable_mistakes_exit_2(
    case: str, files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with xr.open_dataset(files["pred"]) as ds:
        pred = ds.load()
    truth, out = str(files["truth"]), str(tmp_path / "o")
    pred_path = str(files["pred"])
    extra: list[str] = []
    if case == "missing_file":
        pred_path = str(tmp_path / "nope.nc")
    elif case == "missing_variable":
        pred_path = str(_write(pred[["tasmax", "Lambert_Conformal"]], tmp_path / "p.nc"))
        extra = ["--variables", "tasmax", "pr"]
    elif case == "grid":
        pred_path = str(_write(pred.isel(x=slice(0, 30)), tmp_path / "p.nc"))
    elif case == "no_common_days":
        shifted = pred.copy()
        shifted["time"] = (
            pred["time"].values - np.timedelta64(800, "D")
            if np.issubdtype(pred["time"].dtype, np.datetime64)
            else xr.date_range("1900-01-01", periods=pred.sizes["time"], freq="D", use_cftime=True)
        )
        pred_path = str(_write(shifted, tmp_path / "p.nc"))
    elif case == "bad_baseline":
        extra = ["--baseline", "interpolation"]
    elif case == "bad_season":
        extra = ["--seasons", "monsoon"]
    elif case == "hist_alone":
        extra = ["--hist-truth", str(files["hist_truth"])]
    elif case == "threshold_units":
        extra = ["--wet-threshold", "25 degC"]
    elif case == "threshold_without_units":
        extra = ["--summer-threshold", "300"]  # the benchmark's bare default
    elif case == "bbox_outside":
        extra = ["--bbox", "100", "110", "-10", "0"]  # the crop lies over the Alps
    elif case == "bbox_malformed":
        extra = ["--bbox", "5", "10", "48", "44"]  # latitudes swapped
    elif case == "wet_threshold_negative":
        extra = ["--wet-threshold", "-1 mm/day"]
    elif case == "wet_threshold_infinite":
        extra = ["--wet-threshold", "1e999 mm/day"]
    elif case == "prediction_all_nan":
        pred_path = str(_write(pred.assign(tasmax=pred["tasmax"] * np.nan), tmp_path / "p.nc"))
    elif case == "prediction_degc_labelled_k":
        degc = (pred["tasmax"] - 273.15).assign_attrs(units="K")
        pred_path = str(_write(pred.assign(tasmax=degc), tmp_path / "p.nc"))
    elif case == "truth_mm_per_s_labelled_mm_per_day":
        with xr.open_dataset(files["truth"]) as ds:
            t = ds.load()
        t["pr"] = (t["pr"] * 86400.0).assign_attrs(units="mm day-1")  # kg m-2 s-1 * 86400 twice
        truth = str(_write(t, tmp_path / "t.nc"))
    rc = _run(["--truth", truth, "--pred", pred_path, "--out", out, "--no-report", *extra])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("climdl: error:") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert not Path(out).exists()  # nothing written
    expected = {
        "wet_threshold_negative": "'-1 mm/day' is negative",
        "wet_threshold_infinite": "is not a finite number",
        "prediction_all_nan": f"tasmax in {pred_path} (the prediction 'emulator') has no valid",
        "prediction_degc_labelled_k": "outside its plausible range 150 to 350 K",
        "truth_mm_per_s_labelled_mm_per_day": f"pr in {truth} (the truth) has values from",
    }
    assert expected.get(case, "") in err, err


def test_no_range_check_scores_implausible_values(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--no-range-check lets values outside the plausible range through (they are scored)."""
    with xr.open_dataset(files["pred"]) as ds:
        pred = ds[["tasmax"]].load()
    pred["tasmax"] = (pred["tasmax"] - 273.15).assign_attrs(units="K")
    args = ["--truth", str(files["truth"]), "--pred", str(_write(pred, tmp_path / "p.nc"))]
    args += ["--variables", "tasmax", "--seasons", "--no-report", "--no-range-check"]
    assert _run([*args, "--out", str(tmp_path / "o")]) == 0, capsys.readouterr().err
    doc = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert doc["summary"]["tasmax"]["bias"]["values"]["emulator"] < -270.0


def test_bbox_cuts_every_input_before_reading(files: dict[str, Path], tmp_path: Path) -> None:
    with xr.open_dataset(files["truth"]) as ds:
        lat, lon = ds["lat"].values, ds["lon"].values
    # a box around the crop's central cells: a rectangle of rows and columns of the Lambert grid
    box = [
        float(np.percentile(lon, 30)),
        float(np.percentile(lon, 70)),
        float(np.percentile(lat, 30)),
        float(np.percentile(lat, 70)),
    ]
    out = tmp_path / "cut"
    bbox = ["--bbox", *(str(v) for v in box)]
    rc = _run(
        [
            "--truth",
            str(files["truth"]),
            "--pred",
            str(files["pred"]),
            "--out",
            str(out),
            "--no-report",
            *bbox,
        ]
    )
    assert rc == 0
    with xr.open_dataset(out / "fields_tasmax.nc") as f:
        ny, nx = f.sizes["y"], f.sizes["x"]
        assert 0 < ny < lat.shape[0] and 0 < nx < lat.shape[1]
        inside = (
            (f["lat"].values >= box[2])
            & (f["lat"].values <= box[3])
            & (f["lon"].values >= box[0])
            & (f["lon"].values <= box[1])
        )
        # the smallest window: each of its edge rows and columns holds a cell inside the box
        assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
