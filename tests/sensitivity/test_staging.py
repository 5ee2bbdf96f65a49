"""A sensitivity run's output folder appears whole or not at all (:mod:`climdl.sensitivity.
staging`): a failure or an interrupt in the middle of writing leaves neither the folder nor a
temporary one behind, and an earlier run or the user's own files in ``--out`` stay intact."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from climdl.errors import OutputError
from climdl.sensitivity.staging import staged_dir


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_the_folder_appears_whole_when_complete(tmp_path: Path) -> None:
    out = tmp_path / "deep" / "sens"
    with staged_dir(out) as stage:
        (stage / "sensitivity.nc").write_text("nc")
        (stage / "figures").mkdir()
        (stage / "figures" / "a.png").write_text("png")
        assert not out.exists()  # nothing under the final name while writing
    assert sorted(p.name for p in out.iterdir()) == ["figures", "sensitivity.nc"]
    assert (out / "figures" / "a.png").read_text() == "png"
    assert _leftovers(out.parent) == []


def test_a_full_disk_midway_leaves_nothing_and_names_the_output(tmp_path: Path) -> None:
    out = tmp_path / "new" / "sens"
    failing = pytest.raises(OutputError, match="no space left on the device")
    with failing as info, staged_dir(out) as stage:
        (stage / "sensitivity.nc").write_text("nc")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert str(out) in str(info.value) and ".tmp" not in str(info.value)
    assert not (tmp_path / "new").exists()  # the parent made for the stage is gone too
    assert _leftovers(tmp_path) == []


def test_an_interrupt_midway_leaves_an_earlier_run_untouched(tmp_path: Path) -> None:
    out = tmp_path / "sens"
    out.mkdir()
    (out / "sensitivity.nc").write_text("earlier run")
    with pytest.raises(KeyboardInterrupt), staged_dir(out, overwrite=True) as stage:
        (stage / "sensitivity.nc").write_text("new run")
        raise KeyboardInterrupt
    assert [p.name for p in out.iterdir()] == ["sensitivity.nc"]
    assert (out / "sensitivity.nc").read_text() == "earlier run"
    assert _leftovers(tmp_path) == []


def test_a_folder_with_other_files_gets_the_run_merged_in(tmp_path: Path) -> None:
    out = tmp_path / "sens"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "report.md").write_text("earlier report")
    refused = pytest.raises(OutputError, match=r"already holds report\.md; pass --overwrite")
    with refused, staged_dir(out) as stage:
        (stage / "report.md").write_text("new report")
    assert (out / "report.md").read_text() == "earlier report"
    with staged_dir(out, overwrite=True) as stage:
        (stage / "report.md").write_text("new report")
        (stage / "sensitivity.nc").write_text("nc")
    names = sorted(p.name for p in out.iterdir())
    assert names == ["notes.txt", "report.md", "sensitivity.nc"]  # nothing hidden left
    assert (out / "report.md").read_text() == "new report"
    assert (out / "notes.txt").read_text() == "mine"
    assert _leftovers(tmp_path) == []
