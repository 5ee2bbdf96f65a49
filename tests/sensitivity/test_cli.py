"""The ``climdl sensitivity`` command: an emulator run end to end (table, files, report), the
dispatch to the cloud segmenter, and the mistakes that stop with one sentence, exit 2 and no
output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from climdl.cli import main
from climdl.clouds.sample import scene_dataset
from climdl.clouds.scene import write_scene
from climdl.clouds.synthetic import make_scene
from climdl.tasks.segmentation import SegmentationTask
from tests.sensitivity.segmenters import landsat_spec, save_segmenter

FAST = ["--pgd-steps", "2", "--random-draws", "2", "--ig-steps", "2", "--device", "cpu"]


@pytest.fixture(scope="module")
def perfect(sample_root: Path) -> Path:
    return sample_root / "test" / "historical" / "predictors" / "perfect" / "CNRM-CM5_1981-2000.nc"


def _argv(ckpt: Path | list[Path], inputs: Path | list[str], out: Path, *extra: str) -> list[str]:
    ckpts = ckpt if isinstance(ckpt, list) else [ckpt]
    files = [str(inputs)] if isinstance(inputs, Path) else inputs
    return [
        "sensitivity",
        *[a for c in ckpts for a in ("--checkpoint", str(c))],
        "--input",
        *files,
        "--out",
        str(out),
        *FAST,
        *extra,
    ]


def test_an_emulator_run_prints_the_table_and_the_paths(
    tasmax_ckpt: Path, perfect: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sens"
    assert main(_argv(tasmax_ckpt, perfect, out, "--days", "4", "--batch-size", "2")) == 0
    captured = capsys.readouterr()
    names = ["sensitivity.nc", "summary.csv", "report.html", "report.md"]
    assert captured.out.split() == [str(out / n) for n in names]
    for word in ("4 days on cpu", "tasmax (K)", "pgd_rms", "random_max", "median", "bounds:"):
        assert word in captured.err
    assert all((out / n).is_file() for n in names)
    with xr.open_dataset(out / "sensitivity.nc") as ds:
        assert ds.sizes["time"] == 4 and ds.attrs["climdl_sensitivity"] == "emulator"
        assert ds.attrs["history"].split(" ", 1)[1].startswith("climdl sensitivity --checkpoint")


def test_quiet_prints_only_the_paths_and_overwrite_replaces_a_run(
    tasmax_ckpt: Path, perfect: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sens"
    out.mkdir()
    (out / "sensitivity.nc").write_text("an earlier run")
    (out / "report.md").write_text("an earlier report")
    argv = _argv(tasmax_ckpt, perfect, out, "--days", "1", "--overwrite", "-q")
    assert main(argv) == 0
    captured = capsys.readouterr()
    names = ["sensitivity.nc", "summary.csv", "report.html", "report.md"]
    assert captured.out.split() == [str(out / n) for n in names] and captured.err == ""
    with xr.open_dataset(out / "sensitivity.nc") as ds:
        assert ds.sizes["time"] == 1
    assert "an earlier report" not in (out / "report.md").read_text()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--eps", "w=1 m s-1"], "names 'w', which is neither a channel nor a family"),
        (["--eps", "t=-0.5 K"], "is negative"),
        (["--eps", "t=0.5"], "has no unit"),
        (["--eps", "t=0.5 m"], "cannot be converted to the units of t_500"),
        (["--days", "some"], "--days 'some' is neither a number of days nor 'all'"),
        (["--days", "0"], "--days must be at least 1"),
        (["--seed", "-1"], "--seed must be an integer from 0 to 2**63-1, got -1"),
        (["--tile", "64"], "--tile and --overlap apply to cloud segmenter checkpoints"),
    ],
)
def test_bad_options_exit_2_with_one_line_and_write_nothing(
    tasmax_ckpt: Path,
    perfect: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    out = tmp_path / "sens"
    assert main(_argv(tasmax_ckpt, perfect, out, *extra)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("climdl: error: ") and message in err
    assert not out.exists()


def test_a_missing_input_exits_2_and_writes_nothing(
    tasmax_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sens"
    assert main(_argv(tasmax_ckpt, tmp_path / "missing.nc", out)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.nc" in err
    assert not out.exists()


def test_an_earlier_run_needs_overwrite(
    tasmax_ckpt: Path, perfect: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sens"
    out.mkdir()
    (out / "sensitivity.nc").write_text("an earlier run")
    assert main(_argv(tasmax_ckpt, perfect, out)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already holds a sensitivity run (sensitivity.nc)" in err
    assert [p.name for p in out.iterdir()] == ["sensitivity.nc"]
    assert (out / "sensitivity.nc").read_text() == "an earlier run"


def test_a_read_only_folder_exits_2_before_any_work(
    tasmax_ckpt: Path, perfect: Path, readonly_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_argv(tasmax_ckpt, perfect, readonly_dir / "sens")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "choose a folder you can write to" in err


# ----------------------------------------------------------------------------- the segmenter
@pytest.fixture(scope="module")
def segmenter(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A small (untrained) cloud segmenter checkpoint and a 32 x 32 scene it reads."""
    root = tmp_path_factory.mktemp("seg_cli")
    ds = scene_dataset(make_scene(np.random.SeedSequence([5, 0]), (32, 32)), 3, 0)
    scene = write_scene(ds, root / "scene.nc")
    img = ds["image"].values
    spec = landsat_spec(img)
    torch.manual_seed(0)
    task = SegmentationTask(depth=2, base_filters=4, max_filters=8, class_weights=None)
    task.build(spec)
    return save_segmenter(task, root / "seg.ckpt"), scene


