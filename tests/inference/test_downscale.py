"""``climdl downscale``: CF output, streaming/resume, input grids and calendars, errors."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from climdl.cli import main
from climdl.inference import downscale
from climdl.inference.parts import parts_dir
from climdl.parallel.testing import climdl_cmd, torchrun_cmd
from tests.argv import downscale_argv
from tests.cfcheck import cf_errors

DECODE = xr.coders.CFDatetimeCoder(use_cftime=True)


def _open(path: Path) -> xr.Dataset:
    return xr.open_dataset(path, decode_times=DECODE, decode_coords="all")


@pytest.fixture(scope="module")
def perfect(sample_root: Path) -> Path:
    return sample_root / "test" / "historical" / "predictors" / "perfect" / "CNRM-CM5_1981-2000.nc"


@pytest.fixture(scope="module")
def imperfect_360(sample_root: Path) -> Path:
    """The transfer GCM's predictors: a 360_day calendar."""
    return (
        sample_root / "test" / "historical" / "predictors" / "imperfect" / "MPI-ESM-LR_1981-2000.nc"
    )


@pytest.fixture(scope="module")
def reference(tasmax_ckpt: Path, perfect: Path) -> xr.Dataset:
    """The in-memory predictions from the unmodified perfect predictors."""
    return downscale(tasmax_ckpt, [str(perfect)]).dataset.load()


