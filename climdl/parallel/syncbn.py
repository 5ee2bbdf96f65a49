"""Batch normalisation over the global batch of all data-parallel ranks, on any device.

Under data parallelism each rank normalises with the statistics of its own slice of the batch,
so the same global batch trains differently on 1, 2 or 8 ranks, and with Doury's batch of 32
split over 8 GPUs every BatchNorm sees 4 samples. :class:`GlobalBatchNorm` computes the mean
and variance over the whole global batch (one small all-reduce per layer in the forward pass,
one in the backward pass; only the layer's input is kept for the backward pass), which makes a
data-parallel run reproduce the single-process run with the same global batch. ``torch.nn.SyncBatchNorm`` does the same on
GPUs only; this module also runs on CPU with gloo, which is how the tests check it.

:class:`GlobalSyncBatchNorm` is the Lightning ``LayerSync`` plugin that swaps every BatchNorm of
the model for a :class:`GlobalBatchNorm` (``trainer: {plugins: [...]}`` in
``configs/strategy/ddp.yaml``); the FSDP2 set-up in :mod:`climdl.parallel.strategies` applies
it before sharding. The swap keeps parameter and buffer names, so checkpoints are identical to
those of plain BatchNorm and load anywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from lightning.pytorch.plugins.layer_sync import LayerSync
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

_PLAIN: dict[int, type[_BatchNorm]] = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


def _wide(t: Tensor) -> Tensor:
    """``t`` in at least float32 (bf16/fp16 statistics lose too much; float64 stays)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


class _GlobalNorm(torch.autograd.Function):
    """``(x - mean) * invstd * weight + bias`` with global statistics; the backward pass is
    BatchNorm's, with the per-channel sums of ``dy`` and ``dy * xhat`` all-reduced over the
    group (the gradient of every rank's loss through the shared statistics)."""

    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        weight: Tensor | None,
        bias: Tensor | None,
        mean: Tensor,
        invstd: Tensor,
        total: Tensor,
        group: Any,
    ) -> Tensor:
        shape = (1, -1, *[1] * (x.dim() - 2))
        y = (_wide(x) - mean.view(shape)) * invstd.view(shape)
        if weight is not None and bias is not None:
            y = y * _wide(weight).view(shape) + _wide(bias).view(shape)
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.total, ctx.group = total, group
        return y.to(x.dtype)

    @staticmethod
    def backward(ctx: Any, gy: Tensor) -> tuple[Tensor | None, ...]:
        x, weight, mean, invstd = ctx.saved_tensors
        shape = (1, -1, *[1] * (x.dim() - 2))
        dims = [0, *range(2, x.dim())]
        xhat = (_wide(x) - mean.view(shape)) * invstd.view(shape)
        g = _wide(gy)
        sum_dy = g.sum(dims)
        sum_dy_xhat = (g * xhat).sum(dims)
        table = torch.cat([sum_dy, sum_dy_xhat])
        dist.all_reduce(table, group=ctx.group)
        c = x.shape[1]
        scale = invstd if weight is None else invstd * _wide(weight)
        gx = scale.view(shape) * (
            g - (table[:c] / ctx.total).view(shape) - xhat * (table[c:] / ctx.total).view(shape)
        )
        has_affine = weight is not None
        gw = sum_dy_xhat.to(weight.dtype) if has_affine else None
        gb = sum_dy.to(weight.dtype) if has_affine else None
        return gx.to(x.dtype), gw, gb, None, None, None, None


