"""Read-only folders and full disks: one sentence, exit 2, and nothing half-written, for every
command that writes (issue 13, item 6).

The folders are real small tmpfs mounts (``readonly_dir``, ``full_disk_dir`` in conftest.py): as
root, permission bits do not stop a write, so only a read-only or full file system tests the
real error path. Where mounting is not allowed the tests skip.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import xarray as xr

from climdl.cli import main
from tests.argv import downscale_argv

CROP = {"y": slice(48, 64), "x": slice(40, 56)}
# a read-only mount as root; a folder without write bits for other users
READ_ONLY = ("read-only", "permission denied")


def _one_line(capsys: pytest.CaptureFixture[str], *words: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("climdl: error: "), err
    assert any(w in err for w in words), err
    return err


def _leftovers(folder: Path) -> list[Path]:
    """Files a failed run left in ``folder`` (the test's filler aside)."""
    return [p for p in folder.rglob("*") if p.is_file() and p.name != ".filler"]


@pytest.fixture(scope="module")
def small_pair(sample_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 16 x 16 truth and a prediction (truth + 0.5 K), a year of days."""
    d = tmp_path_factory.mktemp("fs")
    src = next((sample_root / "test" / "historical" / "target").glob("*CNRM-CM5*.nc"))
    with xr.open_dataset(src) as ds:
        truth = ds.isel(CROP).load()
    pred = truth.copy()
    pred["tasmax"] = truth["tasmax"] + 0.5
    pred["tasmax"].attrs = truth["tasmax"].attrs
    truth.to_netcdf(d / "truth.nc")
    pred.to_netcdf(d / "pred.nc")
    return d / "truth.nc", d / "pred.nc"


@pytest.mark.parametrize("where", ["readonly", "full"])
def test_sample_and_sample_clouds(
    where: str, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> None:
    folder: Path = request.getfixturevalue(
        f"{where}_dir" if where == "readonly" else "full_disk_dir"
    )
    words = READ_ONLY if where == "readonly" else ("no space left",)
    assert main(["sample", str(folder / "s"), "--quiet"]) == 2
    _one_line(capsys, *words)
    argv = ["sample-clouds", str(folder / "c"), "--n-scenes", "1", "--size", "64", "64", "-q"]
    assert main(argv) == 2
    _one_line(capsys, *words)
    assert _leftovers(folder) == []


@pytest.mark.parametrize("where", ["readonly", "full"])
def test_downscale(
    where: str,
    request: pytest.FixtureRequest,
    tasmax_ckpt: Path,
    use_sample_cache: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder: Path = request.getfixturevalue(
        f"{where}_dir" if where == "readonly" else "full_disk_dir"
    )
    words = READ_ONLY if where == "readonly" else ("no space left",)
    for out in (folder / "tasmax.nc", folder / "sub" / "tasmax.nc"):
        catalog = ["--catalog", "sample-alps", "--period", "historical"]
        argv = downscale_argv(tasmax_ckpt, [], out, *catalog, "-q")
        assert main(argv) == 2
        _one_line(capsys, *words)
        assert not out.exists()
    assert [p for p in _leftovers(folder) if p.suffix == ".nc"] == []


@pytest.mark.parametrize("where", ["readonly", "full"])
def test_plot_and_evaluate(
    where: str,
    request: pytest.FixtureRequest,
    small_pair: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder: Path = request.getfixturevalue(
        f"{where}_dir" if where == "readonly" else "full_disk_dir"
    )
    words = READ_ONLY if where == "readonly" else ("no space left",)
    truth, pred = small_pair
    argv = ["plot", str(pred), "-v", "tasmax", "--time", "0", "-o", str(folder / "f.png"), "-q"]
    assert main(argv) == 2
    _one_line(capsys, *words)
    argv = ["evaluate", "--truth", str(truth), "--pred", str(pred), "--variables", "tasmax"]
    assert main([*argv, "--out", str(folder / "ev"), "--quiet"]) == 2
    _one_line(capsys, *words)
    assert _leftovers(folder) == []
