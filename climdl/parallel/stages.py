"""Cutting the Doury UNet into pipeline stages for ``torch.distributed.pipelining``.

The UNet is not a chain: the encoder's features at each resolution skip to the decoder level
of the same resolution, and the 1-D inputs join at the bottleneck. A stage therefore passes on
more than one tensor: the running feature map ``h``, the encoded 1-D inputs until they join,
and every skip tensor produced upstream and not yet consumed downstream. :class:`UNetStage`
runs a contiguous run of the network's *parts* and speaks this flat-tuple protocol, so any cut
between parts is valid and chaining all stages is exactly the network's forward pass.

Parts, in order: ``entry`` (entry conv, plus the 1-D input MLP, which is small and so always
runs in the first stage), ``enc0..encN`` (encoder levels), ``dec0..decM`` (decoder levels;
``dec0`` joins the 1-D inputs), ``head`` (1x1 conv) and, with the orography head, ``fuse``.
:func:`balanced_cuts` places the cuts to even out the forward FLOPs per stage (measured with
``torch.utils.flop_counter`` on one sample), since the high-resolution decoder levels carry most
of the compute while the deep encoder levels carry most of the parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import Any, Literal

import torch
from torch import Tensor, nn

from climdl.errors import ConfigError
from climdl.models.blocks import check_input
from climdl.models.heads import FineCovariateHead
from climdl.models.unet import DouryUNet

PartKind = Literal["entry", "enc", "dec", "head", "fuse"]


@dataclass(frozen=True)
class Part:
    """One cuttable piece of the network: its kind, its level, and the module paths (relative to
    the network passed to :func:`unet_parts`) of the modules it owns."""

    kind: PartKind
    level: int
    paths: tuple[str, ...]

    @property
    def name(self) -> str:
        """``entry``, ``enc2``, ``dec5``, ``head`` or ``fuse``."""
        return f"{self.kind}{self.level}" if self.kind in ("enc", "dec") else self.kind


def unwrap(net: nn.Module) -> tuple[DouryUNet, FineCovariateHead | None, str]:
    """The UNet inside ``net``, the orography head around it (if any) and the UNet's path."""
    if isinstance(net, DouryUNet):
        return net, None, ""
    if isinstance(net, FineCovariateHead) and isinstance(net.net, DouryUNet):
        return net.net, net, "net."
    raise ConfigError(
        "pipeline parallelism splits the Doury UNet (network: unet); "
        f"got {type(net).__name__}. Use ddp or fsdp for other networks."
    )


def unet_parts(net: nn.Module) -> list[Part]:
    """The network's parts in forward order (see the module docstring)."""
    unet, head, p = unwrap(net)
    entry = (f"{p}entry",) + ((f"{p}scalar_mlp",) if unet.scalar_mlp is not None else ())
    parts = [Part("entry", 0, entry)]
    parts += [Part("enc", i, (f"{p}encoder.{i}",)) for i in range(len(unet.encoder))]
    parts += [Part("dec", j, (f"{p}decoder.{j}",)) for j in range(len(unet.decoder))]
    parts.append(Part("head", 0, (f"{p}head",)))
    if head is not None:
        parts.append(Part("fuse", 0, ("fuse",)))
    return parts


@dataclass(frozen=True)
class Carry:
    """What flows across a cut: whether the encoded 1-D inputs are still pending, and how many
    skip tensors are in flight."""

    scalars: bool
    skips: int


def carry_after(net: nn.Module, n_parts: int) -> Carry:
    """The tensors that cross a cut placed after the first ``n_parts`` parts."""
    unet, _, _ = unwrap(net)
    parts = unet_parts(net)[:n_parts]
    n_down = len(unet.encoder)
    encoded = sum(p.kind == "enc" for p in parts)
    decoded = [p.level for p in parts if p.kind == "dec"]
    with_skip = sum(level < n_down for level in decoded)
    scalars = unet.scalar_mlp is not None and bool(parts) and not decoded
    return Carry(scalars=scalars, skips=encoded - with_skip)


class _ContiguousGrad(torch.autograd.Function):
    """Identity whose backward makes the gradient contiguous: the gradient that a stage sends
    back for a received tensor must be contiguous for point-to-point sends (the 1-D inputs'
    gradient is otherwise a strided slice of the bottleneck concatenation's)."""

    @staticmethod
    def forward(ctx: Any, t: Tensor) -> Tensor:
        return t.view_as(t)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return grad.contiguous()


