"""An output folder appears whole or not at all (:mod:`climdl.io.staged_folder`): a failure or an
interrupt in the middle of writing leaves neither the folder nor a temporary one behind, an
existing folder gets the entries renamed into it, ``overwrite`` replaces only the command's own
entries, and a failure while replacing leaves the earlier set intact."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from climdl.errors import OutputError
from climdl.io import staged_folder as sf

OWN = frozenset({"result.nc", "report.md", "figures"})


def _staged(out: Path, overwrite: bool = False, **kwargs: Any) -> Any:
    return sf.staged_folder(
        out, own=OWN.__contains__, marker="result.nc", command="test", overwrite=overwrite, **kwargs
    )


def _everything(folder: Path) -> list[str]:
    """Every entry under ``folder``, hidden ones included, relative to it."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_a_missing_folder_appears_whole_when_complete(tmp_path: Path) -> None:
    old_mask = os.umask(0o022)  # the usual permissions are judged against a known umask
    try:
        _appears_whole(tmp_path)
    finally:
        os.umask(old_mask)


def _appears_whole(tmp_path: Path) -> None:
    out = tmp_path / "deep" / "out"
    with _staged(out) as stage:
        (stage / "result.nc").write_text("nc")
        (stage / "figures").mkdir()
        (stage / "figures" / "a.png").write_text("png")
        assert not out.exists()  # nothing under the final name while writing
    assert _everything(tmp_path) == [
        "deep",
        "deep/out",
        "deep/out/figures",
        "deep/out/figures/a.png",
        "deep/out/result.nc",
    ]
    assert (out / "figures" / "a.png").read_text() == "png"
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o755  # the usual ones, not mkdtemp's 0700


def test_an_existing_folder_is_staged_inside_and_filled(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()  # a mount point, a folder made for the run: never replaced
    inode = out.stat().st_ino
    with _staged(out) as stage:
        assert stage.parent == out and stage.name.startswith(sf.stage_prefix("test"))
        (stage / "result.nc").write_text("nc")
    assert _everything(out) == ["result.nc"] and out.stat().st_ino == inode


def test_a_full_disk_midway_leaves_nothing_and_names_the_output(tmp_path: Path) -> None:
    out = tmp_path / "new" / "out"
    failing = pytest.raises(OutputError, match="no space left on the device")
    with failing as info, _staged(out) as stage:
        (stage / "result.nc").write_text("nc")
        raise OSError(errno.ENOSPC, "No space left on device", str(stage / "result.nc"))
    assert str(info.value).startswith(f"cannot write {out}/result.nc: no space left")
    assert _everything(tmp_path) == []  # the parents made for the stage are gone too


@pytest.mark.parametrize("existing", [False, True])
def test_an_interrupt_midway_leaves_nothing(tmp_path: Path, existing: bool) -> None:
    out = tmp_path / "out"
    if existing:
        out.mkdir()
    with pytest.raises(KeyboardInterrupt), _staged(out) as stage:
        (stage / "result.nc").write_text("nc")
        raise KeyboardInterrupt
    assert _everything(tmp_path) == (["out"] if existing else [])


def test_an_interrupt_midway_leaves_an_earlier_set_untouched(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "result.nc").write_text("earlier run")
    with pytest.raises(KeyboardInterrupt), _staged(out, overwrite=True) as stage:
        (stage / "result.nc").write_text("new run")
        raise KeyboardInterrupt
    assert _everything(tmp_path) == ["out", "out/result.nc"]
    assert (out / "result.nc").read_text() == "earlier run"


def test_an_entry_is_replaced_only_with_overwrite_and_other_files_are_kept(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "report.md").write_text("earlier report")
    refused = pytest.raises(OutputError, match=rf"^{out} already holds report\.md; pass --overw")
    with refused, _staged(out) as stage:
        (stage / "report.md").write_text("new report")
    assert (out / "report.md").read_text() == "earlier report"
    with _staged(out) as stage:  # a new name beside the user's files: no overwrite needed
        (stage / "extra.txt").write_text("x")
    with _staged(out, overwrite=True) as stage:
        (stage / "report.md").write_text("new report")
        (stage / "result.nc").write_text("nc")
        (stage / "figures").mkdir()
    assert _everything(out) == ["extra.txt", "figures", "notes.txt", "report.md", "result.nc"]
    assert (out / "report.md").read_text() == "new report"
    # over an earlier run (its marker, result.nc), that run's own entries the new set lacks go
    # too: no stale report or figures beside new numbers; the user's files stay
    with _staged(out, overwrite=True) as stage:
        (stage / "result.nc").write_text("nc 2")
    assert _everything(out) == ["extra.txt", "notes.txt", "result.nc"]


def test_overwrite_never_deletes_what_no_earlier_run_wrote(tmp_path: Path) -> None:
    """Without an earlier run's marker, nothing the new set does not write is removed, and a
    folder of a name the new set writes (the user's own figures/) is refused, not replaced."""
    out = tmp_path / "out"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "mine.png").write_text("png")
    (out / "report.md").write_text("my notes")
    refused = pytest.raises(OutputError, match=r"holds the folder\(s\) figures, which this run")
    with refused, _staged(out, overwrite=True) as stage:
        (stage / "figures").mkdir()
        (stage / "result.nc").write_text("nc")
    assert _everything(out) == ["figures", "figures/mine.png", "report.md"]
    with _staged(out, overwrite=True) as stage:  # own by name, but no earlier run: kept
        (stage / "result.nc").write_text("nc")
    assert _everything(out) == ["figures", "figures/mine.png", "report.md", "result.nc"]


