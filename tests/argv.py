"""Builders of the ``climdl`` argument lists the tests run, so each test shows only what it varies.

``climdl downscale`` and ``climdl segment`` read their options with argparse, where the order of
distinct options does not matter; ``climdl train`` reads them with jsonargparse, where later
options override earlier ones, so :func:`train_argv` keeps ``--config`` first and the caller's
options in the order given. The option lists that shrink a run (``TINY_MODEL``, ``NO_LOGGERS``)
live in :mod:`climdl.parallel.testing`, shared with the distributed tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def train_argv(config: Path | str, root: Path, *extra: str) -> list[str]:
    """``climdl train --config CONFIG --trainer.default_root_dir ROOT EXTRA...``.

    Args:
        config: a config file or a packaged preset name.
        root: the run folder (Lightning's ``default_root_dir``).
        *extra: further options, in the order they apply.

    Returns:
        The argument list for :func:`climdl.cli.main` (without the program name).
    """
    return ["train", "--config", str(config), "--trainer.default_root_dir", str(root), *extra]


def _repeat(flag: str, values: Path | str | Sequence[Path | str]) -> list[str]:
    items = [values] if isinstance(values, (str, Path)) else list(values)
    return [part for item in items for part in (flag, str(item))]


def downscale_argv(
    ckpt: Path | str | Sequence[Path | str],
    inputs: Path | str | Sequence[Path | str],
    out: Path | str,
    *extra: str,
) -> list[str]:
    """``climdl downscale -c CKPT... -i INPUT... -o OUT EXTRA...``.

    Args:
        ckpt: one checkpoint, or several (one ``-c`` each).
        inputs: one predictor file, or several (one ``-i`` each); none for ``--catalog`` runs.
        out: the output file (or folder with ``--format mlbench``).
        *extra: further options.

    Returns:
        The argument list for :func:`climdl.cli.main` (without the program name).
    """
    return ["downscale", *_repeat("-c", ckpt), *_repeat("-i", inputs), "-o", str(out), *extra]


def segment_argv(
    ckpt: Path | str, inputs: Path | str | Sequence[Path | str], out: Path | str, *extra: str
) -> list[str]:
    """``climdl segment -c CKPT -i SCENE... -o OUT EXTRA...``.

    Args:
        ckpt: the segmenter checkpoint.
        inputs: one scene, or several (one ``-i`` each).
        out: the output mask file or folder.
        *extra: further options.

    Returns:
        The argument list for :func:`climdl.cli.main` (without the program name).
    """
    return ["segment", "-c", str(ckpt), *_repeat("-i", inputs), "-o", str(out), *extra]
