"""``climdl prepare`` on Dask, and the statistics merge it relies on."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pytest
import torch
import xarray as xr

from climdl.cli import main
from climdl.dask_cluster import client_for
from climdl.data import prepare_dask
from climdl.data._prepare_io import coarse_from_dataset
from climdl.data.prepare import prepare
from climdl.data.prepare_dask import BlockSource, run_blocks, window
from climdl.data.prepare_grids import covered_coarse_grid
from climdl.data.reader import open_dataset
from climdl.data.upscale import UpscaledBlock
from climdl.errors import ConfigError, DataError
from climdl.inference import dask_run
from climdl.preprocess import StreamingStats
from tests.data.fine_files import latlon_fine


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


# ----------------------------------------------------------------------------- bad addresses
BAD_ADDRESSES = ["localhost", "tcp://host:notaport", "http://localhost:8786", "8786"]


@pytest.mark.parametrize("address", BAD_ADDRESSES)
def test_malformed_scheduler_address_is_a_one_line_error(
    address: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = latlon_fine(tmp_path / "fine.nc", n=4)
    out = tmp_path / "out" / "o.nc"
    start = time.perf_counter()
    rc = main(["prepare", str(src), "--out", str(out), "--coarse-grid", "covered",
               "--stats", str(tmp_path / "out" / "s.json"), "--dask-scheduler", address, "-q"])  # fmt: skip
    assert rc == 2 and time.perf_counter() - start < 10  # nothing contacted, nothing waited for
    err = capsys.readouterr().err.strip()
    assert err.startswith("climdl: error: ") and "\n" not in err and "Traceback" not in err
    if address.isdigit():  # not N local workers: an address was asked for
        assert "give the scheduler's address, e.g. tcp://HOST:8786" in err and "--workers N" in err
    else:
        assert repr(address) in err and "tcp://HOST:PORT" in err
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match="tcp://HOST"):  # the library refuses them too
        prepare(src, out, coarse_grid="covered", scheduler=address)
    assert not (tmp_path / "out").exists()


def test_only_an_int_is_a_worker_count() -> None:
    with pytest.raises(ConfigError, match="--workers N"), client_for("2"):
        pass  # pragma: no cover - never reached
    with pytest.raises(ConfigError, match="at least 1"), client_for(0):
        pass  # pragma: no cover - never reached


# ----------------------------------------------------------------------------- worker caches
class _FakeDataset:
    """Counts its users and closes; notes any use of a closed one and any close while in use."""

    def __init__(self, key: str) -> None:
        self.key, self.users, self.closes, self.bad = key, 0, 0, list[str]()
        self.sizes = {"time": 4}
        self.go = threading.Event()  # a read waits for it once cleared
        self.go.set()
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            if self.users:
                self.bad.append(f"{self.key} closed while {self.users} task(s) read it")
            self.closes += 1

    def read(self) -> None:
        with self._lock:
            self.users += 1
            if self.closes:
                self.bad.append(f"{self.key} read after its close")
        time.sleep(0.01)
        self.go.wait(10)
        with self._lock:
            self.users -= 1
            if self.closes:
                self.bad.append(f"{self.key} closed during a read")


def _open_fake(opened: list[_FakeDataset], key: str) -> _FakeDataset:
    time.sleep(0.03)  # threads of one run starting together all find no cached dataset
    ds = _FakeDataset(key)
    opened.append(ds)
    return ds


def _hammer(task: Callable[[str], object], release: Callable[[str | None], None],
            opened: list[_FakeDataset]) -> None:  # fmt: skip
    """Tasks of two runs on 8 threads of one worker process, releases as a client sends them."""
    a, b = f"A-{id(opened)}", f"B-{id(opened)}"
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(task, [a, b] * 8))  # two runs at once, threads of each starting together
        assert sorted(d.key for d in opened) == [a, b]  # one dataset per run, none lost
        assert [d.closes for d in opened] == [0, 0]  # a new run closes no other run's files
        ds_a, ds_b = sorted(opened, key=lambda d: d.key)
        ds_a.go.clear()
        late = pool.submit(task, a)
        deadline = time.monotonic() + 10
        while not ds_a.users and time.monotonic() < deadline:
            time.sleep(0.001)
        release(a)  # the end of run A while a task of A still reads
        assert ds_a.users == 1 and ds_a.closes == 0
        ds_a.go.set()
        late.result()
        assert (ds_a.closes, ds_b.closes) == (1, 0)  # closed by its last user
        pool.submit(task, b).result()
        release(b)
        pool.submit(task, a).result()  # a task of A cancelled too late: its own dataset, closed
    release(None)
    assert sorted(d.key for d in opened) == [a, a, b]
    assert [d.closes for d in opened] == [1, 1, 1]  # every dataset opened is closed once
    assert [bad for d in opened for bad in d.bad] == []


def test_worker_upscalers_are_shared_by_threads_and_closed_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    opened: list[_FakeDataset] = []

    class FakeUpscaler:
        def __init__(self, ds: _FakeDataset) -> None:
            self.ds = ds

        @classmethod
        def build(cls, ds: _FakeDataset, *args: Any, **kwargs: Any) -> FakeUpscaler:
            return cls(ds)

        def block(self, start: int, stop: int, train: slice) -> int:
            self.ds.read()
            return start

    def open_fine(files: tuple[str, ...], names: tuple[str, ...], chunk_days: int) -> Any:
        return _open_fake(opened, files[0]), None, ("y", "x"), list(names)

    monkeypatch.setattr(prepare_dask, "open_fine", open_fine)
    monkeypatch.setattr(prepare_dask, "Upscaler", FakeUpscaler)

    def task(run: str) -> object:
        source = BlockSource(
            run=run, files=(run,), names=("tasmax",), n_times=4, coarse=None, subcells=1,
            smoothing=0, device="cpu", chunk_days=2, torch_threads=torch.get_num_threads(),
        )  # type: ignore[arg-type]  # fmt: skip
        return prepare_dask.run_block(source, 0, 2, 0, 4)

    _hammer(task, prepare_dask.release, opened)


def test_worker_jobs_are_shared_by_threads_and_freed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[_FakeDataset] = []

    class FakeJob:
        def __init__(self, config: str) -> None:
            self.ds = _open_fake(opened, config)

        def read(self, index: int) -> tuple[None, np.ndarray]:
            return None, np.arange(3)

        def compute(self, x: None, times: np.ndarray) -> None:
            self.ds.read()

        def part_encoding(self, chunk: None) -> dict[str, Any]:
            return {}

    class FakeStore:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

        def write(self, *args: Any) -> None:
            pass

    monkeypatch.setattr(dask_run, "Job", FakeJob)
    monkeypatch.setattr(dask_run.JobConfig, "from_json", staticmethod(lambda text: text))
    monkeypatch.setattr(dask_run, "PartStore", FakeStore)
    threads = torch.get_num_threads()
    _hammer(lambda c: dask_run.run_chunk(c, 0, "o.nc", {}, threads), dask_run.release, opened)


# ----------------------------------------------------------------------------- bounded client
def _block_late_first(
    source: BlockSource, start: int, stop: int, train_start: int, train_stop: int
) -> UpscaledBlock:
    """A task whose first block comes last: every other block arrives early."""
    if start == 0:
        time.sleep(1.0)
    values = np.full((stop - start, 1, 1, 1), start, np.float32)
    return UpscaledBlock(
        start, values, StreamingStats(channel_dim=1), StreamingStats(channel_dim=1)
    )


class _CountingClient:
    """A client that counts the blocks submitted; ``held`` is the most not yet written."""

    def __init__(self, client: Any, written: list[UpscaledBlock]) -> None:
        self._client, self._written, self.submitted, self.held = client, written, 0, 0

    def submit(self, *args: Any, **kwargs: Any) -> Any:
        self.submitted += 1
        self.held = max(self.held, self.submitted - len(self._written))
        return self._client.submit(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


@pytest.mark.distributed
def test_client_holds_a_bounded_number_of_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    from distributed import Client, LocalCluster

    monkeypatch.setattr(prepare_dask, "run_block", _block_late_first)
    source = BlockSource(
        run="bounded", files=("f.nc",), names=("tasmax",), n_times=40, coarse=None, subcells=1,
        smoothing=0, device="cpu", chunk_days=2, torch_threads=1,
    )  # type: ignore[arg-type]  # fmt: skip
    bounds = [(a, a + 2) for a in range(0, 40, 2)]
    taken: list[UpscaledBlock] = []
    done: list[int] = []
    with (
        LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None)
        as cluster, Client(cluster) as client,
    ):  # fmt: skip
        assert window(client) == 4  # twice the cluster's threads
        counting = _CountingClient(client, taken)
        run_blocks(counting, source, bounds, slice(0, 40), taken.append,
                   progress=lambda d, t: done.append(d))  # fmt: skip
    assert counting.submitted == len(bounds)
    assert counting.held == 4  # the window filled while the first block was late, never more
    assert [b.start for b in taken] == [a for a, _ in bounds]  # in time order, each once
    assert all((b.values == b.start).all() for b in taken) and done[-1] == 40

    class Gone:
        def nthreads(self) -> dict[str, int]:
            raise OSError("scheduler gone")

    assert window(Gone()) == 2
