"""One tiny ``climdl train`` launch with a step probe, as the distributed tests run it.

The launch goes through :mod:`climdl.parallel.testing` (the sample config shrunk to seconds, a
:class:`~climdl.parallel.probe.StepProbe` stacked last); Lightning starts the other ranks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from climdl.parallel.testing import (
    check,
    climdl_cmd,
    load_probe,
    probe_config,
    run_all,
    train_args,
)

TIMEOUT = 300
"""Seconds per launch; a run takes 10-40 s on two free cores."""


def run_options(
    batch_size: int, max_epochs: int, *extra: str, devices: int | None = None
) -> list[str]:
    """``[--trainer.devices D] --data.batch_size B --trainer.max_epochs E EXTRA...``.

    Args:
        batch_size: the per-rank batch size.
        max_epochs: the epoch the run ends after (3 steps per epoch).
        *extra: further options.
        devices: processes on this machine; left out, the strategy preset's count (2).

    Returns:
        The options, in that order.
    """
    first = [] if devices is None else ["--trainer.devices", str(devices)]
    sizes = ["--data.batch_size", str(batch_size), "--trainer.max_epochs", str(max_epochs)]
    return [*first, *sizes, *extra]


def train_and_probe(
    folder: Path,
    name: str,
    cache: Path,
    configs: list[Path],
    *extra: str,
    run_dir: Path | None = None,
) -> tuple[Path, dict[str, Any]]:
    """One ``climdl train`` process (Lightning launches the others), checked for exit code 0.

    Args:
        folder: where the probe (``<name>.pt``), its config and the log (``<name>.log``) go;
            also the working folder.
        name: the run's name.
        cache: the ``CLIMDL_CACHE`` that holds the sample.
        configs: configs stacked on the sample config (e.g. a strategy preset).
        *extra: further options.
        run_dir: the run folder; ``folder/name`` if None.

    Returns:
        The run folder and the probe's record (losses, gradients, ranks).
    """
    run_dir = run_dir or folder / name
    probe = folder / f"{name}.pt"
    cfg = probe_config(folder, probe)
    log = folder / f"{name}.log"
    codes = run_all(
        [climdl_cmd(train_args(run_dir, [*configs, cfg], *extra))],
        [log],
        TIMEOUT,
        envs=[{"CLIMDL_CACHE": str(cache)}],
        cwd=folder,
    )
    check(codes, [log])
    return run_dir, load_probe(probe)
