"""Callbacks to check a distributed set-up: record what training did, or kill a rank on purpose.

:class:`StepProbe` records the loss of every optimizer step (averaged over ranks and over
accumulated micro-batches) and the full gradients of the first steps (sharded DTensor gradients
gathered, pipeline stages merged), and writes them on rank 0 with ``torch.save``. Two runs of the
same config under different strategies can then be compared number by number; the tests do
exactly that, and so can a user validating a new cluster.

:class:`FaultInjector` kills one rank with SIGKILL at a given step of the first attempt, to
rehearse recovery: ``torchrun --max-restarts`` or SLURM requeue must bring the run back from its
last checkpoint.

Add them like any callback, e.g. in a config stacked last::

    trainer:
      callbacks+:
        - class_path: climdl.parallel.probe.StepProbe
          init_args: {path: probe.pt}
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
import torch.distributed as dist
from torch import Tensor

from climdl.parallel.launch import detect


def _full(t: Tensor) -> Tensor:
    """A plain CPU copy of a tensor, gathering a DTensor's shards (a collective)."""
    from torch.distributed.tensor import DTensor

    if isinstance(t, DTensor):
        t = t.full_tensor()
    return t.detach().float().cpu().clone()


class StepProbe(L.Callback):
    """Record per-step losses and the first steps' gradients; rank 0 writes them to ``path``.

    The file holds ``{"losses": {step: loss}, "grads": {step: {name: tensor}}, "world_size": n,
    "ranks": [info per rank]}``, each info saying the launcher, Lightning's cluster environment,
    strategy, node rank, the classes of the model's modules and the DTensor parameters' layouts.
    Losses are the training-step outputs averaged over ranks (and summed over accumulated
    micro-batches, whose losses Lightning has already divided by their number).

    Args:
        path: output file (``torch.save``; read back with ``torch.load(weights_only=True)``).
        grad_steps: record the gradients of optimizer steps ``0 .. grad_steps - 1``.
    """

    def __init__(self, path: str, grad_steps: int = 1) -> None:
        self.path = path
        self.grad_steps = grad_steps
        self.losses: dict[int, float] = {}
        self.grads: dict[int, dict[str, Tensor]] = {}
        self.info: dict[str, Any] = {}
        self._step = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Note how the run is laid out: launcher, strategy, module classes, parameter layouts."""
        from collections import Counter

        from torch.distributed.tensor import DTensor

        env = getattr(trainer.strategy, "cluster_environment", None)
        self.info = {
            "launcher": detect().launcher,
            "environment": type(env).__name__ if env is not None else None,
            "strategy": type(trainer.strategy).__name__,
            "num_nodes": trainer.num_nodes,
            "node_rank": trainer.node_rank,
            "modules": dict(Counter(type(m).__name__ for m in pl_module.modules())),
            "layouts": {
                name: f"{p.device_mesh.mesh_dim_names}:{list(map(repr, p.placements))}"
                for name, p in pl_module.named_parameters()
                if isinstance(p, DTensor)
            },
        }

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Note the optimizer step this batch contributes to."""
        self._step = trainer.global_step  # the optimizer step this batch contributes to

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """Add the batch's loss to its optimizer step's total."""
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if isinstance(loss, Tensor):
            self.losses[self._step] = self.losses.get(self._step, 0.0) + float(loss.detach())

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any
    ) -> None:
        """Keep the full gradients of the first ``grad_steps`` optimizer steps."""
        step = trainer.global_step
        if step >= self.grad_steps:
            return
        self.grads[step] = {
            name: _full(p.grad) for name, p in pl_module.named_parameters() if p.grad is not None
        }

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Average the losses over ranks and gather gradients and layouts; rank 0 writes them to ``path``."""
        steps = sorted(self.losses)
        values = torch.tensor([self.losses[s] for s in steps], dtype=torch.float64)
        grads: list[Any] = [self.grads]
        infos: list[Any] = [self.info]
        world = 1
        if dist.is_available() and dist.is_initialized():
            world = dist.get_world_size()
            dist.all_reduce(values)
            values /= world
            grads, infos = [None] * world, [None] * world
            dist.all_gather_object(grads, self.grads)
            dist.all_gather_object(infos, self.info)
        if trainer.global_rank != 0:
            return
        merged: dict[int, dict[str, Tensor]] = {}
        for part in grads:
            for step, named in part.items():
                for name, g in named.items():
                    merged.setdefault(step, {}).setdefault(name, g)
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        torch.save(
            {
                "losses": {s: float(v) for s, v in zip(steps, values.tolist(), strict=True)},
                "grads": merged,
                "world_size": world,
                "ranks": infos,
            },
            self.path,
        )


class FaultInjector(L.Callback):
    """Send ``signal`` (default SIGKILL: the rank dies on the spot) to rank ``rank`` when
    optimizer step ``step`` is about to start, on the first attempt only (torchrun's
    ``TORCHELASTIC_RESTART_COUNT`` / SLURM's ``SLURM_RESTART_COUNT`` is 0, and ``marker``, if
    given, does not exist yet; it is created just before the signal so that a relaunch by other
    means does not fault again). ``SIGUSR1`` rehearses SLURM's pre-emption warning: Lightning's
    handler writes ``hpc_ckpt_<n>.ckpt`` and runs ``scontrol requeue``.

    Args:
        step: the global step at which to fault.
        rank: the global rank that receives the signal.
        signal: ``SIGKILL``, ``SIGTERM`` or ``SIGUSR1``.
        marker: optional file recording that the fault happened.
    """

    def __init__(
        self,
        step: int,
        rank: int = 1,
        signal: Literal["SIGKILL", "SIGTERM", "SIGUSR1"] = "SIGKILL",
        marker: str | None = None,
    ) -> None:
        self.step, self.rank, self.signal, self.marker = step, rank, signal, marker

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Send ``signal`` to this process at the chosen step and rank (first run only)."""
        if trainer.global_step != self.step or trainer.global_rank != self.rank:
            return
        if detect().restart_count > 0 or (self.marker and Path(self.marker).exists()):
            return
        if self.marker:
            Path(self.marker).touch()
        os.kill(os.getpid(), getattr(signal, self.signal))