def test_a_failure_while_replacing_leaves_the_earlier_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "result.nc").write_text("earlier")
    (out / "figures").mkdir()
    (out / "notes.txt").write_text("mine")
    real_replace = os.replace

    def failing(src: Any, dst: Any) -> None:
        if Path(dst) == out / "result.nc" and Path(src).parent.name.endswith(".tmp"):
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        real_replace(src, dst)

    monkeypatch.setattr(sf.os, "replace", failing)
    full = pytest.raises(OutputError, match=rf"cannot write {out}/result.nc: no space")
    with full, _staged(out, overwrite=True) as stage:
        (stage / "report.md").write_text("new")  # renamed in first, then taken back
        (stage / "result.nc").write_text("new")
    assert _everything(out) == ["figures", "notes.txt", "result.nc"]
    assert (out / "result.nc").read_text() == "earlier"


def test_another_runs_temporary_folder_is_left_alone(tmp_path: Path) -> None:
    """A hidden folder of the same command may be a live run writing into the same --out (a
    SLURM array): it is not content, and it is never removed."""
    out = tmp_path / "out"
    other = out / f"{sf.stage_prefix('test')}abc.tmp"
    other.mkdir(parents=True)
    (other / "result.nc").write_text("half")
    assert sf.content(out, "test") == []  # not content
    with _staged(out, overwrite=True) as stage:
        (stage / "result.nc").write_text("nc")
    assert _everything(out) == [other.name, f"{other.name}/result.nc", "result.nc"]


def test_the_commands_check_runs_before_and_before_the_merge(tmp_path: Path) -> None:
    out = tmp_path / "out"
    seen: list[list[str]] = []

    def check(folder: Path) -> None:
        names = sf.content(folder, "test") if folder.is_dir() else []
        seen.append(names)
        if names:
            raise OutputError(f"{folder} is not empty")

    refused = pytest.raises(OutputError, match=rf"^{out} is not empty$")
    with refused, _staged(out, check=check) as stage:
        (stage / "result.nc").write_text("nc")
        out.mkdir()
        (out / "notes.txt").write_text("made meanwhile")
    assert seen == [[], ["notes.txt"]]
    assert _everything(tmp_path) == ["out", "out/notes.txt"]


def test_a_file_in_place_of_the_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "out").write_text("a file")
    with pytest.raises(OutputError, match="is not a folder"), _staged(tmp_path / "out"):
        pass
    assert _everything(tmp_path) == ["out"]


def test_a_folder_that_cannot_be_written_names_the_output(readonly_dir: Path) -> None:
    for out in (readonly_dir, readonly_dir / "out"):  # staged inside, or beside
        with pytest.raises(OutputError) as info, _staged(out):
            pass
        assert str(info.value).startswith(f"cannot write {readonly_dir}: ")
        assert "choose a folder you can write to" in str(info.value)
        assert ".climdl" not in str(info.value) and ".tmp" not in str(info.value)
