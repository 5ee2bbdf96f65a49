"""The plan of a pipeline rank: which stage of the Doury UNet it runs, and with what shapes.

:func:`partition` cuts the task's network into one stage per rank (:mod:`climdl.parallel.stages`
finds the cuts) and replaces the parts the rank does not hold by :class:`Absent`; the
:class:`Plan` it returns keeps what the strategy needs later: the rank's stage, the static
shapes of its inputs and outputs for the schedules, and the whole network's parameter and
state names for checkpoints. :func:`microbatches` sizes the micro-batches of a batch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from climdl.errors import ConfigError
from climdl.parallel.stages import UNetStage, balanced_cuts, part_flops, split, unet_parts, unwrap

log = logging.getLogger(__name__)

__all__ = ["Absent", "Plan", "microbatches", "partition", "stage_signatures"]


class Absent(nn.Module):
    """Stands in for a part of the network that lives on another pipeline rank."""

    def __init__(self, rank: int, path: str) -> None:
        super().__init__()
        self.rank, self.path = rank, path

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Refuse to run: this part of the network lives on another rank."""
        raise RuntimeError(
            f"{self.path} lives on pipeline rank {self.rank}; run the network "
            "through PipelineStrategy, or load a checkpoint for a full copy."
        )


@dataclass
class Plan:
    """This rank's stage and what checkpoints need to reassemble the whole network."""

    stage: UNetStage
    stage_names: list[list[str]]
    param_names: list[str]  # the full task's parameters, in optimizer order
    state_keys: list[str]  # the full task's state-dict keys, in order
    out_shape: tuple[int, int, int]  # network output [C, H, W]
    inputs: list[tuple[tuple[int, ...], torch.dtype]]  # this stage's inputs, per sample
    outputs: list[tuple[tuple[int, ...], torch.dtype]]  # this stage's outputs, per sample
    schedules: dict[tuple[int, bool], Any] = field(default_factory=dict)


def _signature(tensors: tuple[Tensor, ...]) -> list[tuple[tuple[int, ...], torch.dtype]]:
    return [(tuple(t.shape[1:]), t.dtype) for t in tensors]


def microbatches(batch_size: int, wanted: int) -> int:
    """The largest number of equal micro-batches, at most ``wanted``, that ``batch_size`` splits
    into (the stages' buffers have static shapes; a last batch of 10 with 4 wanted runs 2 x 5)."""
    return max(n for n in range(1, min(wanted, batch_size) + 1) if batch_size % n == 0)


def partition(
    task: Any, world_size: int, rank: int, split_before: list[str] | None, precision: Any
) -> Plan:
    """Cut ``task.net`` into one stage per rank and drop the other ranks' parts from it.

    Args:
        task: the DownscalingTask (its ``net`` is changed in place: the parts of the other
            stages become :class:`Absent`).
        world_size: the number of stages (one per rank).
        rank: this rank.
        split_before: part names that start stages 1..n-1, or None to balance forward FLOPs.
        precision: the strategy's precision plugin (activation dtypes under autocast).

    Returns:
        This rank's :class:`Plan`.
    """
    net = getattr(task, "net", None)
    if net is None or not all(hasattr(task, a) for a in ("compute_loss", "log_training")):
        raise ConfigError("the pipeline strategy trains climdl's DownscalingTask (network: unet).")
    unet, head, _ = unwrap(net)
    parts = unet_parts(net)
    n = world_size
    if split_before:
        names = [p.name for p in parts]
        unknown = [s for s in split_before if s not in names]
        if unknown or len(split_before) != n - 1:
            raise ConfigError(
                f"split_before needs {n - 1} part name(s) for {n} stages, from "
                f"{names}; got {split_before}."
            )
        cuts = sorted(names.index(s) for s in split_before)
    else:
        cuts = balanced_cuts(part_flops(net), n)
    stages = split(net, cuts)
    signatures = stage_signatures(net, stages, precision)
    final: Any = head.fuse[-1] if head is not None else unet.head
    plan = Plan(
        stage=stages[rank],
        stage_names=[s.names for s in stages],
        param_names=[k for k, _ in task.named_parameters()],
        state_keys=list(task.state_dict().keys()),
        out_shape=(int(final.out_channels), *unet.out_size),
        inputs=signatures[rank][0],
        outputs=signatures[rank][1],
    )
    if rank == 0:
        log.info("pipeline stages: %s", " | ".join(",".join(n) for n in plan.stage_names))
    for other, stage in enumerate(stages):
        if other != rank:
            for part in stage.parts:
                for path in part.paths:
                    net.set_submodule(path, Absent(other, path))
    return plan


@torch.no_grad()
def stage_signatures(net: nn.Module, stages: list[UNetStage], precision: Any) -> list[Any]:
    """Per-sample shapes and dtypes of every stage's inputs and outputs, from one sample
    through all stages (eval mode: BatchNorm statistics are untouched), under the run's
    precision (autocast changes activation dtypes). The schedules get them as static
    metadata, so torch's pipelining never runs a stage on uninitialised tensors to infer
    shapes (which would feed garbage into BatchNorm's running statistics).

    Args:
        net: the whole network.
        stages: its stages (:func:`climdl.parallel.stages.split`).
        precision: the strategy's precision plugin.

    Returns:
        One (inputs, outputs) pair of [(shape, dtype)] lists per stage.
    """
    unet, _, _ = unwrap(net)
    p = next(net.parameters())
    carry: tuple[Tensor, ...] = (torch.zeros(1, unet.in_channels, *unet.in_size, device=p.device),)
    if unet.scalar_mlp is not None:
        carry = (*carry, torch.zeros(1, unet.n_scalars, device=p.device))
    was_training = net.training
    net.eval()
    out: list[Any] = []
    try:
        with precision.train_step_context():
            for stage in stages:
                result = stage(*carry)
                outputs = result if isinstance(result, tuple) else (result,)
                out.append((_signature(carry), _signature(outputs)))
                carry = outputs
    finally:
        net.train(was_training)
    return out
