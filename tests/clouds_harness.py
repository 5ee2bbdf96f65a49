"""The tiny cloud-segmentation run shared by the CLI and Landsat tests: sample scenes, one short
epoch of a 4-8 filter network, and the argument lists that make them."""

from __future__ import annotations

from pathlib import Path

from climdl.cli import main
from tests.argv import train_argv
from tests.paths import CONFIGS

CLOUDS_CONFIG = CONFIGS / "clouds" / "sample.yaml"
TINY_CLOUDS = [
    "--model.depth",
    "2",
    "--model.base_filters",
    "4",
    "--model.max_filters",
    "8",
    "--data.crop_size",
    "32",
    "--data.batch_size",
    "4",
    "--data.samples_per_epoch",
    "8",
    "--trainer.logger",
    "false",
    "--quiet",
]
"""Options that shrink the sample clouds config to seconds per epoch (no logger, quiet)."""


def sample_clouds_argv(folder: Path, n_scenes: int, size: tuple[int, int], seed: int) -> list[str]:
    """``climdl sample-clouds FOLDER --n-scenes N --size W H --seed S --quiet``.

    Args:
        folder: where the scenes go.
        n_scenes: how many scenes.
        size: the scene size as the CLI takes it (two numbers).
        seed: the random seed.

    Returns:
        The argument list for :func:`climdl.cli.main` (without the program name).
    """
    return ["sample-clouds", str(folder), "--n-scenes", str(n_scenes),
            "--size", str(size[0]), str(size[1]), "--seed", str(seed), "--quiet"]  # fmt: skip


def train_tiny_segmenter(root: Path) -> Path:
    """Sample scenes under ``root`` and one short epoch of the tiny network on them.

    Five 48 x 40 training scenes (seed 3) in ``root/scenes``, two 40 x 40 test scenes (seed 4)
    in ``root/test``, the run in ``root/run``.

    Args:
        root: an empty folder.

    Returns:
        The run's best checkpoint.
    """
    assert main(sample_clouds_argv(root / "scenes", 5, (48, 40), 3)) == 0
    assert main(sample_clouds_argv(root / "test", 2, (40, 40), 4)) == 0
    data = ["--data.root", str(root / "scenes"), "--data.test_root", str(root / "test")]
    argv = train_argv(CLOUDS_CONFIG, root / "run", *data, "--trainer.max_epochs", "1")
    assert main([*argv, *TINY_CLOUDS]) == 0
    return next((root / "run").rglob("best-*.ckpt"))
