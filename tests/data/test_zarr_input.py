"""Zarr stores in the data layer: read wherever NetCDF is (one store, a glob of stores, both
Zarr formats), bad stores refused in one sentence with nothing written, and ``prepare``
writing a store with the NetCDF output's content, atomically."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from climdl.cli import main
from climdl.data.prepare import prepare
from climdl.data.reader import open_dataset
from climdl.errors import DataError, OutputError
from tests.data.fine_files import latlon_fine

DECODE = xr.coders.CFDatetimeCoder(use_cftime=True)


def _to_store(nc: Path, store: Path, **kw: object) -> Path:
    """``nc`` copied into a Zarr store as xarray writes it (times as in the file)."""
    with xr.open_dataset(nc, decode_times=DECODE) as ds, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # format 3's consolidated metadata: a zarr warning
        ds.load().to_zarr(store, mode="w", **kw)  # type: ignore[call-overload]
    return store


def _open(path: Path) -> xr.Dataset:
    engine = {"engine": "zarr"} if path.suffix == ".zarr" else {}
    return xr.open_dataset(path, decode_times=DECODE, decode_coords="all", **engine).load()


@pytest.mark.parametrize(
    "kw",
    [
        {"zarr_format": 2, "consolidated": True},
        {"zarr_format": 2, "consolidated": False},
        {"zarr_format": 3, "consolidated": True},
        {"zarr_format": 3, "consolidated": False},
    ],
    ids=["v2-consolidated", "v2", "v3-consolidated", "v3"],
)
def test_store_reads_as_the_netcdf_it_was_written_from(tmp_path: Path, kw: dict) -> None:
    nc = latlon_fine(tmp_path / "fine.nc", n=10, calendar="360_day")
    store = _to_store(nc, tmp_path / "fine.zarr", **kw)
    expected = open_dataset(nc).load()
    got = open_dataset(store).load()
    xr.testing.assert_identical(got, expected)
    assert got.time.dt.calendar == "360_day"


def test_glob_of_yearly_stores_combines_like_files(tmp_path: Path) -> None:
    ncs = [latlon_fine(tmp_path / f"y{y}.nc", n=5, start=y, seed=y) for y in (2001, 2002)]
    for nc in ncs:
        _to_store(nc, nc.with_suffix(".zarr"), zarr_format=2, consolidated=True)
    got = open_dataset(str(tmp_path / "y*.zarr"), time_range=("2001-01-02", "2002-01-03")).load()
    expected = open_dataset(str(tmp_path / "y*.nc"), time_range=("2001-01-02", "2002-01-03"))
    assert got.sizes["time"] == 7
    xr.testing.assert_identical(got, expected.load())


def _bad_stores(root: Path, good: Path) -> dict[str, Path]:
    """An empty folder, a folder of junk, a corrupt and an invalid .zmetadata, a file."""
    (root / "empty.zarr").mkdir()
    (root / "junk.zarr").mkdir()
    (root / "junk.zarr" / "notes.txt").write_text("not zarr")
    corrupt = shutil.copytree(good, root / "corrupt.zarr")
    (corrupt / ".zmetadata").write_text('{"metadata": {"tasmax/.zarray": ')
    invalid = shutil.copytree(good, root / "invalid.zarr")
    (invalid / ".zmetadata").write_text('{"metadata": 3, "zarr_consolidated_format": 1}')
    (root / "file.zarr").write_bytes(b"CDF\x01 not a store")
    return {p.stem: p for p in root.glob("*.zarr") if p != good}


def test_bad_stores_are_one_sentence(tmp_path: Path) -> None:
    good = _to_store(latlon_fine(tmp_path / "f.nc", n=3), tmp_path / "good.zarr", zarr_format=2)
    bad = _bad_stores(tmp_path, good)
    assert sorted(bad) == ["corrupt", "empty", "file", "invalid", "junk"]
    for name, path in bad.items():
        with pytest.raises(DataError) as info:
            open_dataset(path)
        message = str(info.value)
        assert str(path) in message and "Zarr store" in message, name
        assert "\n" not in message and message.endswith("."), name
    with pytest.raises(DataError, match="is a folder, not a file or a Zarr store"):
        open_dataset(tmp_path)  # a plain folder (no .zarr suffix, no Zarr metadata)


def test_bad_store_through_the_cli_exits_2_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = _to_store(latlon_fine(tmp_path / "f.nc", n=3), tmp_path / "good.zarr", zarr_format=2)
    bad_root = tmp_path / "bad"
    bad_root.mkdir()
    for name, path in _bad_stores(bad_root, good).items():
        out = tmp_path / f"out-{name}.zarr"
        capsys.readouterr()
        assert main(["prepare", str(path), "--out", str(out), "--device", "cpu"]) == 2, name
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "Zarr store" in err and "Traceback" not in err, name
        assert not out.exists() and not list(tmp_path.glob(".out-*")), name


# ----------------------------------------------------------------------------- prepare
def test_prepare_to_zarr_equals_prepare_to_netcdf(tmp_path: Path) -> None:
    src = latlon_fine(tmp_path / "fine.nc", n=40, calendar="noleap")
    kw = {"coarse_grid": "covered", "chunk_days": 15, "smoothing": 3, "device": "cpu"}
    nc = prepare(src, tmp_path / "out.nc", **kw)  # type: ignore[arg-type]
    store = prepare(src, tmp_path / "out.zarr", **kw)  # type: ignore[arg-type]
    a, b = _open(nc.path), _open(store.path)
    for ds in (a, b):
        ds.attrs.pop("history")  # stamped with the time of the run
    xr.testing.assert_identical(b, a)
    for name in a.variables:
        for key in ("units", "calendar", "_FillValue", "dtype", "coordinates"):
            assert str(b[name].encoding.get(key)) == str(a[name].encoding.get(key)), (name, key)
    assert b.tasmax.encoding["chunks"] == a.tasmax.encoding["chunksizes"] == (15, 4, 5)
    assert b.tasmax.encoding["compressors"], "the fields are compressed"
    assert np.isnan(b.tasmax.encoding["_FillValue"])
    assert (tmp_path / "out.zarr" / ".zmetadata").is_file()
    assert store.stats.coarse == nc.stats.coarse
    # the store is input for the reader like the NetCDF file
    again = [open_dataset(r.path).load().drop_attrs(deep=False) for r in (store, nc)]
    xr.testing.assert_identical(*again)
    assert not list(tmp_path.glob(".*"))


def test_prepare_store_is_atomic_and_needs_overwrite(tmp_path: Path) -> None:
    src = latlon_fine(tmp_path / "fine.nc", n=20)
    out = tmp_path / "out.zarr"

    def boom(done: int, total: int) -> None:
        raise KeyboardInterrupt  # an interrupted run, after its first block

    with pytest.raises(KeyboardInterrupt):
        prepare(src, out, coarse_grid="covered", chunk_days=5, progress=boom, device="cpu")
    assert not out.exists() and not list(tmp_path.glob(".out.zarr*"))
    first = _open(prepare(src, out, coarse_grid="covered", chunk_days=5, device="cpu").path)
    with pytest.raises(OutputError, match="already exists"):
        prepare(src, out, coarse_grid="covered", device="cpu")
    other = latlon_fine(tmp_path / "other.nc", n=20, seed=7)
    prepare(other, out, coarse_grid="covered", device="cpu", overwrite=True)
    replaced = _open(out)
    assert replaced.attrs["climdl_input_files"] == str(other)
    assert not np.array_equal(replaced.tasmax.values, first.tasmax.values)
    folder = tmp_path / "folder.zarr"  # not a store: never replaced, refused before any work
    folder.mkdir()
    (folder / "keep.txt").write_text("user data")
    with pytest.raises(OutputError, match="not a Zarr store"):
        prepare(src, folder, coarse_grid="covered", device="cpu", overwrite=True)
    assert (folder / "keep.txt").is_file() and not list(tmp_path.glob(".folder.zarr*"))
    assert not list(tmp_path.glob(".out.zarr*"))