class GlobalBatchNorm(_BatchNorm):
    """BatchNorm whose training statistics span the global batch of a process group.

    Each rank reduces its slice to ``(count, mean, M2)`` per channel (two local passes, so no
    cancellation), the ranks exchange these ``2C + 1`` numbers with one all-reduce, and Chan's
    formula combines them. Outside training, or in a single process, it is plain BatchNorm.
    The running variance uses the unbiased global variance, as ``F.batch_norm`` does.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        process_group: Any = None,
        plain_dims: int = 2,
    ) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        self.process_group = process_group
        self.plain_dims = plain_dims

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"GlobalBatchNorm expects at least 2-D input, got {input.dim()}-D.")

    def _world(self) -> int:
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return 1
        return int(dist.get_world_size(self.process_group))

    def forward(self, input: Tensor) -> Tensor:
        """Normalise ``[B, C, ...]`` with global batch statistics while training.

        The statistics are computed without autograd; :class:`_GlobalNorm` then normalises and
        saves only the input for the backward pass (as plain BatchNorm does), where the
        gradient's two per-channel sums are all-reduced - so a rank keeps one copy of the
        layer's input, not the three the composed operations would keep.
        """
        self._check_input_dim(input)
        world = self._world()
        if world == 1:
            return super().forward(input)
        with torch.no_grad():
            dims = [0, *range(2, input.dim())]
            x = _wide(input)
            c = x.shape[1]
            count = torch.tensor(float(x.numel() // c), device=x.device)
            mean = x.mean(dim=dims)
            m2 = (x - mean.view(1, -1, *[1] * (x.dim() - 2))).square().sum(dim=dims)
            rank = dist.get_rank(self.process_group)
            table = torch.zeros(world, 1 + 2 * c, device=x.device, dtype=x.dtype)
            table[rank] = torch.cat([count.view(1), mean, m2])
            dist.all_reduce(table, group=self.process_group)  # an all-gather of (n, mean, M2)
            counts, means, m2s = table[:, :1], table[:, 1 : 1 + c], table[:, 1 + c :]
            total = counts.sum()
            g_mean = (counts * means).sum(0) / total
            g_m2 = (m2s + counts * (means - g_mean).square()).sum(0)
            invstd = torch.rsqrt(g_m2 / total + self.eps)
            if (
                self.track_running_stats
                and self.running_mean is not None
                and self.running_var is not None
            ):
                assert self.num_batches_tracked is not None
                self.num_batches_tracked.add_(1)
                factor = (
                    1.0 / float(self.num_batches_tracked)
                    if self.momentum is None
                    else self.momentum
                )
                unbiased = g_m2 / (total - 1).clamp_min(1)
                self.running_mean.mul_(1 - factor).add_(
                    g_mean.to(self.running_mean.dtype), alpha=factor
                )
                self.running_var.mul_(1 - factor).add_(
                    unbiased.to(self.running_var.dtype), alpha=factor
                )
        weight = self.weight if self.affine else None
        bias = self.bias if self.affine else None
        out: Tensor = _GlobalNorm.apply(
            input, weight, bias, g_mean, invstd, total, self.process_group
        )
        return out

    def to_plain(self) -> _BatchNorm:
        """The equivalent plain ``BatchNorm{1,2,3}d`` sharing this layer's tensors."""
        plain = _PLAIN.get(self.plain_dims, nn.BatchNorm2d)(
            self.num_features, self.eps, self.momentum, self.affine, self.track_running_stats
        )
        _share_state(self, plain)
        return plain


def _share_state(src: _BatchNorm, dst: _BatchNorm) -> None:
    """Make ``dst`` use ``src``'s parameters and buffers (same objects: optimizer refs hold)."""
    if src.affine:
        dst.weight = src.weight
        dst.bias = src.bias
    dst.running_mean = src.running_mean
    dst.running_var = src.running_var
    dst.num_batches_tracked = src.num_batches_tracked
    dst.train(src.training)


def swap_modules(module: nn.Module, swap: Callable[[nn.Module], nn.Module | None]) -> nn.Module:
    """Replace, depth first, every submodule for which ``swap`` returns a module (in place for
    children; the returned module replaces ``module`` itself when ``swap`` takes it)."""
    new = swap(module)
    if new is not None:
        return new
    for name, child in module.named_children():
        new_child = swap_modules(child, swap)
        if new_child is not child:
            setattr(module, name, new_child)
    return module


def convert_batchnorm(module: nn.Module, process_group: Any = None) -> nn.Module:
    """Swap every plain BatchNorm in ``module`` for a :class:`GlobalBatchNorm` (in place for
    children; the returned module replaces ``module`` itself when it is a BatchNorm)."""

    def swap(m: nn.Module) -> nn.Module | None:
        if not isinstance(m, _BatchNorm) or isinstance(m, GlobalBatchNorm | nn.SyncBatchNorm):
            return None
        dims = next((d for d, cls in _PLAIN.items() if isinstance(m, cls)), 2)
        new = GlobalBatchNorm(
            m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats, process_group, dims
        )
        _share_state(m, new)
        return new

    return swap_modules(module, swap)


def revert_batchnorm(module: nn.Module) -> nn.Module:
    """Undo :func:`convert_batchnorm`: plain BatchNorm layers sharing the same tensors."""
    return swap_modules(module, lambda m: m.to_plain() if isinstance(m, GlobalBatchNorm) else None)


class GlobalSyncBatchNorm(LayerSync):
    """Lightning plugin: global-batch BatchNorm under DDP (and FSDP2 via climdl's set-up).

    Use ``trainer: {plugins: [climdl.parallel.syncbn.GlobalSyncBatchNorm]}`` instead of
    ``sync_batchnorm: true``, which needs CUDA. It has no effect in a single process.
    """

    def __init__(self, process_group: Any = None) -> None:
        self.process_group = process_group

    def apply(self, model: nn.Module) -> nn.Module:
        """Swap the model's BatchNorm layers for :class:`GlobalBatchNorm`."""
        return convert_batchnorm(model, self.process_group)

    def revert(self, model: nn.Module) -> nn.Module:
        """Swap them back (same tensors), e.g. for inference after training."""
        return revert_batchnorm(model)
