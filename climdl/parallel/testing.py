"""Helpers to run tiny distributed trainings through the real ``climdl train`` and compare them.

Used by ``tests/parallel/`` and handy for checking a new machine or cluster: every run
is a separate process tree (Lightning's own launcher, torchrun, or hand-made SLURM/torchrun
environments), started with ``OMP_NUM_THREADS=1`` and a timeout, writing a
:class:`~climdl.parallel.probe.StepProbe` file that :func:`max_rel_diff` and
:func:`grad_rel_l2` compare. The model is the sample config's UNet shrunk to 4-8 filters, three
training batches per epoch and one validation batch, so a 2-process run takes seconds of compute.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

import climdl
from climdl.configs import preset_dir

REPO = Path(climdl.__file__).resolve().parents[1]
CONFIGS = preset_dir()
SAMPLE = CONFIGS / "emulator" / "sample.yaml"

TINY_MODEL = [
    "--model.base_filters",
    "4",
    "--model.max_filters",
    "8",
    "--model.extra_filters",
    "4",
    "--model.head_features",
    "4",
]
"""Model options that shrink the sample config's UNet to 4-8 filters."""

TINY = [
    *TINY_MODEL,
    "--quiet",
    "--trainer.limit_train_batches",
    "3",
    "--trainer.limit_val_batches",
    "1",
    "--data.test_period",
    "null",
]
"""Options that shrink the sample config to a few seconds of training (3 steps per epoch)."""

NO_LOGGERS = ["--trainer.logger", "false"]
"""Without loggers, checkpoints go to ``<run>/checkpoints`` (else to the logger's version)."""


def strategy_config(name: str) -> Path:
    """``configs/strategy/<name>.yaml``."""
    return CONFIGS / "strategy" / f"{name}.yaml"


def probe_config(
    folder: Path,
    probe: Path,
    fault: Mapping[str, Any] | None = None,
    restart_every: int | None = None,
) -> Path:
    """A config that appends a StepProbe writing ``probe`` (a FaultInjector with ``fault`` as
    its arguments, a RestartCheckpoint every ``restart_every`` steps) to the callbacks; stack it
    last."""
    callbacks: list[dict[str, Any]] = [
        {"class_path": "climdl.parallel.probe.StepProbe", "init_args": {"path": str(probe)}}
    ]
    if fault is not None:
        callbacks.append(
            {"class_path": "climdl.parallel.probe.FaultInjector", "init_args": dict(fault)}
        )
    if restart_every is not None:
        callbacks.append(
            {
                "class_path": "climdl.parallel.checkpoint.RestartCheckpoint",
                "init_args": {"every_n_train_steps": restart_every},
            }
        )
    path = folder / f"probe-{probe.stem}.yaml"
    path.write_text(yaml.safe_dump({"trainer": {"callbacks+": callbacks}}))
    return path


def train_args(
    run_dir: Path, configs: Sequence[Path], *extra: str, loggers: bool = False
) -> list[str]:
    """``climdl train`` arguments: the sample config, then ``configs``, then the tiny options
    (and no loggers unless ``loggers``)."""
    args = ["train", "--config", str(SAMPLE)]
    for c in configs:
        args += ["--config", str(c)]
    quiet = [] if loggers else NO_LOGGERS
    return [*args, "--trainer.default_root_dir", str(run_dir), *TINY, *quiet, *extra]


def climdl_cmd(args: Sequence[str]) -> list[str]:
    """``python -m climdl.cli ARGS`` with this interpreter."""
    return [sys.executable, "-m", "climdl.cli", *args]


def torchrun_cmd(torchrun: Sequence[str], args: Sequence[str]) -> list[str]:
    """``python -m torch.distributed.run TORCHRUN -m climdl.cli ARGS``."""
    return [sys.executable, "-m", "torch.distributed.run", *torchrun, "-m", "climdl.cli", *args]


def run_all(
    cmds: Sequence[Sequence[str]],
    logs: Sequence[Path],
    timeout: float,
    envs: Sequence[Mapping[str, str]] | None = None,
    cwd: Path | None = None,
) -> list[int]:
    """Run ``cmds`` concurrently (e.g. the nodes of a simulated multi-node job), each in its own
    session with its output in ``logs``; kill every process tree left at ``timeout`` seconds.
    Returns the exit codes (-9 for killed)."""
    base = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    procs = []
    for i, (cmd, log) in enumerate(zip(cmds, logs, strict=True)):
        env = {**base, **(envs[i] if envs else {})}
        with open(log, "w") as out:
            procs.append(
                subprocess.Popen(
                    list(cmd),
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=cwd,
                    start_new_session=True,
                )
            )
    deadline = time.monotonic() + timeout
    codes: list[int] = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=max(1.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            codes.append(-9)
    for p in procs:  # what is left of our children's sessions (launched workers included)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    return codes


def check(codes: Sequence[int], logs: Sequence[Path], expected: int = 0) -> None:
    """Raise AssertionError with the logs' tails unless every exit code is ``expected``."""
    if all(c == expected for c in codes):
        return
    tails = "\n".join(
        f"--- {log} (exit {c}) ---\n"
        + "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        for c, log in zip(codes, logs, strict=True)
    )
    raise AssertionError(f"exit codes {list(codes)}, expected {expected}:\n{tails}")


def load_probe(path: Path) -> dict[str, Any]:
    """A StepProbe file."""
    out: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    return out


def max_rel_diff(a: Mapping[int, float], b: Mapping[int, float], steps: Sequence[int]) -> float:
    """The largest relative difference of two loss series over ``steps``."""
    return max(abs(a[s] - b[s]) / abs(a[s]) for s in steps)


def grad_rel_l2(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> float:
    """``|a - b| / |a|`` over all gradients together (same names required)."""
    if set(a) != set(b):
        raise AssertionError(f"different parameters: {sorted(set(a) ^ set(b))[:5]}")
    num = sum(float((a[k] - b[k]).double().square().sum()) for k in a)
    den = sum(float(a[k].double().square().sum()) for k in a)
    return (num / den) ** 0.5


def state_rel_l2(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, float]:
    """Relative L2 differences of two checkpoints' weights (floating tensors of the state dict)
    and Adam moments (``exp_avg``, ``exp_avg_sq`` of the first optimizer)."""
    keys = [
        k
        for k, v in b["state_dict"].items()
        if isinstance(v, torch.Tensor) and v.is_floating_point()
    ]
    out = {
        "weights": grad_rel_l2(
            {k: a["state_dict"][k].float() for k in keys},
            {k: b["state_dict"][k].float() for k in keys},
        )
    }
    sa, sb = a["optimizer_states"][0]["state"], b["optimizer_states"][0]["state"]
    for moment in ("exp_avg", "exp_avg_sq"):
        out[moment] = grad_rel_l2(
            {str(i): sa[i][moment] for i in sb}, {str(i): sb[i][moment] for i in sb}
        )
    return out
