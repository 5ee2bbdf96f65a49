"""``downscale`` output safety: names taken from file contents, resume fingerprints, the parts
folder's lock and leftovers (issue 13, items 2, 3 and 7)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from climdl.cli import main
from climdl.errors import OutputError
from climdl.inference import downscale
from climdl.inference.inputs import InputSource
from climdl.inference.output import default_output, safe_component
from climdl.inference.parts import MANIFEST, PartStore, file_fingerprint, lock_path, parts_dir
from tests.argv import downscale_argv

DECODE = xr.coders.CFDatetimeCoder(use_cftime=True)
HOSTILE = ["a/../../../escaped", "/tmp/x", "..", ".", "", "a\\b\x00c", "-"]


@pytest.fixture(scope="module")
def perfect(sample_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample's perfect predictors, first 40 days (short runs on a busy machine)."""
    src = sample_root / "test" / "historical" / "predictors" / "perfect" / "CNRM-CM5_1981-2000.nc"
    out = tmp_path_factory.mktemp("short") / "CNRM-CM5_1981.nc"
    with xr.open_dataset(src) as ds:
        ds.isel(time=slice(0, 40)).to_netcdf(out)
    return out


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("climdl: error: ") and "\n" not in err and "Traceback" not in err
    return err


# ----------------------------------------------------------------------------- item 2: names
@pytest.mark.parametrize("value", HOSTILE)
def test_names_from_file_contents_are_one_level_inside_the_folder(
    value: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    comp = safe_component(value)
    assert comp not in ("", ".", "..") and "/" not in comp and "\\" not in comp
    cf = default_output(out, targets=["tasmax"], stem=value, fmt="cf", domain=value,
                        experiment=value, period=value, kind=value)  # fmt: skip
    assert cf.parent == out
    ml = default_output(out, targets=["pr", "tasmax"], stem=value, fmt="mlbench", domain=value,
                        experiment=value, period=value, kind=value)  # fmt: skip
    assert ml.parents[4 if value else 0] == out  # "" is unknown: no submission tree
    assert ml.resolve().is_relative_to(out.resolve())
    assert all(p not in ("", ".", "..") for p in ml.relative_to(out).parts)


def test_ordinary_names_are_kept() -> None:
    out = Path("sub")
    ml = default_output(out, targets=["tasmax", "pr"], stem="MPI-ESM-LR_1981-2000", fmt="mlbench",
                        domain="ALPS", experiment="Emulator_hist_future", period="historical",
                        kind="imperfect")  # fmt: skip
    assert ml == Path("sub/ALPS_Domain/Emulator_hist_future/historical/imperfect/"
                      "Predictions_pr_tasmax_MPI-ESM-LR_1981-2000.nc")  # fmt: skip


def test_a_name_outside_the_folder_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last line of defence, should a future name builder let something through."""
    from climdl.inference import output

    monkeypatch.setattr(output, "default_output", lambda out, **_: out / ".." / "escaped.nc")
    source = InputSource([tmp_path / "a.nc", tmp_path / "b.nc"], gcm="x")
    (tmp_path / "out").mkdir()
    with pytest.raises(OutputError, match="outside"):
        output.resolve_output(tmp_path / "out", source, ["tasmax"], "cf", None)


@pytest.mark.parametrize("gcm", ["a/../../../escaped", "/tmp/x", ".."])
def test_driving_model_id_cannot_move_the_output(
    gcm: str, tasmax_ckpt: Path, perfect: Path, tmp_path: Path
) -> None:
    src = xr.open_dataset(perfect).load()
    src.attrs["driving_model_id"] = gcm
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    halves = [inputs / "h1.nc", inputs / "h2.nc"]
    src.isel(time=slice(0, 20)).to_netcdf(halves[0])
    src.isel(time=slice(20, None)).to_netcdf(halves[1])
    out = tmp_path / "a" / "b" / "c" / "out"
    out.mkdir(parents=True)
    res = downscale(tasmax_ckpt, [str(p) for p in halves], out)
    assert res.path is not None and res.path.parent == out and res.path.is_file()
    assert res.dataset.attrs["driving_model_id"] == gcm  # the attribute itself is kept
    res.dataset.close()
    written = {p for p in tmp_path.rglob("*") if p.is_file() and inputs not in p.parents}
    assert written == {res.path}
    assert not list(Path("/tmp/x").glob("*climdl*"))


# ----------------------------------------------------------------------------- item 3: resume
def test_resume_refuses_an_input_changed_in_place(
    tasmax_ckpt: Path, perfect: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inp = tmp_path / "in.nc"
    data = xr.open_dataset(perfect).load().drop_encoding()  # both files laid out alike
    data.to_netcdf(inp)
    original, st = inp.read_bytes(), inp.stat()
    out = tmp_path / "r.nc"
    uninterrupted = downscale(tasmax_ckpt, [str(inp)], chunk_days=15).dataset
    res = downscale(tasmax_ckpt, [str(inp)], out, chunk_days=15, max_chunks=1)
    assert res.path is None and len(list(parts_dir(out).glob("part-*.nc"))) == 1
    argv = downscale_argv(tasmax_ckpt, inp, out, "-q", "--chunk-days", "15", "--resume")

    # other values, same size, same modification time: the hashed ends differ
    changed = data.copy(deep=True)
    changed["t_850"].values += 0.5  # in place: same attributes and encoding, same layout
    changed.to_netcdf(tmp_path / "changed.nc")
    assert (tmp_path / "changed.nc").stat().st_size == st.st_size
    with open(inp, "r+b") as f:  # in place: same path, same inode
        f.write((tmp_path / "changed.nc").read_bytes())
    os.utime(inp, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert main(argv) == 2
    err = _one_line_error(capsys)
    assert f"{inp.resolve()} changed since the interrupted run started (content differ" in err
    assert "--overwrite" in err

    # rewritten by a tool: another modification time, and here a few days fewer
    data.isel(time=slice(0, 35)).to_netcdf(inp)
    assert main(argv) == 2
    err = _one_line_error(capsys)
    assert "changed since the interrupted run started" in err and "modification time" in err
    assert "size" in err

    # the untouched file: resumes, and the output is the uninterrupted one
    inp.write_bytes(original)
    os.utime(inp, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert main(argv) == 0
    with xr.open_dataset(out, decode_times=DECODE) as ds:
        np.testing.assert_array_equal(ds.tasmax.values, uninterrupted.tasmax.values)


def test_fingerprint_hashes_the_ends_of_a_large_file(tmp_path: Path) -> None:
    """Size, mtime and the first and last MiB: a fixed cost whatever the file's size."""
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(3 << 20))
    st = big.stat()
    first = file_fingerprint(big)
    for offset, seen in ((10, True), ((3 << 20) - 10, True), (3 << 19, False)):
        with open(big, "r+b") as f:
            f.seek(offset)
            f.write(b"x")
        os.utime(big, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert (file_fingerprint(big) != first) is seen
        big.write_bytes(bytes(3 << 20))
        os.utime(big, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.utime(big, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    assert file_fingerprint(big)["mtime_ns"] != first["mtime_ns"]


def test_resume_names_a_changed_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "o.nc"
    store = PartStore(out, {"x": 1, "fingerprints": {"/m/c.ckpt": {"sha256": "a"}}})
    store.path(0).write_bytes(b"")  # one finished chunk: the folder is kept
    store.close()
    with pytest.raises(OutputError, match=r"/m/c\.ckpt changed since .*\(content differ"):
        PartStore(out, {"x": 1, "fingerprints": {"/m/c.ckpt": {"sha256": "b"}}}, resume=True)
    # a folder from a run that recorded no fingerprints cannot be verified: refused too
    (parts_dir(out) / MANIFEST).write_text(json.dumps({"x": 1}))
    with pytest.raises(OutputError, match="fingerprints differ"):
        PartStore(out, {"x": 1, "fingerprints": {}}, resume=True)
    PartStore(out, {"x": 1, "fingerprints": {}}, overwrite=True).close()
    assert not parts_dir(out).exists() and not lock_path(out).exists()


# ----------------------------------------------------------------------------- item 7: folder
def test_a_second_run_on_a_live_output_is_refused(
    tasmax_ckpt: Path, perfect: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "live.nc"
    paused, go_on = threading.Event(), threading.Event()
    outcome: dict[str, object] = {}

    def progress(done: int, total: int) -> None:
        if done > 0 and not paused.is_set():
            paused.set()
            go_on.wait(120)

    def first() -> None:
        try:
            outcome["res"] = downscale(tasmax_ckpt, [str(perfect)], out, chunk_days=10,
                                       progress=progress)  # fmt: skip
        except BaseException as exc:  # reported by the assertion below
            outcome["exc"] = exc

    thread = threading.Thread(target=first)
    thread.start()
    try:
        while thread.is_alive() and not paused.wait(0.5):
            pass
        assert paused.is_set(), outcome.get("exc")
        argv = downscale_argv(tasmax_ckpt, perfect, out, "-q", "--chunk-days", "10")
        for extra in ([], ["--resume"], ["--overwrite"]):
            assert main([*argv, *extra]) == 2
            err = _one_line_error(capsys)
            assert f"another climdl run is writing {out} (pid {os.getpid()})" in err
            assert "choose another --output" in err
    finally:
        go_on.set()
        thread.join(120)
    assert "exc" not in outcome, outcome.get("exc")
    with xr.open_dataset(out) as ds:
        assert ds.sizes["time"] == 40
    assert not parts_dir(out).exists() and not lock_path(out).exists()


def test_a_lock_file_left_by_a_dead_process_does_not_block(
    tasmax_ckpt: Path, perfect: Path, tmp_path: Path
) -> None:
    out = tmp_path / "o.nc"
    code = (
        "import fcntl, os, signal, sys\n"
        "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "os.write(fd, str(os.getpid()).encode())\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(lock_path(out))], timeout=60)
    assert proc.returncode == -9 and lock_path(out).read_text().strip().isdigit()
    assert main(downscale_argv(tasmax_ckpt, perfect, out, "-q")) == 0
    assert out.is_file() and not lock_path(out).exists()


def test_after_an_input_error_a_plain_rerun_works(
    tasmax_ckpt: Path, perfect: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inp = tmp_path / "in.nc"
    bad = xr.open_dataset(perfect).load()
    bad["t_850"][1, 3, 4] = np.nan  # fails in the first chunk, after the parts folder is made
    bad.to_netcdf(inp)
    out = tmp_path / "o.nc"
    assert main(downscale_argv(tasmax_ckpt, inp, out, "-q", "--chunk-days", "10")) == 2
    assert "non-finite" in _one_line_error(capsys)
    assert not parts_dir(out).exists() and not lock_path(out).exists()
    shutil.copyfile(perfect, inp)  # the user fixes the input and simply runs again
    assert main(downscale_argv(tasmax_ckpt, inp, out, "-q", "--chunk-days", "10")) == 0
    assert out.is_file()


def test_a_parts_folder_without_finished_chunks_is_treated_as_absent(
    tasmax_ckpt: Path, perfect: Path, tmp_path: Path
) -> None:
    """As a run killed before its first chunk (or an older climdl) leaves it."""
    out = tmp_path / "o.nc"
    parts_dir(out).mkdir()
    (parts_dir(out) / MANIFEST).write_text(json.dumps({"inputs": ["elsewhere.nc"]}))
    assert main(downscale_argv(tasmax_ckpt, perfect, out, "-q")) == 0
    assert out.is_file() and not parts_dir(out).exists()


def _tiny() -> xr.Dataset:
    return xr.Dataset({"v": ("time", np.arange(3.0))})


def test_a_worker_of_a_removed_or_replaced_run_writes_no_chunk(tmp_path: Path) -> None:
    out = tmp_path / "o.nc"
    first = PartStore(out, {"x": 1})
    worker = PartStore(out, first.manifest, create=False)  # a Dask task of the first run
    rank1 = PartStore(out, {}, create=False)  # a torchrun rank: the run comes from the folder
    assert worker.run == rank1.run == first.run is not None
    rank1.write(1, _tiny(), {})
    assert (parts_dir(out) / "part-000001.nc").is_file()

    shutil.rmtree(parts_dir(out))  # the folder is gone (removed by hand, or by a failed join)
    with pytest.raises(OutputError, match="removed or taken over"):
        worker.write(0, _tiny(), {})
    assert not parts_dir(out).exists()
    first.close()

    second = PartStore(out, {"x": 2})  # another run owns the folder now
    with pytest.raises(OutputError, match="removed or taken over"):
        worker.write(0, _tiny(), {})
    assert second.done() == set()
    second.close()
    assert not parts_dir(out).exists() and not lock_path(out).exists()


def test_planted_links_for_the_lock_or_the_parts_folder_are_refused(tmp_path: Path) -> None:
    """A link at ``.OUT.nc.lock`` or ``.OUT.nc.parts`` (planted in a shared folder) would make
    climdl truncate, write or remove files elsewhere: refused, and the target is untouched."""
    victim = tmp_path / "elsewhere" / "precious.txt"
    victim.parent.mkdir()
    victim.write_text("keep me")
    out = tmp_path / "run" / "out.nc"
    out.parent.mkdir()
    lock_path(out).symlink_to(victim)
    with pytest.raises(OutputError, match="symbolic link"):
        PartStore(out, {"x": 1})
    assert victim.read_text() == "keep me"
    lock_path(out).unlink()
    lock_path(out).symlink_to(tmp_path / "elsewhere" / "new.txt")  # a dangling link
    with pytest.raises(OutputError, match="symbolic link"):
        PartStore(out, {"x": 1})
    assert not (tmp_path / "elsewhere" / "new.txt").exists()
    lock_path(out).unlink()
    parts_dir(out).symlink_to(victim.parent, target_is_directory=True)
    with pytest.raises(OutputError, match="symbolic link"):
        PartStore(out, {"x": 1})
    assert victim.read_text() == "keep me"