# ----------------------------------------------------------------------------- end to end
def test_cli_end_to_end_is_cf_and_reopens(
    tasmax_ckpt: Path,
    imperfect_360: Path,
    tmp_path: Path,
    sample_root: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "tasmax.nc"
    rc = main(
        downscale_argv(tasmax_ckpt, imperfect_360, out, "--chunk-days", "100", "--batch-size", "16")
    )
    assert rc == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert cf_errors(out) == []
    ds = _open(out)
    target = xr.open_dataset(
        next((sample_root / "test" / "historical" / "target").glob("*CNRM*")), decode_coords="all"
    )
    np.testing.assert_allclose(ds.x.values, target.x.values)
    np.testing.assert_allclose(ds.lat.values, target.lat.values)
    assert ds.tasmax.dims == ("time", "y", "x") and ds.tasmax.attrs["units"] == "K"
    assert ds.tasmax.attrs["standard_name"] == "air_temperature"
    assert ds.tasmax.attrs["cell_methods"] == "time: maximum"
    assert ds.time.encoding["calendar"] == "360_day" and ds.sizes["time"] == 360
    assert ds.time.dt.calendar == "360_day"
    assert (
        "Lambert_Conformal" in ds.coords
        and ds.tasmax.encoding["grid_mapping"] == "Lambert_Conformal"
    )
    assert float(ds.height) == 2.0
    assert ds.attrs["Conventions"] == "CF-1.10" and len(ds.attrs["checkpoint_sha256"]) == 64
    assert (
        "climdl downscale" in ds.attrs["history"]
        and str(imperfect_360.resolve()) in ds.attrs["input_files"]
    )
    assert ds.tasmax.encoding["zlib"] and ds.tasmax.encoding["chunksizes"] == (73, 16, 16)
    v = ds.tasmax.values
    assert np.isfinite(v).all() and 220 < v.mean() < 320
    assert not parts_dir(out).exists()


def test_python_api_in_memory_equals_written_file(
    tasmax_ckpt: Path, perfect: Path, tmp_path: Path, reference: xr.Dataset
) -> None:
    res = downscale(tasmax_ckpt, [str(perfect)], tmp_path / "a.nc", chunk_days=50)
    assert res.path == tmp_path / "a.nc" and res.n_days == 365 and res.chunks_computed == 8
    same = downscale(tasmax_ckpt, [str(perfect)], chunk_days=50).dataset  # same batches: bitwise
    np.testing.assert_array_equal(res.dataset.tasmax.values, same.tasmax.values)
    # other chunking, other batch composition: equal up to float32 rounding in the convolutions
    np.testing.assert_allclose(
        res.dataset.tasmax.values, reference.tasmax.values, rtol=0, atol=1e-3
    )
    assert res.dataset.time.dt.calendar in ("standard", "proleptic_gregorian")
    res.dataset.close()


def test_time_subset(tasmax_ckpt: Path, perfect: Path, reference: xr.Dataset) -> None:
    res = downscale(tasmax_ckpt, [str(perfect)], start="1981-03-01", end="1981-03-31")
    assert res.dataset.sizes["time"] == 31
    np.testing.assert_allclose(
        res.dataset.tasmax.values,
        reference.tasmax.sel(time=slice("1981-03-01", "1981-03-31")).values,
        rtol=0,
        atol=1e-3,
    )


# ----------------------------------------------------------------------------- resume
def test_interrupted_run_leaves_no_output_and_resume_is_identical(
    tasmax_ckpt: Path, perfect: Path, tmp_path: Path
) -> None:
    out = tmp_path / "r.nc"
    uninterrupted = downscale(tasmax_ckpt, [str(perfect)], chunk_days=60).dataset
    res = downscale(tasmax_ckpt, [str(perfect)], out, chunk_days=60, max_chunks=2)
    assert (
        res.path is None and not out.exists() and len(list(parts_dir(out).glob("part-*.nc"))) == 2
    )
    # refuses to silently discard the finished chunks
    assert main(downscale_argv(tasmax_ckpt, perfect, out, "--chunk-days", "60")) == 2
    # other settings: not resumable
    assert main(downscale_argv(tasmax_ckpt, perfect, out, "--chunk-days", "30", "--resume")) == 2
    assert (
        main(downscale_argv(tasmax_ckpt, perfect, out, "--chunk-days", "60", "--resume", "-q")) == 0
    )
    with _open(out) as ds:
        np.testing.assert_array_equal(ds.tasmax.values, uninterrupted.tasmax.values)


def test_killed_process_leaves_no_file_and_resumes(
    tasmax_ckpt: Path, perfect: Path, tmp_path: Path
) -> None:
    out = tmp_path / "killed.nc"
    uninterrupted = downscale(tasmax_ckpt, [str(perfect)], chunk_days=5, batch_size=5).dataset
    argv = downscale_argv(tasmax_ckpt, perfect, out, "--chunk-days", "5", "--batch-size", "5", "-q")
    proc = subprocess.Popen(climdl_cmd(argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if len(list(parts_dir(out).glob("part-*.nc"))) >= 3:
                break
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert not out.exists(), "a killed run must leave no file under the output name"
    assert main([*argv, "--resume"]) == 0
    with _open(out) as ds:
        np.testing.assert_array_equal(ds.tasmax.values, uninterrupted.tasmax.values)


def test_existing_output_needs_overwrite(
    tasmax_ckpt: Path, perfect: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "o.nc"
    out.write_text("keep me")
    assert main(downscale_argv(tasmax_ckpt, perfect, out, "-q")) == 2
    assert "--overwrite" in capsys.readouterr().err and out.read_text() == "keep me"
    assert main(downscale_argv(tasmax_ckpt, perfect, out, "-q", "--overwrite")) == 0
    assert _open(out).sizes["time"] == 365


# ----------------------------------------------------------------------------- input variants
def _variant(src: Path, out: Path, how: str) -> Path:
    ds = xr.open_dataset(src)
    if how == "descending_lat":
        ds = ds.isel(lat=slice(None, None, -1))
    elif how == "lon_0_360":
        ds = ds.assign_coords(lon=np.mod(ds.lon.values, 360.0)).sortby("lon")
    elif how == "packed":
        for name in list(ds.data_vars):
            lo, hi = float(ds[name].min()), float(ds[name].max())
            scale = (hi - lo) / 60000.0
            ds[name].encoding = {
                "dtype": "int16",
                "scale_factor": scale,
                "add_offset": lo + 30000.0 * scale,
                "_FillValue": np.int16(-32767),
            }
    elif how == "global_grid":  # a global 2.5-degree GCM grid, 0..360, north to south
        lat = np.arange(88.75, -90.0, -2.5)
        lon = np.arange(1.25, 360.0, 2.5)
        ds = ds.assign_coords(lon=ds.lon.values.astype(float))
        ext = ds.interp(
            lat=lat[(lat > 20) & (lat < 70)],
            lon=np.where(lon > 180, lon - 360, lon),
            kwargs={"fill_value": "extrapolate"},
        )
        ds = ext.reindex(lat=lat).assign_coords(lon=lon).sortby("lon")
        ds = ds.fillna(ds.mean(("lat", "lon")))  # far away: never used by the regridding
    ds.to_netcdf(out)
    return out


@pytest.mark.parametrize("how", ["descending_lat", "lon_0_360", "packed"])
def test_same_grid_variants_match_reference(
    how: str, tasmax_ckpt: Path, perfect: Path, tmp_path: Path, reference: xr.Dataset
) -> None:
    path = _variant(perfect, tmp_path / f"{how}.nc", how)
    res = downscale(tasmax_ckpt, [str(path)])
    assert "selected" in res.grid
    diff = np.abs(res.dataset.tasmax.values - reference.tasmax.values).max()
    assert diff < (0.05 if how == "packed" else 1e-4)


@pytest.mark.parametrize("method", ["conservative", "bilinear"])
def test_other_coarse_grid_is_regridded(
    method: str, tasmax_ckpt: Path, perfect: Path, tmp_path: Path, reference: xr.Dataset
) -> None:
    path = _variant(perfect, tmp_path / "global.nc", "global_grid")
    res = downscale(tasmax_ckpt, [str(path)], regrid=method)  # type: ignore[arg-type]
    assert method in res.grid
    got, ref = res.dataset.tasmax.values, reference.tasmax.values
    assert np.isfinite(got).all()
    assert np.abs(got.mean() - ref.mean()) < 2.0
    assert np.corrcoef(got.ravel(), ref.ravel())[0, 1] > 0.95


# ----------------------------------------------------------------------------- formats
def test_mlbench_layout_with_two_checkpoints(
    tasmax_ckpt: Path, pr_ckpt: Path, tmp_path: Path, use_sample_cache: Path
) -> None:
    from climdl.data.grids import target_grid

    catalog = "--catalog sample-alps --period historical --kind imperfect --gcm MPI-ESM-LR"
    options = [*catalog.split(), "--format", "mlbench", "-q"]
    rc = main(downscale_argv([tasmax_ckpt, pr_ckpt], [], tmp_path, *options))
    assert rc == 0
    out = (
        tmp_path
        / "ALPS_Domain"
        / "Emulator_hist_future"
        / "historical"
        / "imperfect"
        / "Predictions_pr_tasmax_MPI-ESM-LR_1981-2000.nc"
    )
    assert out.is_file()
    ds = _open(out)
    assert set(ds.data_vars) == {"pr", "tasmax"}
    assert ds.pr.attrs["units"] == "mm/day" and ds.tasmax.attrs["units"] == "K"
    assert (ds.pr.values >= 0).all()
    grid = target_grid("ALPS")
    np.testing.assert_allclose(ds.x.values, grid.x.values)
    np.testing.assert_allclose(ds.lon.values, grid.lon.values)
    assert ds.tasmax.dims == ("time", "y", "x") and "time_bnds" not in ds.variables


def test_baseline_output(tasmax_ckpt: Path, perfect: Path, reference: xr.Dataset) -> None:
    res = downscale(tasmax_ckpt, [str(perfect)], emulator_output="baseline")
    base = res.dataset.tasmax.values
    assert np.isfinite(base).all() and not np.allclose(base, reference.tasmax.values)
    assert abs(base.mean() - reference.tasmax.values.mean()) < 5.0


# ----------------------------------------------------------------------------- errors
def _nan_input(src: Path, out: Path) -> Path:
    ds = xr.open_dataset(src).load()
    ds["t_850"][10, 3, 4] = np.nan
    ds.to_netcdf(out)
    return out


def _missing_var(src: Path, out: Path) -> Path:
    xr.open_dataset(src).drop_vars("q_500").to_netcdf(out)
    return out


def _small_domain(src: Path, out: Path) -> Path:
    xr.open_dataset(src).isel(lat=slice(0, 8)).interp(lat=np.arange(29.0, 44.0, 1.5)).to_netcdf(out)
    return out


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_nan_input, "missing or non-finite value(s) in t_850"),
        (_missing_var, "q_500 not found"),
        (_small_domain, "does not cover the training domain"),
    ],
)
def test_predictable_mistakes_give_one_clear_line(
    make,
    message: str,
    tasmax_ckpt: Path,
    perfect: Path,  # type: ignore[no-untyped-def]
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bad = make(perfect, tmp_path / "bad.nc")
    out = tmp_path / "out.nc"
    assert main(downscale_argv(tasmax_ckpt, bad, out, "-q")) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_checkpoint_and_option_errors(
    tmp_path: Path, perfect: Path, tasmax_ckpt: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint")
    out = tmp_path / "o.nc"
    assert main(downscale_argv(junk, perfect, out)) == 2
    assert "not a readable climdl checkpoint" in capsys.readouterr().err
    assert main(downscale_argv([tasmax_ckpt, tasmax_ckpt], perfect, out)) == 2
    assert "one checkpoint per target" in capsys.readouterr().err
    assert main(downscale_argv(tasmax_ckpt, perfect, tmp_path / "o.txt")) == 2
    assert ".nc file" in capsys.readouterr().err
    assert main(downscale_argv(tasmax_ckpt, perfect, out, "--start", "1990-01-01")) == 2
    assert "no predictor day" in capsys.readouterr().err
    for option, said in [
        (["--start", "1981-13-01"], "--start 1981-13-01: not a date of the predictors' calendar"),
        (["--end", "notadate"], "--end notadate: not a date"),
        (["--min-coverage", "2"], "--min-coverage must lie between 0 and 1"),
        (["--min-coverage", "nan"], "--min-coverage must lie between 0 and 1"),
        (["--forcing", str(tmp_path / "none.csv")], "none.csv does not exist"),
        (["--forcing", str(tmp_path)], "is not a readable CSV forcing table"),
    ]:
        assert main(downscale_argv(tasmax_ckpt, perfect, out, *option)) == 2
        err = capsys.readouterr().err
        assert said in err and len(err.strip().splitlines()) == 1, err
    # paths of the wrong shape, and the input itself as the output (even with --overwrite)
    assert main(downscale_argv(tasmax_ckpt, perfect, tmp_path / "junk.ckpt" / "o.nc")) == 2
    assert f"{junk} is a file, not a folder" in capsys.readouterr().err
    copy = tmp_path / "in.nc"
    copy.write_bytes(perfect.read_bytes())
    assert main(downscale_argv(tasmax_ckpt, copy, copy, "--overwrite")) == 2
    assert "is one of the inputs" in capsys.readouterr().err
    assert copy.read_bytes() == perfect.read_bytes()
    if not __import__("torch").cuda.is_available():
        assert main(downscale_argv(tasmax_ckpt, perfect, out, "--device", "cuda")) == 2
        assert "no CUDA device" in capsys.readouterr().err


def test_sa_checkpoint_on_alps_inputs_is_refused(
    tmp_path: Path, perfect: Path, tasmax_ckpt: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A checkpoint whose domain lies elsewhere (here: both grids moved 60 degrees south)."""
    import torch

    ckpt = torch.load(tasmax_ckpt, map_location="cpu", weights_only=True)
    for grid in ("coarse_grid", "target_grid"):
        ckpt["climdl"]["spec"][grid]["lat"]["values"] -= 60.0
    moved = tmp_path / "moved.ckpt"
    torch.save(ckpt, moved)
    assert main(downscale_argv(moved, perfect, tmp_path / "o.nc")) == 2
    assert "does not cover the training domain" in capsys.readouterr().err


@pytest.mark.distributed
def test_two_ranks_split_the_chunks_into_one_identical_file(
    tasmax_ckpt: Path, perfect: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ddp.nc"
    single = downscale(tasmax_ckpt, [str(perfect)], chunk_days=40).dataset
    import torch

    # torchrun would set one thread per rank; the same thread count as here gives bitwise equality
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))
    torchrun = ["--nproc-per-node", "2", "--master-port", "29531"]
    cmd = torchrun_cmd(
        torchrun, downscale_argv(tasmax_ckpt, perfect, out, "--chunk-days", "40", "-q")
    )
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with _open(out) as ds:
        np.testing.assert_array_equal(ds.tasmax.values, single.tasmax.values)


@pytest.mark.distributed
def test_dask_local_cluster_gives_the_in_process_output(
    tasmax_ckpt: Path, perfect: Path, tmp_path: Path
) -> None:
    out = tmp_path / "dask.nc"
    single = downscale(tasmax_ckpt, [str(perfect)], chunk_days=60).dataset
    argv = downscale_argv(tasmax_ckpt, perfect, out, "--chunk-days", "60", "--workers", "2", "-q")
    assert main(argv) == 0
    with _open(out) as ds:
        np.testing.assert_array_equal(ds.tasmax.values, single.tasmax.values)
        assert ds.sizes["time"] == 365 and not parts_dir(out).exists()


@pytest.mark.parametrize("address", ["8786", "tcp://host:notaport"])
def test_malformed_dask_scheduler_is_one_line_before_any_work(
    address: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Checked before the checkpoint is loaded: no parts folder, and 8786 is not a worker count."""
    out = tmp_path / "o.nc"
    argv = downscale_argv(
        tmp_path / "none.ckpt", tmp_path / "none.nc", out, "--dask-scheduler", address, "-q"
    )
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("climdl: error: ") and "\n" not in err and "Traceback" not in err
    assert ("--workers N" if address.isdigit() else "tcp://HOST:PORT") in err
    assert list(tmp_path.iterdir()) == [] and not parts_dir(out).exists()
