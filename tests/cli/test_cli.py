"""The ``climdl`` command: subcommands, exit codes, messages without tracebacks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from climdl.cli import main


def test_sample_cli_writes_and_refuses_to_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sample", str(tmp_path), "--domain", "SA", "--quiet"]) == 0
    assert (
        tmp_path / "SA/SA_domain/train/ESD_pseudo_reality/target/pr_tasmax_ACCESS-CM2_1961-1980.nc"
    ).exists()
    assert main(["sample", str(tmp_path), "--domain", "SA", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--overwrite" in err and "Traceback" not in err
    assert not list(tmp_path.rglob(".*.tmp"))  # no half-written files left behind


def test_catalog_cli(capsys: pytest.CaptureFixture[str], use_sample_cache: Path) -> None:
    assert main(["catalog", "list"]) == 0
    assert "sample-alps" in capsys.readouterr().err
    assert main(["catalog", "show", "sample-alps"]) == 0
    out = capsys.readouterr().out
    assert "Emulator_hist_future" in out and "resolved root" in out
    assert main(["catalog", "show", "nope"]) == 2
    assert "known entries" in capsys.readouterr().err


def test_console_script_reports_errors_without_traceback(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("climdl")
    proc = subprocess.run([str(exe), "catalog", "show", "nope"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "climdl: error:" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run(
        [str(exe), "sample", str(tmp_path), "--years", "0"], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "--years" in proc.stderr
    # python -m climdl (how torchrun launches it on each rank) is the same command
    proc = subprocess.run(
        [sys.executable, "-m", "climdl", "catalog", "show", "nope"], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "climdl: error:" in proc.stderr


def test_prepare_cli(tmp_path: Path, sample_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import xarray as xr

    src = sample_root / "train/ESD_pseudo_reality/target/pr_tasmax_CNRM-CM5_1961-1980.nc"
    out = tmp_path / "coarse.nc"
    rc = main(
        [
            "prepare",
            str(src),
            "--out",
            str(out),
            "--variables",
            "tasmax",
            "--smoothing",
            "3",
            "--train-period",
            "1961-01-01",
            "1961-06-30",
            "--stats",
            str(tmp_path / "s.json"),
            "-q",
        ]
    )
    assert rc == 0
    with xr.open_dataset(out) as ds:
        assert ds.tasmax.attrs["units"] == "K" and "area: mean" in ds.tasmax.attrs["cell_methods"]
        assert ds.sizes["time"] == 365
    assert main(["prepare", str(src), "--out", str(out), "-q"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    # one output must not silently replace the other, nor an input (even with --overwrite)
    same = ["prepare", str(src), "--out", str(out), "--stats", str(out), "--overwrite", "-q"]
    assert main(same) == 2
    assert "--stats and --out both name" in capsys.readouterr().err
    onto = ["prepare", str(src), "--out", str(out), "--stats", str(src), "--overwrite", "-q"]
    assert main(onto) == 2
    assert "is one of the input files" in capsys.readouterr().err
    assert main(["prepare", str(src), "--out", str(tmp_path / "c2.nc"), "--min-coverage", "2"]) == 2
    assert "--min-coverage must lie between 0 and 1" in capsys.readouterr().err


def test_an_error_is_not_followed_by_abandoned_async_tasks() -> None:
    """A Zarr output on a full disk leaves zarr's queued writes pending on its event loop; at
    exit each logged "Task was destroyed but it is pending!" under the one-line error."""
    script = (
        "import asyncio, logging, sys\n"
        "from climdl.cli import _run_guarded\n"
        "from climdl.errors import OutputError\n"
        "logging.basicConfig()\n"
        "loop = asyncio.new_event_loop()\n"
        "task = loop.create_task(asyncio.sleep(3600))\n"
        "loop.run_until_complete(asyncio.sleep(0))\n"
        "def fail():\n"
        "    raise OutputError('cannot write x.zarr: no space left on the device')\n"
        "rc = _run_guarded(fail, False)\n"
        "assert logging.getLogger('asyncio').level != logging.CRITICAL  # not before exit\n"
        "sys.exit(rc)  # the pending task is destroyed as the interpreter exits\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "climdl: error: cannot write x.zarr: no space left on the device"
    ]


def test_prepare_train_period_bounds_must_be_dates() -> None:
    from climdl.data.prepare import _norm_date
    from climdl.errors import ConfigError

    assert _norm_date("1981-2-30") == "1981-02-30"  # a 360_day calendar's date
    for bad in ("1981-13-01", "1981-01-32", "81/01/01"):
        with pytest.raises(ConfigError, match="train period bound"):
            _norm_date(bad)
