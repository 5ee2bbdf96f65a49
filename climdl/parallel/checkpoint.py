"""Sharded (distributed) checkpoints to one ordinary checkpoint file.

Under ``fsdp`` and ``tensor`` (Lightning's ``ModelParallelStrategy`` with
``save_distributed_checkpoint: true``) every rank writes its own shard of weights and optimizer
state with ``torch.distributed.checkpoint``: ``last.ckpt`` is a folder of ``__<rank>_0.distcp``
files plus ``meta.pt`` (epoch, loops, hyper-parameters and climdl's data spec). Such a folder
resumes training on any number of ranks (``--ckpt_path last``), but inference
(``climdl downscale``, :func:`climdl.tasks.checkpoint.load_emulator`) reads one file.
:func:`consolidate` writes that file: the full weights, and the optimizer state in the layout of
a single-process run (parameters numbered in ``named_parameters`` order), so it also resumes
training under ``single``, ``ddp`` or ``pipeline``.

:class:`RestartCheckpoint` is the step-wise checkpoint of ``configs/strategy/restartable.yaml``
that torchrun restarts and SLURM requeues resume from.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from climdl.errors import ConfigError, DataError, OutputError

META = "meta.pt"


def is_sharded(path: str | Path) -> bool:
    """Whether ``path`` is a distributed-checkpoint folder (``meta.pt`` and ``*.distcp``)."""
    p = Path(path)
    return p.is_dir() and (p / META).is_file() and any(p.glob("*.distcp"))


def _indexed_optimizer(state: dict[str, Any]) -> dict[str, Any]:
    """A name-keyed optimizer state (``get_optimizer_state_dict``) in ``optimizer.state_dict()``
    layout: parameters numbered in the order of the param groups."""
    groups, out_state, index = [], {}, 0
    for group in state["param_groups"]:
        ids = []
        for name in group["params"]:
            if name in state["state"]:
                out_state[index] = state["state"][name]
            ids.append(index)
            index += 1
        groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": ids})
    return {"state": out_state, "param_groups": groups}


def load_sharded(path: str | Path) -> dict[str, Any]:
    """A distributed-checkpoint folder as one checkpoint dictionary (in memory, on the CPU)."""
    from lightning.fabric.utilities.load import _load_distributed_checkpoint

    folder = Path(path)
    if not is_sharded(folder):
        raise DataError(
            f"{folder} is not a sharded checkpoint folder (meta.pt and *.distcp files)."
        )
    ckpt = _load_distributed_checkpoint(folder)
    if "model" in ckpt:  # Fabric's key
        ckpt["state_dict"] = ckpt.pop("model")
    keys = sorted((k for k in ckpt if re.fullmatch(r"optimizer_\d+", k)), key=lambda k: int(k[10:]))
    states = [ckpt.pop(k) for k in keys]
    if states:
        ckpt["optimizer_states"] = [
            _indexed_optimizer(s)
            if s["param_groups"]
            and s["param_groups"][0]["params"]
            and isinstance(s["param_groups"][0]["params"][0], str)
            else s
            for s in states
        ]
    return ckpt


def consolidate(
    path: str | Path,
    out: str | Path | None = None,
    weights_only: bool = False,
    overwrite: bool = False,
) -> Path:
    """Write the sharded checkpoint folder ``path`` as one file (default: beside it, named
    ``consolidated-<name>``, a name that ``--ckpt_path last`` does not pick up). With
    ``weights_only`` the optimizer and loop states are left out (a smaller inference file).
    The file is written under a temporary name and renamed when complete."""
    folder = Path(path)
    target = Path(out) if out is not None else folder.with_name(f"consolidated-{folder.name}")
    if target.exists() and not overwrite:
        raise OutputError(f"{target} exists; pass overwrite (--overwrite) to replace it.")
    ckpt = load_sharded(folder)
    if weights_only:
        for key in ("optimizer_states", "lr_schedulers", "loops", "callbacks"):
            ckpt.pop(key, None)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        torch.save(ckpt, tmp)
        tmp.replace(target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {target}: {exc.strerror or exc}.") from exc
    return target


class RestartCheckpoint(ModelCheckpoint):
    """A checkpoint every ``every_n_train_steps`` optimizer steps, kept in
    ``<default_root_dir>/checkpoints/<filename>.ckpt`` whatever the loggers do, so that
    ``--ckpt_path last`` finds it after a restart.

    Lightning's ModelCheckpoint writes into the first logger's versioned folder
    (``csv/version_3/checkpoints``) and ``--ckpt_path last`` looks in the folder of the *current*
    version, which a restarted run has just made empty. This callback uses a fixed folder and a
    ``last``-prefixed name (Lightning's ``--ckpt_path last`` takes the newest ``last*.ckpt`` of
    all checkpoint callbacks), keeps only the newest file and overwrites it in place.

    Args:
        every_n_train_steps: steps between checkpoints: the most work a failure can lose.
        filename: file name without ``.ckpt``; must start with ``last``.
        dirpath: folder (default ``<default_root_dir>/checkpoints``).
    """

    def __init__(
        self,
        every_n_train_steps: int = 200,
        filename: str = "last-step",
        dirpath: str | None = None,
    ) -> None:
        if not filename.startswith(self.CHECKPOINT_NAME_LAST):
            raise ConfigError(
                f"RestartCheckpoint's filename must start with 'last' (got "
                f"{filename!r}) so that --ckpt_path last finds it."
            )
        if every_n_train_steps < 1:
            raise ConfigError(f"every_n_train_steps must be 1 or more, got {every_n_train_steps}.")
        super().__init__(
            dirpath=dirpath,
            filename=filename,
            save_top_k=1,
            every_n_train_steps=every_n_train_steps,
            enable_version_counter=False,
        )

    def _folder(self, trainer: L.Trainer) -> Path:
        return (
            Path(self.dirpath) if self.dirpath else Path(trainer.default_root_dir) / "checkpoints"
        )

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Fix the folder before Lightning would pick the logger's."""
        self.dirpath = str(self._folder(trainer))
        super().setup(trainer, pl_module, stage)

    def _find_last_checkpoints(self, trainer: L.Trainer) -> set[str]:
        folder = self._folder(trainer)
        if not folder.is_dir():
            return set()
        return {os.path.normpath(p) for p in folder.glob(f"{self.CHECKPOINT_NAME_LAST}*.ckpt")}
