"""``climdl downscale -o out.zarr``: the NetCDF output's content as a consolidated Zarr store,
streamed or joined, atomic under SIGKILL and resumable; Zarr predictors in; bad stores out."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from climdl.cli import main
from climdl.inference import downscale
from climdl.inference.parts import lock_path, parts_dir
from climdl.parallel.testing import climdl_cmd
from tests.argv import downscale_argv

DECODE = xr.coders.CFDatetimeCoder(use_cftime=True)


def _open(path: Path) -> xr.Dataset:
    engine = {"engine": "zarr", "consolidated": True} if path.suffix == ".zarr" else {}
    return xr.open_dataset(path, decode_times=DECODE, decode_coords="all", **engine).load()


def _no_history(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` without its ``history`` (stamped with the time of the run and the command)."""
    ds.attrs.pop("history", None)
    return ds


def _nothing_beside(out: Path) -> list[Path]:
    """Hidden leftovers of ``out``'s run: parts folder, lock, temporary stores."""
    return sorted(out.parent.glob(f".{out.name}*"))


@pytest.fixture(scope="module")
def perfect(sample_root: Path) -> Path:
    return sample_root / "test" / "historical" / "predictors" / "perfect" / "CNRM-CM5_1981-2000.nc"


@pytest.fixture(scope="module")
def netcdf_run(tasmax_ckpt: Path, perfect: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The NetCDF output of the CLI (chunks of 100 days, streamed) to compare with."""
    out = tmp_path_factory.mktemp("nc") / "tasmax.nc"
    assert main(downscale_argv(tasmax_ckpt, perfect, out, "--chunk-days", "100", "-q")) == 0
    return out


# ----------------------------------------------------------------------------- round trip
def test_zarr_output_is_the_netcdf_output(
    tasmax_ckpt: Path,
    perfect: Path,
    netcdf_run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "tasmax.zarr"
    capsys.readouterr()
    assert main(downscale_argv(tasmax_ckpt, perfect, out, "--chunk-days", "100")) == 0
    assert capsys.readouterr().out.strip() == str(out)
    nc, store = _open(netcdf_run), _open(out)
    assert "climdl downscale" in store.attrs["history"] and str(out) in store.attrs["history"]
    xr.testing.assert_identical(_no_history(store), _no_history(nc))
    for name in nc.variables:  # the same CF encoding: units, calendar, fill values
        for key in ("units", "calendar", "_FillValue", "dtype", "coordinates", "grid_mapping"):
            assert str(store[name].encoding.get(key)) == str(nc[name].encoding.get(key)), name
    assert store.time.encoding["units"] == "days since 1949-12-01"
    assert store.tasmax.encoding["chunks"] == nc.tasmax.encoding["chunksizes"] == (73, 16, 16)
    assert store.tasmax.encoding["compressors"], "the store is compressed"
    meta = json.loads((out / ".zmetadata").read_text())  # consolidated, Zarr format 2
    assert meta["metadata"]["tasmax/.zarray"]["zarr_format"] == 2
    assert meta["metadata"]["tasmax/.zarray"]["compressor"]["cname"] == "zstd"
    assert _nothing_beside(out) == [], "no parts folder, lock or temporary store is left"


def test_joined_store_equals_streamed_and_resumes(
    tasmax_ckpt: Path, perfect: Path, netcdf_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "r.zarr"
    res = downscale(tasmax_ckpt, [str(perfect)], out, chunk_days=100, max_chunks=2)
    assert res.path is None and not out.exists()
    assert len(list(parts_dir(out).glob("part-*.nc"))) == 2
    # refuses to silently discard the finished chunks; other settings are not resumable
    assert main(downscale_argv(tasmax_ckpt, perfect, out, "--chunk-days", "100")) == 2
    assert main(downscale_argv(tasmax_ckpt, perfect, out, "--chunk-days", "50", "--resume")) == 2
    resumed = downscale(tasmax_ckpt, [str(perfect)], out, chunk_days=100, resume=True)
    assert resumed.chunks_resumed == 2 and resumed.chunks_computed == 2
    assert resumed.dataset.tasmax.encoding["chunks"] == (73, 16, 16)
    resumed.dataset.close()
    # the join (parts read back) writes what the streamed run wrote, value for value
    xr.testing.assert_identical(_no_history(_open(out)), _no_history(_open(netcdf_run)))
    assert _nothing_beside(out) == []


def test_existing_store_needs_overwrite_and_is_replaced_whole(
    tasmax_ckpt: Path, perfect: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "o.zarr"
    xr.Dataset({"stale": ("t", np.arange(3))}).to_zarr(out, zarr_format=2, consolidated=True)
    argv = downscale_argv(tasmax_ckpt, perfect, out, "--end", "1981-01-20", "-q")
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "already exists" in err and "--overwrite" in err and "\n" not in err
    assert (out / "stale").is_dir(), "a refused run leaves the existing output alone"
    assert main([*argv, "--overwrite"]) == 0
    replaced = _open(out)
    assert "stale" not in replaced and replaced.sizes["time"] == 20
    assert _nothing_beside(out) == []
    # a folder that is not a store is never removed, even with --overwrite
    data = tmp_path / "data.zarr"
    data.mkdir()
    (data / "thesis.tex").write_text("years of work")
    capsys.readouterr()
    assert (
        main(downscale_argv(tasmax_ckpt, perfect, data, "--end", "1981-01-20", "--overwrite")) == 2
    )
    err = capsys.readouterr().err.strip()
    assert "not a Zarr store" in err and "\n" not in err
    assert (data / "thesis.tex").read_text() == "years of work" and _nothing_beside(data) == []


# ----------------------------------------------------------------------------- kill -9
def test_killed_process_leaves_no_store_and_resumes(
    tasmax_ckpt: Path, perfect: Path, tmp_path: Path
) -> None:
    out = tmp_path / "killed.zarr"
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
    assert not out.exists(), "a killed run must leave nothing under the output name"
    # the streamed store grew inside the parts folder: it goes with it
    assert (parts_dir(out) / "output.zarr.tmp").is_dir()
    assert main([*argv, "--resume"]) == 0
    with xr.open_zarr(out, decode_times=DECODE) as ds:
        np.testing.assert_array_equal(ds.tasmax.values, uninterrupted.tasmax.values)
    assert _nothing_beside(out) == []


# ----------------------------------------------------------------------------- Zarr in
def test_zarr_predictors_give_the_netcdf_predictions(
    tasmax_ckpt: Path, perfect: Path, netcdf_run: Path, tmp_path: Path
) -> None:
    store = tmp_path / "predictors.zarr"
    with xr.open_dataset(perfect, decode_times=DECODE) as ds:
        ds.load().to_zarr(store, mode="w", zarr_format=2, consolidated=True)
    out = tmp_path / "from_zarr.nc"
    assert main(downscale_argv(tasmax_ckpt, store, out, "--chunk-days", "100", "-q")) == 0
    got, expected = _open(out), _open(netcdf_run)
    np.testing.assert_array_equal(got.tasmax.values, expected.tasmax.values)
    assert got.attrs["input_files"] == str(store.resolve())
    # a resumed run fingerprints the store like a file: unchanged, it resumes
    again, kw = tmp_path / "again.nc", {"end": "1981-02-28", "chunk_days": 30}
    res = downscale(tasmax_ckpt, [str(store)], again, max_chunks=1, **kw)  # type: ignore[arg-type]
    assert res.path is None
    res = downscale(tasmax_ckpt, [str(store)], again, resume=True, **kw)  # type: ignore[arg-type]
    assert res.chunks_resumed == 1 and res.chunks_computed == 1
    res.dataset.close()


def test_bad_store_input_exits_2_and_writes_nothing(
    tasmax_ckpt: Path, perfect: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.zarr"
    with xr.open_dataset(perfect, decode_times=DECODE) as ds:
        ds.isel(time=slice(0, 3)).load().to_zarr(good, mode="w", zarr_format=2)
    empty = tmp_path / "empty.zarr"
    empty.mkdir()
    junk = tmp_path / "junk.zarr"
    junk.mkdir()
    (junk / "readme.txt").write_text("not a store")
    corrupt = shutil.copytree(good, tmp_path / "corrupt.zarr")
    (corrupt / ".zmetadata").write_bytes(b"\x00\x01 truncated")
    for bad in (empty, junk, corrupt):
        for out in (tmp_path / "out.zarr", tmp_path / "out.nc"):
            capsys.readouterr()
            assert main(downscale_argv(tasmax_ckpt, bad, out, "-q")) == 2, bad
            err = capsys.readouterr().err.strip()
            assert str(bad) in err and "Zarr store" in err and "\n" not in err, err
            assert not out.exists() and _nothing_beside(out) == [], (bad, out)


def test_zarr_output_refused_for_the_netcdf_only_layouts(
    tasmax_ckpt: Path, perfect: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sub.zarr"
    assert main(downscale_argv(tasmax_ckpt, perfect, out, "--format", "mlbench", "-q")) == 2
    err = capsys.readouterr().err.strip()
    assert "NetCDF" in err and "\n" not in err
    assert not out.exists() and _nothing_beside(out) == []
    assert not lock_path(out).exists()


# ----------------------------------------------------------------------------- ensembles
def test_ensemble_store_equals_the_netcdf_ensemble(
    pr_ckpt: Path, perfect: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ensemble is joined from its parts (never streamed): the member dimension, the
    realization coordinate and the one-member chunks survive the Zarr join."""
    import climdl.tasks.checkpoint as ck
    from tests.inference.test_members import STUB, _Stub

    load = ck.load_emulator  # the pr checkpoint, loaded as test_members' generative stub
    monkeypatch.setattr(
        ck,
        "load_emulator",
        lambda path, *a, **k: (
            _Stub(load(path, *a, **k)) if STUB in Path(path).name else load(path, *a, **k)
        ),
    )
    ckpt = tmp_path / f"{STUB}.ckpt"
    ckpt.write_bytes(pr_ckpt.read_bytes())
    when = {"start": "1981-03-01", "end": "1981-03-20", "chunk_days": 10}
    a = downscale(ckpt, [str(perfect)], tmp_path / "e.nc", members=3, seed=1, **when)  # type: ignore[arg-type]
    b = downscale(ckpt, [str(perfect)], tmp_path / "e.zarr", members=3, seed=1, **when)  # type: ignore[arg-type]
    a.dataset.close()
    b.dataset.close()
    nc, store = _open(tmp_path / "e.nc"), _open(tmp_path / "e.zarr")
    assert store.pr.dims[0] == "member" and store.sizes["member"] == 3
    assert store.pr.encoding["chunks"] == nc.pr.encoding["chunksizes"] == (1, 20, 16, 16)
    xr.testing.assert_identical(_no_history(store), _no_history(nc))
    assert _nothing_beside(tmp_path / "e.zarr") == []
