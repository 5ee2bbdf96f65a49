"""The packaged training presets: this folder ships in the wheel as ``climdl.configs``.

``climdl train --config NAME`` accepts a file path or a preset name: ``emulator/sample``,
``strategy/ddp``, ``configs/strategy/ddp.yaml`` (the repository path, found from any folder)
or a bare name (``sample``, ``ddp``, ``alps``), looked up in ``emulator/``, ``clouds/`` and
``strategy/`` in that order. pyproject.toml maps this folder to the package, so the repository
keeps one copy of each file.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from climdl.errors import ConfigError

_BARE_NAME_ORDER = ("emulator", "clouds", "strategy")
"""Where a name without a folder is looked up: the main job first (``sample`` is the emulator)."""


def preset_dir() -> Path:
    """The folder of the packaged presets (the repository's ``configs/`` in a source checkout).

    Returns:
        the folder holding ``emulator/``, ``clouds/`` and ``strategy/``.
    """
    return Path(str(importlib.resources.files(__name__)))


def preset_names() -> list[str]:
    """Every preset as ``<folder>/<name>`` (``emulator/sample``, ``strategy/ddp``, ...), sorted."""
    root = preset_dir()
    return sorted(p.relative_to(root).with_suffix("").as_posix() for p in root.glob("*/*.yaml"))


def preset_path(name: str) -> Path:
    """The file of the preset ``name``.

    Args:
        name: ``emulator/sample``, ``strategy/ddp.yaml``, ``configs/strategy/ddp.yaml`` or a bare
            ``sample`` / ``ddp`` (looked up in emulator/, clouds/, strategy/).

    Returns:
        the YAML file of the preset.

    Raises:
        ConfigError: no preset has that name (the message lists them).
    """
    key = name.removeprefix("configs/").removesuffix(".yaml").removesuffix(".yml")
    known = preset_names()
    candidates = [key] if "/" in key else [f"{d}/{key}" for d in _BARE_NAME_ORDER]
    for cand in candidates:
        if cand in known:
            return preset_dir() / f"{cand}.yaml"
    raise ConfigError(
        f"no config file or packaged preset named {name!r}; presets: {', '.join(known)}."
    )
