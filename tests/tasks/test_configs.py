"""Packaged training presets: ``climdl train --config NAME`` from any folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from climdl.configs import preset_dir, preset_names, preset_path
from climdl.errors import ConfigError
from climdl.tasks.train_cli import resolve_config
from tests.paths import CONFIGS

REPO_CONFIGS = CONFIGS


def test_every_repository_config_is_a_preset() -> None:
    files = sorted(p.relative_to(REPO_CONFIGS) for p in REPO_CONFIGS.glob("*/*.yaml"))
    assert preset_names() == [f.with_suffix("").as_posix() for f in files]
    assert {"emulator/sample", "clouds/sample", "strategy/ddp"} <= set(preset_names())


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("sample", "emulator/sample"),
        ("alps", "emulator/alps"),
        ("ddp", "strategy/ddp"),
        ("strategy/ddp", "strategy/ddp"),
        ("clouds/sample", "clouds/sample"),
        ("emulator/sample.yaml", "emulator/sample"),
        ("configs/strategy/fsdp.yaml", "strategy/fsdp"),
    ],
)
def test_preset_names_resolve(
    name: str, expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no configs/ folder here: the README's paths are presets
    (tmp_path / "sample").mkdir()  # a folder is no config file (the demo writes one)
    assert preset_path(name) == preset_dir() / f"{expected}.yaml"
    assert resolve_config(name) == str(preset_dir() / f"{expected}.yaml")


def test_files_and_inline_yaml_pass_unchanged(tmp_path: Path) -> None:
    own = tmp_path / "sample.yaml"
    own.write_text("trainer: {}\n")
    assert resolve_config(str(own)) == str(own)
    assert resolve_config("{trainer: {max_epochs: 1}}") == "{trainer: {max_epochs: 1}}"


def test_unknown_preset_is_one_sentence_listing_presets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from climdl.cli import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="presets: clouds/sample, emulator/alps"):
        preset_path("strategy/nope")
    assert main(["train", "--config", "nope"]) != 0
    err = capsys.readouterr().err.strip()
    assert "no config file or packaged preset named 'nope'" in err
    assert "strategy/ddp" in err and "Traceback" not in err


@pytest.mark.parametrize("form", [["-c", "sample"], ["-c=sample"], ["--config=sample"]])
def test_short_and_joined_config_flags_resolve_presets(form: list[str]) -> None:
    from climdl.tasks.train_cli import _translate

    out = _translate(form)
    assert str(preset_dir() / "emulator" / "sample.yaml") in "".join(out)
