"""``climdl sensitivity`` on emulators: bounds kept in physical units, the adversary against
random draws, zero saliency of a predictor the model cannot see, the CF output, its
reproducibility (seed, batch size) and the pr wet fraction."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import xarray as xr

from climdl.errors import ConfigError, OutputError
from climdl.inference.job import Job, JobConfig
from climdl.sensitivity.attacks import Box, integrated_gradients
from climdl.sensitivity.bounds import parse_bounds, radius
from climdl.sensitivity.emulator import run_emulator_sensitivity, sample_days
from climdl.sensitivity.emulator_batch import (
    Reference,
    TargetSensitivity,
    day_seed,
    member_forward,
    saliency_baseline,
    saliency_forward,
    target_forward,
)
from climdl.sensitivity.output import ATTACKS
from tests.cfcheck import cf_errors

FAST: dict[str, Any] = {"pgd_steps": 2, "random_draws": 3, "ig_steps": 2, "device": "cpu"}
"""Few steps and draws: the tiny emulator's gradients are cheap only in small numbers."""
FLAT = "u_500"
"""The predictor made constant in space in the test input (its daily map is its spatial mean)."""


@pytest.fixture(scope="module")
def predictors(sample_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample's perfect predictors, 40 days, with u_500 flat in space on every day."""
    src = sample_root / "test" / "historical" / "predictors" / "perfect" / "CNRM-CM5_1981-2000.nc"
    with xr.open_dataset(src) as ds:
        ds = ds.isel(time=slice(0, 40)).load()
    ds[FLAT] = (ds[FLAT] * 0 + ds[FLAT].mean(("lat", "lon"))).astype(np.float32)
    out = tmp_path_factory.mktemp("sens_inputs") / "predictors.nc"
    ds.to_netcdf(out)
    return out


@pytest.fixture(scope="module")
def tasmax_run(
    tasmax_ckpt: Path, predictors: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """One 4-day run of the tiny tasmax emulator with the default bounds."""
    out = tmp_path_factory.mktemp("sens_tasmax")
    res = run_emulator_sensitivity(
        tasmax_ckpt, inputs=[str(predictors)], days=4, batch_size=4, out_dir=out, **FAST
    )
    return {"result": res, "out": out}


def _open(path: Path) -> xr.Dataset:
    return xr.open_dataset(path, decode_times=xr.coders.CFDatetimeCoder(use_cftime=True))


def test_sample_days_are_spread_evenly_and_distinct() -> None:
    assert sample_days(40, 4).tolist() == [0, 13, 26, 39]
    assert sample_days(3, 64).tolist() == [0, 1, 2]
    assert sample_days(5, None).tolist() == [0, 1, 2, 3, 4]
    assert sample_days(1000, 1).tolist() == [0]


def test_output_is_cf_with_the_schema(tasmax_run: dict[str, Any], tasmax_ckpt: Path) -> None:
    res = tasmax_run["result"]
    assert res.path == tasmax_run["out"] / "sensitivity.nc" and res.n_days == 4
    assert cf_errors(res.path) == []
    with _open(res.path) as ds:
        assert list(ds.attack.values) == list(ATTACKS)
        assert ds.predictor.values[0] == "z_500" and ds.sizes["predictor"] == 15
        assert ds.sizes["time"] == 4 and ds.time.dt.day.values[0] == 1
        bounds = dict(zip(ds.predictor.values, ds.predictor_bound.values, strict=True))
        assert bounds["t_850"] == "0.5 K" and bounds["q_500"] == "5 %"
        assert bounds["z_700"] == "20 m2 s-2" and bounds["v_850"] == "0.5 m s-1"
        for m in ("mean_change", "max_abs_change", "rms_change"):
            v = ds[f"tasmax_{m}"]
            assert v.dims == ("time", "attack") and v.attrs["units"] == "K"
            assert v.attrs["long_name"] and np.isfinite(v.values).all()
        for m in ("saliency", "bound_sensitivity"):
            v = ds[f"tasmax_{m}"]
            assert v.dims == ("predictor", "lat", "lon") and v.attrs["units"] == "K"
        assert "pr_wet_fraction_change" not in ds and "wet_day_threshold" not in ds.attrs
        assert ds.lat.attrs["units"] == "degrees_north" and ds.lat.size == 16
        a = ds.attrs
        assert a["Conventions"] == "CF-1.10" and a["climdl_sensitivity"] == "emulator"
        assert a["climdl_sensitivity_version"] == 1 and a["pgd_steps"] == 2
        assert a["random_draws"] == 3 and a["ig_steps"] == 2 and a["seed"] == 0
        assert str(tasmax_ckpt.resolve()) in a["checkpoints"] and "sha256:" in a["checkpoints"]
        assert a["bounds"].startswith("z_500=20 m2 s-2; ") and "history" in a
    rows = res.summary
    assert [(r.target, r.attack) for r in rows] == [("tasmax", a) for a in ATTACKS]
    text = (tasmax_run["out"] / "summary.csv").read_text().splitlines()
    assert text[0].startswith("target,attack,units,days,median_abs_mean_change")
    assert len(text) == 1 + len(ATTACKS) and text[1].startswith("tasmax,fgsm,K,4,")


def test_the_adversary_moves_the_mean_at_least_as_far_as_random(
    tasmax_run: dict[str, Any],
) -> None:
    with _open(tasmax_run["result"].path) as ds:
        mean = np.abs(ds.tasmax_mean_change.to_pandas())
        rms = ds.tasmax_rms_change.to_pandas()
    tol = 1e-5
    assert (mean["fgsm"] > 0).all()
    assert (mean["pgd"] >= mean["fgsm"] - tol).all()  # PGD starts at FGSM, keeps its best
    assert (mean["fgsm"] >= mean["random"] - tol).all()
    assert (mean["pgd"] >= mean["random"] - tol).all()
    assert (mean["pgd"] >= mean["random_max"] - tol).all()  # held on this model (every day)
    assert (mean["random_max"] >= mean["random"] - tol).all()
    assert (rms["pgd_rms"] >= rms["random"] - tol).all()


def test_a_predictor_flat_in_space_has_zero_saliency(tasmax_run: dict[str, Any]) -> None:
    """A daily_map model's attributions are those of each day's anomaly pattern: a flat map has
    none (its daily mean still reaches the model, as a 1-D input held along the path)."""
    with _open(tasmax_run["result"].path) as ds:
        sal = ds.tasmax_saliency
        assert (sal.sel(predictor=FLAT).values == 0).all()
        assert np.abs(sal.sel(predictor="t_850").values).max() > 0
        assert (ds.tasmax_bound_sensitivity.values >= 0).all()
        assert "anomaly pattern" in sal.attrs["comment"]


def _days(tasmax_ckpt: Path, predictors: Path) -> tuple[Job, torch.Tensor, dict[str, torch.Tensor]]:
    job = Job(JobConfig(checkpoints=(str(tasmax_ckpt),), inputs=(str(predictors),)))
    x_np, times = job.read_days(np.array([5, 33]))
    x, aux = job.model_inputs(x_np, times)
    job.emulators.members[0].task.eval().requires_grad_(False)
    return job, x, aux


def test_integrated_gradients_add_up_for_a_daily_map_model(
    tasmax_ckpt: Path, predictors: Path
) -> None:
    """Completeness: the attributions sum to the change of the domain mean from the baseline
    (plain integrated gradients through the daily standardisation did not: it is saturated
    at a tiny fraction of the path), and the forward is the model's own at the days."""
    job, x, aux = _days(tasmax_ckpt, predictors)
    try:
        member = job.emulators.members[0]
        assert member.task.hp.input_norm == "daily_map"
        channels = job.variables
        plain = target_forward(member_forward(member, channels, aux), 0)
        along = target_forward(saliency_forward(member, channels, aux, x), 0)
        ref = Reference.of(plain, x)
        base = saliency_baseline(member, x, channels)
        attr = integrated_gradients(lambda u: ref.domain_mean(along(u)), x, base, 32)
        with torch.no_grad():
            assert torch.equal(along(x), plain(x))
            change = ref.domain_mean(along(x)) - ref.domain_mean(along(base))
    finally:
        job.ds.close()
    total = attr.sum(dim=(1, 2, 3))
    assert change.abs().min() > 1e-3, "the test needs a visible change"
    torch.testing.assert_close(total, change, rtol=0.03, atol=1e-4)


def test_a_predictor_the_network_ignores_has_zero_saliency(
    tasmax_ckpt: Path, predictors: Path
) -> None:
    job, x, aux = _days(tasmax_ckpt, predictors)
    try:
        member = job.emulators.members[0]
        channels = job.variables
        c = channels.index("q_850")  # not a lapse-rate baseline input (t_850, z_850)
        first = next(
            m
            for m in member.task.net.modules()
            if isinstance(m, torch.nn.Conv2d) and m.in_channels == len(channels)
        )
        first.weight[:, c] = 0  # the network no longer sees q_850's map
        along = target_forward(saliency_forward(member, channels, aux, x), 0)
        ref = Reference.of(along, x)
        base = saliency_baseline(member, x, channels)
        attr = integrated_gradients(lambda u: ref.domain_mean(along(u)), x, base, 4)
    finally:
        job.ds.close()
    assert (attr[:, c] == 0).all()
    assert attr[:, channels.index("t_850")].abs().max() > 0


def test_perturbations_stay_within_their_physical_bounds(
    tasmax_ckpt: Path, predictors: Path
) -> None:
    job = Job(JobConfig(checkpoints=(str(tasmax_ckpt),), inputs=(str(predictors),)))
    try:
        channels = job.variables
        x_np, times = job.read_days(np.array([3, 30]))
        x, aux = job.model_inputs(x_np, times)
        member = job.emulators.members[0]
        bounds = parse_bounds("t=0.5 K, q_850=5 %, u=1.8 km h-1", channels, member.spec.units)
        box = Box(radius(x, bounds, channels))
        ts = TargetSensitivity(
            target_forward(member_forward(member, channels, aux), 0),
            pgd_steps=3,
            random_draws=2,
            ig_steps=1,
        )
        ref = Reference.of(ts.forward, x)
        gens = [torch.Generator().manual_seed(day_seed(0, d, 0)) for d in (3, 30)]
        _, deltas = ts.perturbations(ref, x, box, gens)
    finally:
        job.ds.close()
    idx = {c: i for i, c in enumerate(channels)}
    assert sorted(deltas) == ["fgsm", "pgd", "pgd_rms", "random"]
    for attack, ds_ in deltas.items():
        for d in ds_:
            assert box.contains(d), attack
            for c in ("t_500", "t_700", "t_850"):
                assert d[:, idx[c]].abs().max() <= 0.5 * (1 + 1e-6)
            q = x[:, idx["q_850"]].abs()
            assert (d[:, idx["q_850"]].abs() <= 0.05 * q * (1 + 1e-6)).all()
            assert d[:, idx["u_500"]].abs().max() <= 0.5 * (1 + 1e-6)  # 1.8 km/h = 0.5 m/s
            for c in ("z_500", "v_850", "q_500"):  # not bounded: held fixed
                assert (d[:, idx[c]] == 0).all(), (attack, c)
    for d in deltas["random"]:  # random draws are corners of the box
        assert torch.allclose(d.abs(), box.radius)


def test_same_seed_same_file_and_batch_size_does_not_matter(
    tasmax_ckpt: Path, predictors: Path, tmp_path: Path
) -> None:
    kw: dict[str, Any] = {"inputs": [str(predictors)], "days": 2, **FAST, "eps": "t=0.5 K"}
    a = run_emulator_sensitivity(tasmax_ckpt, out_dir=tmp_path / "a", batch_size=2, **kw)
    b = run_emulator_sensitivity(tasmax_ckpt, out_dir=tmp_path / "b", batch_size=2, **kw)
    c = run_emulator_sensitivity(tasmax_ckpt, out_dir=tmp_path / "c", batch_size=1, **kw)
    with _open(a.path) as da, _open(b.path) as db, _open(c.path) as dc:
        for name in da.data_vars:
            assert np.array_equal(da[name].values, db[name].values), name
            if da[name].dtype.kind == "f":
                np.testing.assert_allclose(dc[name].values, da[name].values, rtol=1e-4, atol=1e-6)
        assert {k: v for k, v in da.attrs.items() if k != "history"} == {
            k: v for k, v in db.attrs.items() if k != "history"
        }
    assert (tmp_path / "a" / "summary.csv").read_text() == (
        tmp_path / "b" / "summary.csv"
    ).read_text()


def test_pr_reports_the_wet_fraction_change(
    pr_ckpt: Path, predictors: Path, tmp_path: Path
) -> None:
    res = run_emulator_sensitivity(
        pr_ckpt, inputs=[str(predictors)], days=2, out_dir=tmp_path, **FAST
    )
    assert cf_errors(res.path) == []
    with _open(res.path) as ds:
        wet = ds.pr_wet_fraction_change
        assert wet.dims == ("time", "attack") and wet.attrs["units"] == "1"
        assert (np.abs(wet.values) <= 1).all()
        assert ds.pr_mean_change.attrs["units"] == "mm day-1"
        assert ds.attrs["wet_day_threshold"] == "1 mm day-1"
    assert all(r.median_abs_wet_fraction_change is not None for r in res.summary)


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"eps": "w=1 m s-1"}, ConfigError, "neither a channel nor a family"),
        ({"eps": "t=-0.5 K"}, ConfigError, "is negative"),
        ({"eps": "t=0.5"}, ConfigError, "has no unit"),
        ({"days": 0}, ConfigError, "--days must be at least 1"),
        ({"pgd_steps": 0}, ConfigError, "--pgd-steps must be at least 1"),
        ({"seed": 2**63}, ConfigError, r"--seed must be an integer from 0 to 2\*\*63-1"),
    ],
)
def test_mistakes_stop_with_one_sentence_and_write_nothing(
    tasmax_ckpt: Path,
    predictors: Path,
    tmp_path: Path,
    options: dict[str, Any],
    error: type[Exception],
    match: str,
) -> None:
    kw = {**FAST, **options}
    with pytest.raises(error, match=match):
        run_emulator_sensitivity(
            tasmax_ckpt, inputs=[str(predictors)], out_dir=tmp_path / "out", **kw
        )
    assert not (tmp_path / "out").exists()


def test_an_earlier_run_is_kept_without_overwrite(
    tasmax_run: dict[str, Any], tasmax_ckpt: Path, predictors: Path
) -> None:
    before = tasmax_run["result"].path.read_bytes()
    with pytest.raises(OutputError, match="already holds a sensitivity run"):
        run_emulator_sensitivity(
            tasmax_ckpt, inputs=[str(predictors)], out_dir=tasmax_run["out"], **FAST
        )
    assert tasmax_run["result"].path.read_bytes() == before
