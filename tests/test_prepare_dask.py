"""``climdl prepare`` on Dask, and the statistics merge it relies on."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import dask
import numpy as np
import pytest
import torch
import xarray as xr
from test_prepare import latlon_fine

from climdl.cli import main
from climdl.data._prepare_io import coarse_from_dataset
from climdl.data.prepare import covered_coarse_grid
from climdl.data.prepare_dask import BlockSource, run_blocks
from climdl.data.reader import open_dataset
from climdl.errors import DataError
from climdl.preprocess import StreamingStats


def _prepare_args(src: Path, out: Path, stats: Path) -> list[str]:
    return ["prepare", str(src), "--out", str(out), "--stats", str(stats), "--coarse-grid",
            "covered", "--smoothing", "3", "--chunk-days", "7", "--train-period", "2000-01-04",
            "2000-01-30", "--device", "cpu", "-q"]  # fmt: skip


@pytest.mark.distributed
def test_dask_local_cluster_gives_the_in_process_output(tmp_path: Path) -> None:
    src = latlon_fine(tmp_path / "fine.nc", n=40)
    with xr.open_dataset(src) as ds:  # NaNs in one block: the NaN-aware remapping and stats
        fine = ds.load()
    fine["pr"][9, :5, :7] = np.nan
    fine.to_netcdf(src := tmp_path / "fine_nan.nc")
    one, many = tmp_path / "one", tmp_path / "many"
    assert main(_prepare_args(src, one / "o.nc", one / "s.json")) == 0
    assert main([*_prepare_args(src, many / "o.nc", many / "s.json"), "--workers", "2"]) == 0
    with xr.open_dataset(one / "o.nc") as a, xr.open_dataset(many / "o.nc") as b:
        assert a.sizes["time"] == 40 and set(a.data_vars) >= {"tasmax", "pr", "climdl_coverage"}
        for name in ("tasmax", "pr", "climdl_coverage", "time", "lat_bnds", "lon_bnds"):
            np.testing.assert_array_equal(b[name].values, a[name].values)
        assert not np.isnan(a["pr"].values).any()  # NaN sources renormalised away
    sa, sb = (json.loads((d / "s.json").read_text()) for d in (one, many))
    for which in ("coarse", "fine"):
        for name in ("tasmax", "pr"):
            x, y = sa[which][name], sb[which][name]
            assert y["count"] == x["count"]
            assert y["mean"] == pytest.approx(x["mean"], rel=1e-10)
            assert y["std"] == pytest.approx(x["std"], rel=1e-10)
    assert sb["period"] == sa["period"] == ["2000-01-04", "2000-01-30"]
    assert sb["fine"]["pr"]["count"] == 27 * 32 * 40 - 5 * 7  # the NaNs left out
    assert sorted(p.name for p in many.iterdir()) == ["o.nc", "s.json"]


def test_merged_partial_stats_equal_the_stats_of_all_data() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(5.0, 2.0, (50, 3, 4, 5))
    x[rng.random(x.shape) < 0.2] = np.nan
    x[:, 2, 0, 0] = 1e6 + rng.normal(0.0, 1e-3, 50)  # a large mean: cancellation would show
    x[:, 1] = np.nan  # a channel with no valid value at all
    parts = [x[:7], x[7:8], x[8:30], x[30:]]
    whole = StreamingStats(channel_dim=1)
    whole.update(torch.from_numpy(x))
    merged, in_order = StreamingStats(channel_dim=1), StreamingStats(channel_dim=1)
    for part in parts:
        in_order.update(torch.from_numpy(part))
        acc = StreamingStats(channel_dim=1)
        acc.update(torch.from_numpy(part))
        merged.merge(acc)
    merged.merge(StreamingStats(channel_dim=1))  # nothing accumulated: no change
    # a tree of merges (as from workers finishing in any order) agrees to rounding
    left, right = StreamingStats(channel_dim=1), StreamingStats(channel_dim=1)
    left.update(torch.from_numpy(parts[0]))
    left.update(torch.from_numpy(parts[1]))
    right.update(torch.from_numpy(parts[3]))
    right.update(torch.from_numpy(parts[2]))
    right.merge(left)
    ref = np.moveaxis(x, 1, -1).reshape(-1, 3)
    for acc in (merged, right):
        r = acc.result()
        np.testing.assert_array_equal(r.count.numpy(), (~np.isnan(ref)).sum(0))
        np.testing.assert_array_equal(r.nan_count.numpy(), np.isnan(ref).sum(0))
        with np.errstate(invalid="ignore"), pytest.warns(RuntimeWarning):
            mean, std = np.nanmean(ref, 0), np.nanstd(ref, 0)
        np.testing.assert_allclose(r.mean.numpy(), mean, rtol=1e-12, equal_nan=True)
        np.testing.assert_allclose(r.std.numpy(), std, rtol=1e-10, equal_nan=True)
        assert bool(r.mean[1].isnan()) and bool(r.std[1].isnan())
    # merging the per-chunk accumulators in chunk order is updating one in that order
    a, b = merged.result(), in_order.result()
    for stat in ("mean", "std", "count", "nan_count"):
        torch.testing.assert_close(
            getattr(a, stat), getattr(b, stat), rtol=0, atol=0, equal_nan=True
        )
    other = StreamingStats("log1p_standard", channel_dim=1)
    other.update(torch.from_numpy(np.abs(parts[0])))
    with pytest.raises(Exception, match="kinds"):
        merged.merge(other)


@pytest.mark.distributed
def test_worker_errors_are_one_clear_error(tmp_path: Path) -> None:
    from distributed import Client, LocalCluster

    src = latlon_fine(tmp_path / "fine.nc", n=4)
    with open_dataset(src) as ds:
        coarse = coarse_from_dataset(covered_coarse_grid(ds), "the grid")
    good = BlockSource(
        run="test", files=(str(src),), names=("tasmax",), n_times=4, coarse=coarse, subcells=8,
        smoothing=0, device="cpu", chunk_days=2, torch_threads=1,
    )  # fmt: skip
    bounds, taken = [(0, 2), (2, 4)], []
    with (
        LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        run_blocks(client, good, bounds, slice(0, 4), taken.append)
        assert [b.start for b in taken] == [0, 2] and taken[1].values.shape[:2] == (2, 1)
        missing = replace(good, run="missing", files=(str(tmp_path / "gone.nc"),))
        with pytest.raises(DataError, match="does not exist"):  # climdl's own errors as they are
            run_blocks(client, missing, bounds, slice(0, 4), taken.append)
        broken = replace(good, run="broken", coarse=None)
        with pytest.raises(DataError, match=r"^a Dask worker failed on time steps 0 to 1 \(Attr"):
            run_blocks(client, broken, bounds[:1], slice(0, 4), taken.append)
    assert len(taken) == 2


def test_unreachable_scheduler_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = latlon_fine(tmp_path / "fine.nc", n=4)
    out = tmp_path / "out" / "o.nc"
    start = time.perf_counter()
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        rc = main(["prepare", str(src), "--out", str(out), "--coarse-grid", "covered",
                   "--stats", str(tmp_path / "out" / "s.json"), "--dask-scheduler",
                   "tcp://127.0.0.1:1", "-q"])  # fmt: skip
    assert rc == 2 and time.perf_counter() - start < 20
    err = capsys.readouterr().err.strip()
    assert err.startswith("climdl: error: cannot reach the Dask scheduler at tcp://127.0.0.1:1")
    assert "\n" not in err and "Traceback" not in err
    assert not out.exists() and not (tmp_path / "out").exists()


def test_workers_and_scheduler_are_exclusive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(
            ["prepare", "f.nc", "--out", "o.nc", "--workers", "2", "--dask-scheduler", "tcp://h:1"]
        )
    assert exc.value.code == 2 and "not allowed with" in capsys.readouterr().err
