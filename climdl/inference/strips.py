"""Strip-wise emulator inference: the fine part of the Doury UNet one block of rows at a time.

Almost all of the Doury UNet's activation memory lies in the decoder levels beyond the input
resolution (64 filters at 64 x 64, 128 x 128, ... for a 16 x 16 input) and in the fusion with the
orography. Those levels have no skip connection, so they can run on a strip of rows of the coarse
part's ``S x S`` output, provided the strip carries a halo of the rows its output depends on.
:func:`plan_strips` derives that halo exactly from the modules
(:func:`climdl.inference.receptive.chain_rows`: the 3x3 convs of each level's block, the
stride-2 transposed convs that read one row below, the 1x1 head, the 3x3 fusion conv), level by
level: after each fine level a strip keeps only the rows the rest of the network needs, so the
halo is a few rows at every resolution instead of a few coarse rows blown up to the finest one.
:func:`predict_strips` runs the coarse part once per batch (cheap: it works on the ``S x S``
grid), then the fine part, the fusion and the task's post-processing strip by strip
(``task.predict_physical`` with ``net_out`` and ``rows``: the tasmax baseline is cut to the
strip), writing each strip's rows into the output. The result is the whole-grid prediction
(within float rounding), and the fine part's activation memory is that of one strip with its
halo instead of the whole grid.

A block is any positive number of output rows (the last strip may be shorter); multiples of
the output rows per coarse row (``2**fine_levels``, e.g. 8 for 16 x 16 -> 128 x 128) waste
least, and a block of at least the grid's rows is the whole grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from climdl.errors import ConfigError
from climdl.inference.receptive import chain_rows
from climdl.models.heads import FineCovariateHead
from climdl.models.unet import DouryUNet

__all__ = [
    "Strip",
    "StripPlan",
    "fine_modules",
    "forward_strip",
    "plan_strips",
    "predict_strips",
    "split_network",
]


def split_network(
    net: nn.Module, where: str = "the emulator"
) -> tuple[DouryUNet, FineCovariateHead | None]:
    """The Doury UNet inside ``net`` and the orography fusion around it (None without one).

    Args:
        net: a task's network.
        where: what to name in the error (e.g. the checkpoint's file).

    Returns:
        ``(unet, head)``: the network whose :meth:`DouryUNet.forward_coarse` and
        :meth:`DouryUNet.forward_fine` split it, and the fusion head or None.

    Raises:
        ConfigError: a network without the coarse/fine split (DeepESD, ...).
    """
    head = net if isinstance(net, FineCovariateHead) else None
    unet = head.net if head is not None else net
    if not isinstance(unet, DouryUNet):
        raise ConfigError(
            f"--block-rows needs a Doury UNet emulator, but {where} holds a "
            f"{type(unet).__name__}; run it without --block-rows."
        )
    return unet, head


def fine_modules(unet: DouryUNet, head: FineCovariateHead | None) -> list[nn.Module]:
    """The modules that run strip-wise, in forward order: the decoder levels beyond the input
    resolution, the head, and the orography fusion (if any)."""
    mods: list[nn.Module] = [*unet.decoder[unet.split_level :], unet.head]
    if head is not None:
        mods.append(head.fuse)
    return mods


@dataclass(frozen=True)
class Strip:
    """One strip: the output rows it delivers and the rows it computes at each level.

    Attributes:
        rows: ``(start, stop)`` of the output (fine) rows kept.
        window: ``(start, stop)`` of the coarse rows the fine part starts from: the rows under
            ``rows`` plus the halo, clipped to the grid.
        levels: ``(start, stop)`` of the rows kept after each fine decoder level (in that
            level's resolution): those the rest of the network needs for ``rows``, so the
            halo shrinks level by level instead of doubling with the resolution.
    """

    rows: tuple[int, int]
    window: tuple[int, int]
    levels: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class StripPlan:
    """How a grid is cut into strips.

    Attributes:
        factor: fine rows per coarse row (``2**fine_levels``).
        coarse_rows: rows of the coarse part's output (``S``).
        halo: ``(above, below)``: the most coarse rows of halo a strip starts from.
        strips: the strips, top to bottom; their ``rows`` tile the output exactly once.
    """

    factor: int
    coarse_rows: int
    halo: tuple[int, int]
    strips: tuple[Strip, ...]

    @property
    def fine_rows(self) -> int:
        """Rows of the output grid."""
        return self.coarse_rows * self.factor

    def describe(self) -> str:
        """One line for logs: strips, rows per strip, halo."""
        rows = self.strips[0].rows
        return (
            f"{len(self.strips)} strip(s) of {rows[1] - rows[0]} output rows, halo "
            f"{self.halo[0]} coarse row(s) above and {self.halo[1]} below"
        )


def plan_strips(net: nn.Module, block_rows: int, where: str = "the emulator") -> StripPlan:
    """Cut the output grid of ``net`` into strips of ``block_rows`` rows with exact halos.

    Each strip starts from the coarse rows its output depends on and, after each fine decoder
    level, keeps only the rows the rest of the network needs (:func:`chain_rows` backwards
    from the strip's output rows), so every kept value is the whole grid's and the work beyond
    the strip is a few rows per level.

    Args:
        net: a Doury UNet, possibly inside a :class:`FineCovariateHead`.
        block_rows: output rows per strip (the last strip may be shorter); any positive number
            (multiples of ``2**fine_levels`` waste least); at least the grid's rows: one strip.
        where: what to name in errors.

    Returns:
        The strips and their halos.

    Raises:
        ConfigError: a network without the split, or a block below one row.
    """
    unet, head = split_network(net, where)
    if block_rows < 1:
        raise ConfigError(
            f"--block-rows must be a positive number of output rows, got {block_rows}."
        )
    f = 2**unet.fine_levels
    side = unet.trimmed_size
    stages = list(unet.decoder[unet.split_level :])
    tail: list[nn.Module] = [unet.head] if head is None else [unet.head, head.fuse]
    strips: list[Strip] = []
    above = below = 0
    for a in range(0, side * f, block_rows):
        b = min(a + block_rows, side * f)
        lo, hi = chain_rows(tail, a, b - 1)
        levels: list[tuple[int, int]] = []
        for k in reversed(range(len(stages))):
            size = side * 2 ** (k + 1)
            levels.append((max(lo, 0), min(hi, size - 1) + 1))
            lo, hi = chain_rows([stages[k]], levels[-1][0], levels[-1][1] - 1)
        above, below = max(above, a // f - lo), max(below, hi - (b - 1) // f)
        window = (max(lo, 0), min(hi, side - 1) + 1)
        strips.append(Strip((a, b), window, tuple(reversed(levels))))
    return StripPlan(f, side, (above, below), tuple(strips))


def forward_strip(net: nn.Module, coarse: Tensor, strip: Strip) -> Tensor:
    """The network's output (normalised units) on the output rows of ``strip``.

    Args:
        net: the network of the plan.
        coarse: :meth:`DouryUNet.forward_coarse` of the batch, ``[B, C, S, S]``.
        strip: the strip.

    Returns:
        ``[B, out_channels, rows, W]``, equal to those rows of ``net(x, scalars)``.
    """
    unet, head = split_network(net)
    start, stop = strip.window
    h = coarse[:, :, start:stop]
    for stage, (a, b) in zip(unet.decoder[unet.split_level :], strip.levels, strict=True):
        h = stage(h)[:, :, a - 2 * start : b - 2 * start]
        assert h.shape[2] == b - a, "the rows a level needs lie outside what it computed"
        start = a
    out: Tensor = unet.head(h)
    if head is not None:
        out = head.fuse_strip(out, start)
    a, b = strip.rows
    return out[:, :, a - start : b - start]


def predict_strips(task: Any, batch: dict[str, Tensor], plan: StripPlan) -> Tensor:
    """``task.predict_physical(batch)`` computed strip by strip: ``[B, V, H, W]``.

    The coarse part runs once on the whole batch; each strip's fine part, fusion and physical
    post-processing (denormalisation, the tasmax baseline of its rows, pr clamped at 0) follow,
    and its rows go straight into the output, so only one strip's fine activations are alive.

    Args:
        task: a :class:`~climdl.tasks.downscaling.DownscalingTask` in eval mode.
        batch: a batch after ``task.on_after_batch_transfer`` (``x``, ``x_n``, ``aux_n``).
        plan: the strips (:func:`plan_strips` of ``task.net``).

    Returns:
        The predictions in physical units, as ``task.predict_physical(batch)`` gives them.
    """
    net = task.net
    unet, _ = split_network(net)
    if net.training:
        raise ConfigError("strip-wise inference needs the network in eval mode (BatchNorm).")
    coarse = unet.forward_coarse(batch["x_n"], batch["aux_n"] if task.n_scalars else None)
    out: Tensor | None = None
    for strip in plan.strips:
        net_out = forward_strip(net, coarse, strip)
        rows = torch.tensor(strip.rows)
        part = task.predict_physical({**batch, "net_out": net_out, "rows": rows})
        if out is None:
            out = part.new_empty((*part.shape[:2], plan.fine_rows, part.shape[3]))
        out[:, :, strip.rows[0] : strip.rows[1]] = part
    assert out is not None
    return out