def test_a_segmenter_checkpoint_is_attacked_on_its_scene(
    segmenter: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt, scene = segmenter
    out = tmp_path / "sens"
    assert main(_argv(ckpt, scene, out, "--tile", "32", "--overlap", "0")) == 0
    captured = capsys.readouterr()
    names = ["sensitivity.nc", "report.html", "report.md"]
    assert captured.out.split() == [str(out / n) for n in names]
    assert "pixels whose class changed" in captured.err and "32 x 32 px" in captured.err
    with xr.open_dataset(out / "sensitivity.nc") as ds:
        assert ds.attrs["climdl_sensitivity"] == "segmenter"
        assert ds.attrs["random_draws"] == 2
        assert "climdl sensitivity --checkpoint" in ds.attrs["history"]


def test_a_segmenter_run_keeps_a_report_already_in_the_folder(
    segmenter: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt, scene = segmenter
    out = tmp_path / "eval"
    out.mkdir()
    (out / "report.html").write_text("an evaluation's report")
    assert main(_argv(ckpt, scene, out, "--tile", "32", "--overlap", "0")) == 2
    err = capsys.readouterr().err.strip()
    assert "--overwrite" in err and len(err.splitlines()) == 1
    assert (out / "report.html").read_text() == "an evaluation's report"
    assert sorted(p.name for p in out.iterdir()) == ["report.html"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--days", "4"], "--days apply to emulator checkpoints"),
        (["--start", "2000"], "--start apply to emulator checkpoints"),
    ],
)
def test_emulator_options_are_refused_for_a_segmenter(
    segmenter: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    ckpt, scene = segmenter
    assert main(_argv(ckpt, scene, tmp_path / "sens", *extra)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not (tmp_path / "sens").exists()


def test_emulators_and_a_segmenter_are_not_mixed(
    segmenter: tuple[Path, Path],
    tasmax_ckpt: Path,
    perfect: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(_argv([tasmax_ckpt, segmenter[0]], perfect, tmp_path / "sens")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "mix emulators and a cloud segmenter" in err


def test_a_transfer_gcm_of_the_catalog_is_attacked(
    tasmax_ckpt: Path,
    use_sample_cache: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The imperfect predictors of another GCM (360-day calendar), as downscale reads them."""
    out = tmp_path / "sens"
    argv = [
        "sensitivity", "--checkpoint", str(tasmax_ckpt), "--catalog", "sample-alps",
        "--period", "historical", "--kind", "imperfect", "--gcm", "MPI-ESM-LR",
        "--regrid", "bilinear", "--days", "1", "--out", str(out), "-q", *FAST,
    ]  # fmt: skip
    assert main(argv) == 0
    capsys.readouterr()
    with xr.open_dataset(out / "sensitivity.nc", decode_times=False) as ds:
        assert "MPI-ESM-LR" in ds.attrs["input_files"]
        assert "360" in ds.time.attrs["calendar"]


@pytest.mark.parametrize(
    ("failure", "code", "message"),
    [
        (OSError(28, "No space left on device"), 2, "no space left on the device"),
        (KeyboardInterrupt(), 130, "climdl: interrupted"),
    ],
)
def test_a_failure_while_writing_the_report_leaves_no_partial_run(
    tasmax_ckpt: Path,
    perfect: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    failure: BaseException,
    code: int,
    message: str,
) -> None:
    """sensitivity.nc and summary.csv are written, then the report fails half way (a full disk,
    Ctrl-C): no --out folder, no temporary one, and a rerun is not refused as an earlier run."""
    import climdl.evaluation.sensitivity_report as report

    def half_a_report(nc_path: Path, out_dir: Path, **kw: object) -> tuple[Path, Path]:
        assert (Path(out_dir) / "summary.csv").is_file()  # written before the report
        (Path(out_dir) / "figures").mkdir()
        (Path(out_dir) / "figures" / "sensitivity_1.png").write_bytes(b"part")
        raise failure

    out = tmp_path / "sens"
    monkeypatch.setattr(report, "write_sensitivity_report", half_a_report)
    assert main(_argv(tasmax_ckpt, perfect, out, "--days", "1", "-q")) == code
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and message in captured.err
    if code == 2:
        assert f"cannot write {out}:" in captured.err
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == []
    monkeypatch.undo()
    assert main(_argv(tasmax_ckpt, perfect, out, "--days", "1", "-q")) == 0
    assert "report.html" in capsys.readouterr().out