class UNetStage(nn.Module):
    """Parts ``[start, stop)`` of the network as one module with flat tensor inputs/outputs.

    Inputs: ``(x,)`` or ``(x, scalars)`` for the first stage, else ``(h, [s], *skips)`` as the
    previous stage returned them. Output: the network's output for the last stage, else
    ``(h, [s], *skips)``. The modules are shared with ``net``, not copied.
    """

    covariates: Tensor

    def __init__(self, net: nn.Module, start: int, stop: int) -> None:
        super().__init__()
        unet, head, _ = unwrap(net)
        parts = unet_parts(net)
        if not 0 <= start < stop <= len(parts):
            raise ConfigError(
                f"a pipeline stage needs parts [start, stop) within 0..{len(parts)}, "
                f"got [{start}, {stop})."
            )
        self.parts = parts[start:stop]
        self.first, self.last = start == 0, stop == len(parts)
        self.carry_in = carry_after(net, start)
        self.n_down = len(unet.encoder)
        self.in_channels, self.in_size = unet.in_channels, unet.in_size
        self.has_scalars = unet.scalar_mlp is not None
        self.blocks = nn.ModuleDict()
        for part in self.parts:
            if part.kind == "entry":
                self.blocks["entry"] = unet.entry
                if unet.scalar_mlp is not None:
                    self.blocks["scalar_mlp"] = unet.scalar_mlp
            elif part.kind == "enc":
                self.blocks[part.name] = unet.encoder[part.level]
            elif part.kind == "dec":
                self.blocks[part.name] = unet.decoder[part.level]
            elif part.kind == "head":
                self.blocks["head"] = unet.head
            else:
                assert head is not None
                self.blocks["fuse"] = head.fuse
                self.register_buffer("covariates", head.covariates, persistent=False)

    @property
    def names(self) -> list[str]:
        """The names of this stage's parts."""
        return [p.name for p in self.parts]

    def forward(self, *inputs: Tensor) -> Tensor | tuple[Tensor, ...]:
        """Run this stage's parts on the tensors that crossed the previous cut."""
        s: Tensor | None = None
        skips: list[Tensor]
        if self.first:
            h = inputs[0]
            check_input(h, self.in_channels, self.in_size, "DouryUNet")
            scalars = inputs[1] if self.has_scalars else None
            skips = []
        else:
            received = [_ContiguousGrad.apply(t) if t.requires_grad else t for t in inputs]
            h = received[0]
            s = received[1] if self.carry_in.scalars else None
            skips = list(received[1 + int(self.carry_in.scalars) :])
        for part in self.parts:
            if part.kind == "entry":
                h = self.blocks["entry"](h)
                if self.has_scalars:
                    assert scalars is not None, "this UNet needs its 1-D inputs"
                    s = self.blocks["scalar_mlp"](scalars.to(h.dtype))
            elif part.kind == "enc":
                skip, h = self.blocks[part.name](h)
                skips.append(skip)
            elif part.kind == "dec":
                if part.level == 0 and s is not None:
                    h = torch.cat([h, s[:, :, None, None]], dim=1)
                    s = None
                skip_in = skips.pop() if part.level < self.n_down else None
                h = self.blocks[part.name](h, skip_in)
            elif part.kind == "head":
                h = self.blocks["head"](h)
            else:
                cov = self.covariates.to(h.dtype).unsqueeze(0).expand(h.shape[0], -1, -1, -1)
                h = self.blocks["fuse"](torch.cat([h, cov], dim=1))
        if self.last:
            return h
        out = [h, *([s] if s is not None else []), *skips]
        # a tensor passed through untouched leaves as a view, so that autograd sees an output
        return tuple(t.view_as(t) if any(t is i for i in inputs) else t for t in out)


def split(net: nn.Module, cuts: list[int]) -> list[UNetStage]:
    """Stages between consecutive ``cuts`` (part indices where a new stage starts)."""
    n = len(unet_parts(net))
    bounds = [0, *cuts, n]
    if any(b >= c for b, c in pairwise(bounds)):
        raise ConfigError(f"pipeline cuts must increase strictly within 1..{n - 1}, got {cuts}.")
    return [UNetStage(net, a, b) for a, b in pairwise(bounds)]


@torch.no_grad()
def part_flops(net: nn.Module) -> list[float]:
    """Forward FLOPs of each part for one sample (eval mode, so BatchNorm accepts one sample)."""
    from torch.utils.flop_counter import FlopCounterMode

    unet, _, _ = unwrap(net)
    was_training = net.training
    net.eval()
    try:
        p = next(net.parameters())
        carry: tuple[Tensor, ...] = (
            torch.zeros(1, unet.in_channels, *unet.in_size, device=p.device, dtype=p.dtype),
        )
        if unet.scalar_mlp is not None:
            carry = (*carry, torch.zeros(1, unet.n_scalars, device=p.device, dtype=p.dtype))
        flops: list[float] = []
        for stage in split(net, list(range(1, len(unet_parts(net))))):
            counter = FlopCounterMode(display=False)
            with counter:
                out = stage(*carry)
            flops.append(float(counter.get_total_flops()))
            carry = out if isinstance(out, tuple) else (out,)
    finally:
        net.train(was_training)
    return flops


def balanced_cuts(costs: list[float], n_stages: int) -> list[int]:
    """Cuts (start indices of stages 1..n-1) of ``costs`` into ``n_stages`` contiguous groups that
    minimise the largest group sum (dynamic programming; ties go to earlier cuts)."""
    n = len(costs)
    if not 1 <= n_stages <= n:
        raise ConfigError(
            f"cannot cut {n} network parts into {n_stages} pipeline stages; use 1 to {n} processes."
        )
    prefix = [0.0]
    for c in costs:
        prefix.append(prefix[-1] + c)
    inf = float("inf")
    # best[k][i]: the smallest maximum over the first i parts cut into k groups
    best = [[inf] * (n + 1) for _ in range(n_stages + 1)]
    arg = [[0] * (n + 1) for _ in range(n_stages + 1)]
    best[0][0] = 0.0
    for k in range(1, n_stages + 1):
        for i in range(k, n + 1):
            for j in range(k - 1, i):
                value = max(best[k - 1][j], prefix[i] - prefix[j])
                if value < best[k][i]:
                    best[k][i], arg[k][i] = value, j
    cuts, i = [], n
    for k in range(n_stages, 1, -1):
        i = arg[k][i]
        cuts.append(i)
    return sorted(cuts)
