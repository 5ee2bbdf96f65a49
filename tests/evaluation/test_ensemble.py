"""Ensemble evaluation: fair CRPS, spread-skill ratio and rank histogram against closed forms,
members summarised as mean ± std, and ``climdl evaluate`` on a small synthetic member file."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
from scipy.stats import norm

from climdl.cli import main
from climdl.errors import DataError
from climdl.evaluation import evaluate
from climdl.evaluation.ensemble import EnsembleScores, ensemble_scores

TIME = xr.date_range("2001-01-01", periods=365, freq="D", calendar="noleap", use_cftime=True)


def _scores(
    truth: np.ndarray, members: np.ndarray, chunks: dict[str, int] | None = None
) -> EnsembleScores:
    """Scores of ``members`` (M, T, y, x) against ``truth`` (T, y, x), NumPy or Dask."""
    time = TIME[: truth.shape[0]]
    t = xr.DataArray(truth, dims=("time", "y", "x"), coords={"time": time})
    e = xr.DataArray(members, dims=("member", "time", "y", "x"), coords={"time": time})
    if chunks is not None:
        t, e = t.chunk({"time": chunks["time"]}), e.chunk(chunks)
    sums, ranks = ensemble_scores(t, e)
    return EnsembleScores(sums.compute(), ranks.compute())


def _crps(sc: EnsembleScores) -> float:
    return float(sc.crps_map().mean())


def test_crps_of_identical_members_is_the_mae() -> None:
    rng = np.random.default_rng(0)
    y, x = rng.normal(size=(40, 3, 4)), rng.normal(size=(40, 3, 4))
    sc = _scores(y, np.stack([x] * 5))
    assert _crps(sc) == pytest.approx(np.abs(x - y).mean(), rel=1e-12)
    assert sc.spread() == pytest.approx(0.0, abs=1e-12) and sc.ssr() < 1e-12


def test_crps_of_two_members_by_hand() -> None:
    # y = 0, members 1 and 3: mean |x - y| = 2, minus |1 - 3| / 2 = 1 -> 1; y = 2: 1 - 1 = 0
    y = np.array([0.0, 2.0]).reshape(2, 1, 1)
    x = np.array([[1.0, 1.0], [3.0, 3.0]]).reshape(2, 2, 1, 1)
    sc = _scores(y, x)
    assert float(sc.sums.sel(stat="crps").sum()) == pytest.approx(1.0)
    assert _crps(sc) == pytest.approx(0.5)


def test_crps_of_a_large_gaussian_ensemble_matches_the_closed_form() -> None:
    rng = np.random.default_rng(1)
    mu, sigma = 0.5, 2.0
    y = rng.normal(0.0, 1.0, (60, 4, 4))
    x = rng.normal(mu, sigma, (400, 60, 4, 4))
    z = (y - mu) / sigma
    closed = sigma * (z * (2 * norm.cdf(z) - 1) + 2 * norm.pdf(z) - 1 / np.sqrt(np.pi))
    assert _crps(_scores(y, x)) == pytest.approx(closed.mean(), rel=0.02)


def _calibrated(seed: int, scale: float, m: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Truth and members drawn from N(mu, 1) with a random mu per point and day; the members'
    spread multiplied by ``scale`` (1: calibrated, < 1: under-dispersive)."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(0.0, 3.0, (120, 8, 8))
    truth = mu + rng.normal(size=mu.shape)
    members = mu + scale * rng.normal(size=(m, *mu.shape))
    return truth, members


def test_spread_skill_and_rank_histogram_of_calibrated_and_underdispersive_ensembles() -> None:
    good = _scores(*_calibrated(2, 1.0))
    narrow = _scores(*_calibrated(2, 0.3))
    assert good.ssr() == pytest.approx(1.0, abs=0.05)
    assert narrow.ssr() < 0.5
    for season in ("DJF", "MAM"):  # 120 days from 1 January
        assert good.ssr(season) == pytest.approx(1.0, abs=0.1)
    assert good.rank_counts().sum() == 120 * 64 and good.rank_counts().size == 11
    assert good.reliability_index() < 0.05 and good.outer_ratio() == pytest.approx(1.0, abs=0.1)
    assert narrow.outer_ratio() > 3.0  # U-shaped: the truth often outside the members
    assert narrow.reliability_index() > 0.5 and narrow.chi_square() > good.chi_square()


def test_ties_are_broken_at_random_and_reproducibly() -> None:
    dry = np.zeros((90, 6, 6))
    a = _scores(dry, np.zeros((4, *dry.shape)))
    freq = a.rank_frequency()
    assert freq.size == 5 and np.allclose(freq, 0.2, atol=0.02)  # flat, not all in one bin
    b = _scores(dry, np.zeros((4, *dry.shape)), chunks={"time": 7, "member": 1})
    np.testing.assert_array_equal(a.rank_counts(), b.rank_counts())  # whatever the chunking
    assert _crps(a) == 0.0


def test_dask_and_numpy_agree_and_missing_points_are_left_out() -> None:
    truth, members = _calibrated(3, 0.7, m=5)
    truth[:, 0, 0] = np.nan
    members[2, :10, 1, 1] = np.nan  # one member missing: those days of that point left out
    eager = _scores(truth, members)
    lazy = _scores(truth, members, chunks={"time": 50, "member": 1})
    xr.testing.assert_allclose(eager.sums, lazy.sums, rtol=1e-12)
    np.testing.assert_array_equal(eager.rank_counts(), lazy.rank_counts())
    n = eager.sums.sel(stat="n").sum("group")
    assert float(n[0, 0]) == 0 and float(n[1, 1]) == 110 and float(n[2, 2]) == 120
    assert np.isnan(float(eager.crps_map()[0, 0]))


# ----------------------------------------------------------------------------- evaluate
def _truth(seed: int = 0, years: int = 1) -> xr.Dataset:
    """tasmax (K) and pr (mm/day) on an 8 x 8 lat/lon grid, noleap calendar."""
    rng = np.random.default_rng(seed)
    n = 365 * years
    time = xr.date_range("2081-01-01", periods=n, freq="D", calendar="noleap", use_cftime=True)
    cycle = 8 * np.sin(2 * np.pi * np.arange(n) / 365)[:, None, None]
    tas = 290 + cycle + rng.normal(0, 2, (n, 8, 8))
    pr = np.maximum(rng.gamma(0.5, 6.0, (n, 8, 8)) - 1.0, 0.0)
    tas[:, 0, :2] = np.nan
    pr[:, 0, :2] = np.nan
    return xr.Dataset(
        {
            "tasmax": (("time", "lat", "lon"), tas.astype("f4"), {"units": "K"}),
            "pr": (("time", "lat", "lon"), pr.astype("f4"), {"units": "mm day-1"}),
        },
        coords={
            "time": time,
            "lat": ("lat", np.linspace(45.0, 46.4, 8), {"units": "degrees_north"}),
            "lon": ("lon", np.linspace(7.0, 8.4, 8), {"units": "degrees_east"}),
        },
    )


def _member(truth: xr.Dataset, seed: int, noise: float = 1.0) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    out = truth.copy()
    out["tasmax"] = truth["tasmax"] + rng.normal(0, noise, truth["tasmax"].shape).astype("f4")
    out["pr"] = truth["pr"] * rng.lognormal(0, 0.3, truth["pr"].shape).astype("f4")
    for v in ("tasmax", "pr"):
        out[v].attrs = truth[v].attrs
    return out


def _ensemble(truth: xr.Dataset, seeds: list[int]) -> xr.Dataset:
    ens = xr.concat([_member(truth, s) for s in seeds], dim="member", data_vars="all")
    ens = ens.assign_coords(member=np.arange(len(seeds), dtype="i4"))
    return ens.transpose("member", "time", ...)


def test_members_are_summarised_as_mean_and_spread() -> None:
    truth = _truth()
    ens = _ensemble(truth, [1, 2, 3])
    res = evaluate(truth, {"emulator": ens}, seasons=["JJA"])
    each = evaluate(
        truth, {f"m{k}": ens.isel(member=k, drop=True) for k in range(3)}, seasons=["JJA"]
    )
    mean = evaluate(truth, {"mean": ens.mean("member")}, seasons=["JJA"])
    by_key = {(r.variable, r.key): r for r in each.rows}
    by_mean = {(r.variable, r.key): r for r in mean.rows}
    assert res.models == ["emulator", "emulator (ens. mean)"]
    assert res.meta["ensembles"]["emulator"]["members"] == 3
    for r in res.rows:
        key = (r.variable, r.key)
        if key not in by_key:  # the ensemble scores: the ensemble only
            assert set(r.values) == {"emulator"} and r.key.startswith(("crps", "ssr", "rank"))
            continue
        vals = [by_key[key].values[f"m{k}"] for k in range(3)]
        if all(math.isfinite(v) for v in vals):
            assert r.values["emulator"] == pytest.approx(np.mean(vals), rel=1e-9, abs=1e-12)
            assert r.spread["emulator"] == pytest.approx(np.std(vals, ddof=1), rel=1e-6, abs=1e-12)
        got, want = r.values["emulator (ens. mean)"], by_mean[key].values["mean"]
        assert got == want or (math.isnan(got) and math.isnan(want)), key
    keys = {r.key for r in res.rows if r.variable == "pr"}
    assert {"crps", "crps_JJA", "ssr", "ssr_JJA", "rank_reliability", "rank_outer"} <= keys
    f = res.fields["tasmax"]
    assert list(f["model"].values) == ["emulator", "emulator (ens. mean)"]
    assert f["crps"].dims == ("ensemble", "lat", "lon") and f["rank_histogram"].shape == (1, 4)
    assert list(f["period"].values) == ["all", "JJA"]


def test_one_member_ensemble_and_refused_inputs() -> None:
    truth = _truth()
    one = _ensemble(truth, [5])
    res = evaluate(truth, {"emulator": one}, variables=["tasmax"], seasons=[])
    rows = {r.key: r for r in res.rows}
    mae = float(np.nanmean(np.abs(one["tasmax"].values[0] - truth["tasmax"].values)))
    assert rows["crps"].values["emulator"] == pytest.approx(mae, rel=1e-5)
    assert math.isnan(rows["ssr"].values["emulator"])
    with pytest.raises(DataError, match="truth has a member dimension"):
        evaluate(_ensemble(truth, [1, 2]), {"emulator": truth})
    three = _ensemble(truth, [1, 2, 3])
    with pytest.raises(DataError, match="historical prediction of 'emulator' has 2 members"):
        evaluate(
            truth,
            {"emulator": three},
            hist_truth=truth,
            hist_preds={"emulator": _ensemble(truth, [4, 5])},
        )


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """truth.nc, ens.nc (4 members, member first) and base.nc (deterministic) on a tiny grid."""
    d = tmp_path_factory.mktemp("ensfiles")
    truth = _truth()
    truth.to_netcdf(d / "truth.nc")
    _ensemble(truth, [1, 2, 3, 4]).to_netcdf(d / "ens.nc")
    _member(truth, 9, noise=1.5).to_netcdf(d / "base.nc")
    return d


def _run(files: Path, out: Path, *args: str) -> dict[str, Any]:
    argv = ["evaluate", "--truth", str(files / "truth.nc"), *args, "--seasons", "DJF"]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main([*argv, "--out", str(out), "-q"]) == 0
    doc: dict[str, Any] = json.loads((out / "summary.json").read_text())
    return doc


def test_climdl_evaluate_with_an_ensemble_prediction(files: Path, tmp_path: Path) -> None:
    base = ["--baseline", f"interpolation={files / 'base.nc'}", "--no-report"]
    doc = _run(files, tmp_path / "ens", "--pred", str(files / "ens.nc"), *base)
    alone = _run(files, tmp_path / "det", "--pred", str(files / "base.nc"), "--no-report")
    tas = doc["summary"]["tasmax"]
    assert set(tas["rmse"]["values"]) == {"emulator", "emulator (ens. mean)", "interpolation"}
    assert set(tas["rmse"]["spread"]) == {"emulator"}
    # the deterministic model is evaluated as without the ensemble beside it
    det = alone["summary"]["tasmax"]["rmse"]
    assert tas["rmse"]["values"]["interpolation"] == det["values"]["emulator"]
    assert "spread" not in det
    assert 0.0 < tas["crps"]["values"]["emulator"] < tas["rmse"]["values"]["emulator (ens. mean)"]
    assert set(tas["ssr_DJF"]["values"]) == {"emulator"}
    # beside an ensemble, a deterministic prediction's CRPS is its MAE (the number to beat)
    with xr.open_dataset(files / "truth.nc") as t, xr.open_dataset(files / "base.nc") as b:
        mae = float(np.nanmean(np.abs(b["tasmax"].values - t["tasmax"].values)))
    assert tas["crps"]["values"]["interpolation"] == pytest.approx(mae, rel=1e-5)
    assert set(tas["crps_DJF"]["values"]) == {"emulator", "interpolation"}
    assert "crps" not in alone["summary"]["tasmax"]
    assert doc["meta"]["ensembles"] == {
        "emulator": {"members": 4, "ensemble_mean": "emulator (ens. mean)"}
    }
    assert ",value,spread," in (tmp_path / "ens" / "summary.csv").read_text().splitlines()[0]
    assert ",spread," not in (tmp_path / "det" / "summary.csv").read_text().splitlines()[0]
    assert " ± " in (tmp_path / "ens" / "summary.md").read_text()
    with xr.open_dataset(tmp_path / "ens" / "fields_pr.nc") as ds:
        assert ds["crps"].dims == ("ensemble", "lat", "lon")
        assert ds["crps_season"].dims == ("ensemble", "season", "lat", "lon")
        assert int(ds["rank_histogram"].sum()) == 365 * (64 - 2)
        assert np.isclose(float(ds["rank_frequency"].sum()), 1.0)
        assert list(ds["model"].values) == ["emulator", "emulator (ens. mean)", "interpolation"]
        assert list(ds["period"].values) == ["all", "DJF"]


def test_report_has_an_ensemble_section(tmp_path: Path) -> None:
    from climdl.evaluation.ensemble_report import ensemble_figures
    from climdl.evaluation.report import render_html, render_markdown

    truth = _truth()
    res = evaluate(truth, {"emulator": _ensemble(truth, [1, 2])}, seasons=["JJA"])
    figs = ensemble_figures(res.fields, tmp_path)
    assert [f.path.name for f in figs[:3]] == [
        "tasmax_ensemble_crps.png",
        "tasmax_ensemble_rank_histogram.png",
        "tasmax_ensemble_spread_skill.png",
    ]
    assert {f.section for f in figs} == {"Ensemble"} and len(figs) == 6
    html = render_html(res, figs, "t")
    assert "<h2>Ensemble</h2>" in html and " ± " in html and "CRPS (fair)" in html
    assert "figures/pr_ensemble_crps.png" in render_markdown(res, figs, "t", tmp_path)


@pytest.mark.slow
def test_climdl_evaluate_report_of_an_ensemble(files: Path, tmp_path: Path) -> None:
    _run(files, tmp_path, "--pred", str(files / "ens.nc"))
    html = (tmp_path / "report.html").read_text()
    assert "<h2>Ensemble</h2>" in html and " ± " in html
    assert "figures/pr_ensemble_rank_histogram.png" in (tmp_path / "report.md").read_text()


def test_two_ensembles_of_different_sizes() -> None:
    truth = _truth()
    res = evaluate(
        truth,
        {"a": _ensemble(truth, [1, 2, 3]), "b": _ensemble(truth, [4, 5])},
        variables=["pr"],
        seasons=[],
    )
    assert res.models == ["a", "a (ens. mean)", "b", "b (ens. mean)"]
    f = res.fields["pr"]
    assert list(f["ensemble"].values) == ["a", "b"] and f["rank_histogram"].shape == (2, 4)
    assert np.isnan(f["rank_frequency"].values[1, 3])  # b has 2 members: 3 ranks
    assert f["rank_histogram"].dtype == np.int64 and f["rank_histogram"].values[1, 3] == 0
    assert f["rank_histogram"].values[1, :3].sum() == f["rank_histogram"].values[0].sum()
    rows = {r.key: r for r in res.rows}
    assert set(rows["crps"].values) == {"a", "b"} and set(rows["rmse"].spread) == {"a", "b"}


def test_climate_change_signal_of_an_ensemble() -> None:
    hist, fut = _truth(seed=10), _truth(seed=11)
    fut["tasmax"] = fut["tasmax"] + np.float32(3.0)
    res = evaluate(
        fut,
        {"emulator": _ensemble(fut, [1, 2, 3])},
        hist_truth=hist,
        hist_preds={"emulator": _ensemble(hist, [4, 5, 6])},
        variables=["tasmax"],
        seasons=[],
    )
    row = next(r for r in res.rows if r.key == "signal_mean")
    assert set(row.values) == {"emulator", "emulator (ens. mean)"}
    assert row.reference == pytest.approx(3.0, abs=0.3) and math.isfinite(row.spread["emulator"])
    assert list(res.fields["tasmax"]["signal_source"].values) == [
        "truth",
        "emulator",
        "emulator (ens. mean)",
    ]


def test_days_left_out_are_warned_about_once(
    files: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from climdl.evaluation.engine import evaluate_files

    with xr.open_dataset(files / "base.nc") as b:
        b.isel(time=slice(0, 200)).to_netcdf(tmp_path / "short.nc")
    with caplog.at_level("WARNING", logger="climdl.evaluation.inputs"):
        evaluate_files(files / "truth.nc", {"m": tmp_path / "short.nc"}, variables=["tasmax"])
    said = [r.getMessage() for r in caplog.records if "common days" in r.getMessage()]
    assert said == ["evaluating the 200 common days; left out: 165 day(s) of the truth"]
