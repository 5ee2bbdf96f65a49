"""The whole evaluation as a library call: lat/lon grid, noleap calendar, NumPy vs Dask."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from climdl.errors import DataError, OutputError
from climdl.evaluation import evaluate, write_outputs
from climdl.evaluation.output import check_out_dir


def _dataset(years: int, start: int, seed: int, warming: float = 0.0) -> xr.Dataset:
    """tasmax (K) and pr (mm/day) on a 16 x 16 regular lat/lon grid, noleap calendar."""
    rng = np.random.default_rng(seed)
    n = 365 * years
    time = xr.date_range(f"{start}-01-01", periods=n, freq="D", calendar="noleap", use_cftime=True)
    lat = np.linspace(-34.5, -33.0, 16)
    lon = np.linspace(20.5, 22.0, 16)
    cycle = 8 * np.sin(2 * np.pi * np.arange(n) / 365)[:, None, None]
    tas = (
        290 + warming + cycle + rng.normal(0, 2, (n, 16, 16)) + np.linspace(0, 3, 16)[None, :, None]
    )
    pr = np.maximum(rng.gamma(0.5, 6.0, (n, 16, 16)) - 1.0, 0.0) * (1 + 0.1 * warming)
    tas[:, 0, :3] = np.nan  # masked points (e.g. sea)
    pr[:, 0, :3] = np.nan
    coords = {
        "time": time,
        "lat": ("lat", lat, {"units": "degrees_north"}),
        "lon": ("lon", lon, {"units": "degrees_east"}),
    }
    return xr.Dataset(
        {
            "tasmax": (("time", "lat", "lon"), tas.astype("f4"), {"units": "K"}),
            "pr": (("time", "lat", "lon"), pr.astype("f4"), {"units": "mm day-1"}),
        },
        coords=coords,
    )


def _predict(ds: xr.Dataset, seed: int, noise: float) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    out = ds.copy()
    out["tasmax"] = (
        ds["tasmax"] + np.float32(0.2) + rng.normal(0, noise, ds["tasmax"].shape).astype("f4")
    )
    out["pr"] = (ds["pr"] * np.float32(0.9)).assign_attrs(units="mm day-1")
    out["tasmax"].attrs["units"] = "K"
    return out


@pytest.fixture(scope="module")
def inputs() -> dict[str, xr.Dataset]:
    hist, fut = _dataset(2, 1981, 0), _dataset(2, 2081, 1, warming=3.0)
    return {
        "truth": fut,
        "pred": _predict(fut, 2, 0.5),
        "base": _predict(fut, 3, 1.5),
        "hist": hist,
        "hist_pred": _predict(hist, 4, 0.5),
    }


def test_numpy_and_dask_give_the_same_evaluation(inputs: dict[str, xr.Dataset]) -> None:
    kwargs = {"seasons": ["DJF", "JJA"]}
    eager = evaluate(
        inputs["truth"],
        {"emulator": inputs["pred"], "interpolation": inputs["base"]},
        hist_truth=inputs["hist"],
        hist_preds={"emulator": inputs["hist_pred"]},
        **kwargs,
    )
    chunk = {"time": 200}
    lazy = evaluate(
        inputs["truth"].chunk(chunk),
        {"emulator": inputs["pred"].chunk(chunk), "interpolation": inputs["base"].chunk(chunk)},
        hist_truth=inputs["hist"].chunk(chunk),
        hist_preds={"emulator": inputs["hist_pred"].chunk(chunk)},
        **kwargs,
    )
    assert [r.key for r in eager.rows] == [r.key for r in lazy.rows]
    for a, b in zip(eager.rows, lazy.rows, strict=True):
        for model, value in a.values.items():
            other = b.values[model]
            if math.isnan(value):
                assert math.isnan(other), (a.variable, a.key)
            else:
                assert other == pytest.approx(value, rel=1e-6, abs=1e-9), (a.variable, a.key, model)
    for var in ("tasmax", "pr"):
        xr.testing.assert_allclose(eager.fields[var], lazy.fields[var], rtol=1e-6)


def test_evaluation_content(inputs: dict[str, xr.Dataset], tmp_path: Path) -> None:
    res = evaluate(
        inputs["truth"],
        {"emulator": inputs["pred"], "interpolation": inputs["base"]},
        hist_truth=inputs["hist"],
        hist_preds={"emulator": inputs["hist_pred"]},
    )
    rows = {(r.variable, r.key): r for r in res.rows}
    assert rows[("tasmax", "rmse")].best() == ["emulator"]
    assert rows[("tasmax", "bias")].values["emulator"] == pytest.approx(0.2, abs=0.02)
    # pr scaled by 0.9: the ratio of the mean and of P99 is 0.9 for both models
    assert rows[("pr", "ratio_mean")].values["emulator"] == pytest.approx(0.9, rel=1e-4)
    assert rows[("pr", "ratio_p99")].values["interpolation"] == pytest.approx(0.9, rel=1e-4)
    # the signal exists for the emulator only (the baseline has no historical run here)
    assert set(rows[("tasmax", "signal_mean")].values) == {"emulator"}
    assert rows[("tasmax", "signal_mean")].reference == pytest.approx(3.0, abs=0.2)
    assert ("tasmax-pr", "corr_bias") in rows
    assert res.meta["calendar"] == "noleap" and res.meta["grid"] == {"lat": 16, "lon": 16}
    paths = write_outputs(res, tmp_path / "out", report=False)
    doc = json.loads(paths["summary_json"].read_text())
    assert doc["summary"]["pr"]["ratio_mean"]["best"] == ["emulator", "interpolation"]
    with xr.open_dataset(paths["fields_tasmax"]) as ds:
        assert "grid_mapping" not in ds["bias"].attrs  # regular lat/lon: none needed
        assert ds["bias"].dims == ("model", "lat", "lon")
        assert np.isnan(ds["bias"].values[:, 0, :3]).all()  # masked points stay missing
        assert np.isfinite(ds["bias"].values[:, 1:, :]).all()
    with pytest.raises(OutputError, match="--overwrite"):
        check_out_dir(tmp_path / "out", overwrite=False)


def test_prediction_on_other_grid_or_days(inputs: dict[str, xr.Dataset]) -> None:
    truth = inputs["truth"]
    shifted = inputs["pred"].assign_coords(lat=inputs["pred"]["lat"] + 1.0)
    with pytest.raises(DataError, match="lat coordinates"):
        evaluate(truth, {"emulator": shifted})
    later = inputs["hist_pred"]
    with pytest.raises(DataError, match="no day in common"):
        evaluate(truth, {"emulator": later})
    with pytest.raises(DataError, match="no variable in common"):
        evaluate(truth[["tasmax"]], {"emulator": inputs["pred"][["pr"]]})


def test_prediction_without_valid_values_is_refused_before_any_diagnostic(
    inputs: dict[str, xr.Dataset],
) -> None:
    truth = inputs["truth"]
    missing = inputs["pred"].assign(tasmax=inputs["pred"]["tasmax"] * np.nan)
    with pytest.raises(DataError, match="tasmax in the prediction 'emulator' has no valid value"):
        evaluate(truth, {"emulator": missing})
    # valid values, but only where the truth is missing: no pair to score
    apart = inputs["pred"].assign(tasmax=inputs["pred"]["tasmax"].where(truth["tasmax"].isnull()))
    with pytest.raises(DataError, match="no valid value where the truth has one"):
        evaluate(truth, {"emulator": apart})
    blank = truth.assign(pr=truth["pr"] * np.nan)
    with pytest.raises(DataError, match="pr in the truth has no valid value over the 730"):
        evaluate(blank, {"emulator": inputs["pred"]})


def test_ensemble_member_without_valid_values_is_named(inputs: dict[str, xr.Dataset]) -> None:
    pred = inputs["pred"]
    ens = xr.concat([pred, pred * np.nan], dim="member").assign_coords(member=["r1", "r2"])
    with pytest.raises(DataError, match="member r2 of the prediction 'emulator'"):
        evaluate(inputs["truth"], {"emulator": ens})
    # text labels (r1i1p1f1) are no grid coordinate: a valid ensemble with them is evaluated
    ens = xr.concat([pred, pred + 1.0], dim="member").assign_coords(member=["r1", "r2"])
    res = evaluate(inputs["truth"], {"emulator": ens}, variables=["tasmax"], seasons=[])
    assert res.meta["ensembles"]["emulator"]["members"] == 2


def test_implausible_values_are_refused_with_the_range_found(
    inputs: dict[str, xr.Dataset],
) -> None:
    degc = inputs["hist_pred"].assign(tasmax=(inputs["hist_pred"]["tasmax"] - 273.15))
    degc["tasmax"].attrs["units"] = "K"
    with pytest.raises(DataError) as err:
        evaluate(
            inputs["truth"],
            {"emulator": inputs["pred"]},
            hist_truth=inputs["hist"],
            hist_preds={"emulator": degc},
            files={"historical prediction 'emulator'": "hist.nc"},
        )
    message = str(err.value)
    assert message.startswith("tasmax in hist.nc (the historical prediction 'emulator') has ")
    assert "outside its plausible range 150 to 350 K" in message
    assert "look like degC" in message and "--no-range-check" in message
    # only the evaluated points count: nonsense where the truth is missing (sea) is not scored
    sea = inputs["pred"].assign(tasmax=inputs["pred"]["tasmax"].fillna(-1e30))
    res = evaluate(inputs["truth"], {"emulator": sea}, variables=["tasmax"], seasons=[])
    assert next(r for r in res.rows if r.key == "bias").values["emulator"] < 1.0
    # without the range check the values are scored
    res = evaluate(
        inputs["hist"], {"emulator": degc}, variables=["tasmax"], seasons=[], range_check=False
    )
    assert next(r for r in res.rows if r.key == "bias").values["emulator"] < -270.0


@pytest.mark.parametrize("wet", ["-1 mm/day", "1e999 mm/day", float("nan"), -0.5])
def test_negative_or_non_finite_wet_threshold_is_refused(wet: str | float) -> None:
    from climdl.errors import ConfigError
    from climdl.evaluation.indices import Thresholds

    with pytest.raises(ConfigError, match="wet-day threshold"):
        Thresholds(wet=wet).check()
    with pytest.raises(ConfigError, match="summer-day threshold"):
        Thresholds(summer="1e999 degC").check()
    assert Thresholds(wet="0 mm/day").check().wet == "0 mm/day"  # every day wet: allowed
