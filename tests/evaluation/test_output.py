"""An evaluation's output folder appears whole or not at all (full disk, Ctrl-C, --overwrite)."""

from __future__ import annotations

import errno
import json
import stat
from pathlib import Path
from typing import Any

import pytest

from climdl.errors import OutputError
from climdl.evaluation import evaluate, output, write_outputs
from climdl.evaluation.engine import EvaluationResult
from climdl.io.umask import current_umask
from tests.evaluation.test_evaluate import _dataset, _predict


@pytest.fixture(scope="module")
def result() -> EvaluationResult:
    """A small evaluation (one year, 16 x 16, tasmax) with fields for the report."""
    truth = _dataset(1, 1981, 0)
    pred = _predict(truth, 1, 0.5)
    return evaluate(truth, {"emulator": pred}, variables=["tasmax"], seasons=[])


def _everything(folder: Path) -> list[str]:
    """Every entry under ``folder``, hidden ones included, relative to it."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _full_disk(ds: Any, path: Path, **kwargs: Any) -> Path:
    """``write_netcdf`` on a full disk, after the summaries were written."""
    raise OSError(errno.ENOSPC, "No space left on device", str(path))


def test_failure_in_the_middle_leaves_no_folder(
    result: EvaluationResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the summaries are written, then the fields meet a full disk
    monkeypatch.setattr(output, "write_netcdf", _full_disk)
    out = tmp_path / "made" / "ev"
    with pytest.raises(OutputError) as err:
        write_outputs(result, out, report=False)
    # the sentence names the final path, not the temporary folder
    assert str(err.value).startswith(f"cannot write {out}/fields_tasmax.nc: no space left")
    assert _everything(tmp_path) == []  # no partial set, no temporary folder, no parent made


def test_interrupt_while_drawing_the_report_leaves_no_folder(
    result: EvaluationResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from climdl.evaluation import report

    def interrupted(*args: Any, **kwargs: Any) -> list[Any]:
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "make_figures", interrupted)  # summaries and fields are written
    with pytest.raises(KeyboardInterrupt):
        write_outputs(result, tmp_path / "ev")
    assert _everything(tmp_path) == []
    # an existing empty folder (a mount point, one made for the run) stays empty
    (tmp_path / "ev").mkdir()
    with pytest.raises(KeyboardInterrupt):
        write_outputs(result, tmp_path / "ev")
    assert _everything(tmp_path) == ["ev"]


def test_complete_set_is_renamed_into_place(result: EvaluationResult, tmp_path: Path) -> None:
    paths = write_outputs(result, tmp_path / "ev", report=False)
    assert paths["summary_json"] == tmp_path / "ev" / "summary.json"
    assert all(p.is_file() for p in paths.values())
    assert _everything(tmp_path) == [
        "ev",
        "ev/fields_tasmax.nc",
        "ev/summary.csv",
        "ev/summary.json",
        "ev/summary.md",
    ]
    mode = stat.S_IMODE((tmp_path / "ev" / "summary.json").stat().st_mode)
    assert mode == 0o666 & ~current_umask()  # as open() would make it, not mkstemp's 0600
    # into an existing empty folder: the same set, and no temporary folder left in it
    (tmp_path / "empty").mkdir()
    write_outputs(result, tmp_path / "empty", report=False)
    assert _everything(tmp_path / "empty") == _everything(tmp_path / "ev")


def test_overwrite_replaces_the_earlier_evaluation_and_keeps_other_files(
    result: EvaluationResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "ev"
    out.mkdir()
    (out / "fields_pr.nc").write_text("an earlier evaluation's pr")
    (out / "report.html").write_text("an earlier report")
    (out / "figures").mkdir()
    (out / "figures" / "old.png").write_text("png")
    (out / "summary.json").write_text('{"earlier": true}')
    (out / "notes.txt").write_text("the user's own file")
    with pytest.raises(OutputError, match="is not empty"):
        write_outputs(result, out, report=False)
    # a failure while replacing: the earlier evaluation is left as it was
    monkeypatch.setattr(output, "write_netcdf", _full_disk)
    with pytest.raises(OutputError, match="no space left"):
        write_outputs(result, out, report=False, overwrite=True)
    assert json.loads((out / "summary.json").read_text()) == {"earlier": True}
    assert sorted(p.name for p in out.iterdir()) == [
        "fields_pr.nc",
        "figures",
        "notes.txt",
        "report.html",
        "summary.json",
    ]
    monkeypatch.undo()
    write_outputs(result, out, report=False, overwrite=True)
    names = sorted(p.name for p in out.iterdir())
    # no report of the earlier run beside the new numbers; the user's file stays
    assert "report.html" not in names and "figures" not in names and "fields_pr.nc" not in names
    assert "notes.txt" in names and "fields_tasmax.nc" in names
    assert not [n for n in names if n.startswith(".")]
    assert "earlier" not in json.loads((out / "summary.json").read_text())


def test_temporary_folder_of_another_run_does_not_count_as_content(
    result: EvaluationResult, tmp_path: Path
) -> None:
    """Left by kill -9, or a live evaluation writing into the same folder: not content, and
    never removed (it may still be written)."""
    out = tmp_path / "ev"
    other = out / f"{output.STAGE_PREFIX}abc.tmp"
    other.mkdir(parents=True)
    (other / "summary.json").write_text("{}")
    output.check_out_dir(out, overwrite=False)  # nothing to refuse
    write_outputs(result, out, report=False)
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [other.name]
    assert (other / "summary.json").read_text() == "{}"
