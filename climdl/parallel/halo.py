"""Halo exchange between the row strips of a domain group, and the layers that use it.

A strip of rows gets its neighbours' edge rows with point-to-point sends (:func:`halo_rows`,
an autograd function: in the backward pass the halo rows' gradients go back to their owners and
are added to their edge rows; beyond the domain's outer edges the halo is the layer's padding
value). :func:`convert_halo` swaps the layers that see across rows for halo versions sharing the
same parameters (names unchanged, so checkpoints are those of the plain network): 3x3
convolutions, the Doury UNet's stride-2 kernel-3 transposed convolution and the inception block's
3x3 stride-1 max-pooling. The convolutions add the thin halo rows' contribution to the
zero-padded layer's output (by linearity) instead of convolving a padded copy, so a strip keeps
only what the plain layer keeps for its rows. :func:`partition` cuts a grid into strips that
start on multiples of the network's pooling factor, so 2x2 pooling and 2x2 stride-2 transposed
convolutions stay local. :mod:`climdl.parallel.domain` builds domain parallelism on these.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from climdl.errors import ConfigError
from climdl.parallel.syncbn import swap_modules

HALO_ROWS = 1
"""Rows a strip needs from each neighbour at every layer that sees across rows (3x3 kernels)."""


# ---------------------------------------------------------------------------- the domain
@dataclass(frozen=True)
class Domain:
    """Where this process sits in its domain group.

    Attributes:
        size: strips (processes) per domain group.
        rank: this process's strip, 0 at the top (first rows).
        group: the domain group's process group (None: the default group).
        prev: global rank holding the strip above, None for the first strip.
        next: global rank holding the strip below, None for the last strip.
    """

    size: int
    rank: int
    group: Any = None
    prev: int | None = None
    next: int | None = None

    @classmethod
    def from_group(cls, group: Any) -> Domain:
        """The domain of this process in ``group`` (its ranks in order are the strips)."""
        size = dist.get_world_size(group)
        rank = dist.get_rank(group)
        prev = dist.get_global_rank(group, rank - 1) if rank > 0 else None
        nxt = dist.get_global_rank(group, rank + 1) if rank < size - 1 else None
        return cls(size, rank, group, prev, nxt)

    def block(self, n: int, multiple: int = 1) -> tuple[int, int]:
        """This strip's rows ``(start, stop)`` of an ``n``-row grid (see :func:`partition`)."""
        return partition(n, self.size, multiple)[self.rank]


def partition(n: int, blocks: int, multiple: int = 1) -> list[tuple[int, int]]:
    """Cut ``n`` rows into ``blocks`` contiguous strips whose bounds are multiples of
    ``multiple`` (the network's pooling factor), as even as possible, the larger strips first.

    Raises:
        ConfigError: ``n`` is not a multiple of ``multiple``, or there are fewer units of
            ``multiple`` rows than strips (a strip would be narrower than the network's halo at
            its coarsest sharded level).
    """
    if blocks < 1 or multiple < 1:
        raise ConfigError(f"cannot cut rows into {blocks} strips of multiples of {multiple}.")
    if n % multiple:
        raise ConfigError(
            f"domain parallelism needs a grid of a multiple of {multiple} rows (the network "
            f"halves it {multiple.bit_length() - 1} times), got {n}; crop or pad the domain."
        )
    units = n // multiple
    if units < blocks:
        raise ConfigError(
            f"{n} rows cannot be cut into {blocks} strips: each strip needs at least {multiple} "
            f"rows ({HALO_ROWS} row at the network's coarsest sharded level, the halo of its 3x3 "
            f"kernels); use at most {units} domain blocks."
        )
    q, r = divmod(units, blocks)
    bounds, start = [], 0
    for b in range(blocks):
        stop = start + (q + (1 if b < r else 0)) * multiple
        bounds.append((start, stop))
        start = stop
    return bounds


# ---------------------------------------------------------------------------- halo exchange
def _exchange(sends: list[tuple[Tensor, int]], recvs: list[tuple[Tensor, int]]) -> None:
    """Post every send and receive together, then wait (no ordering deadlock)."""
    ops = [dist.P2POp(dist.isend, t.contiguous(), peer) for t, peer in sends]
    ops += [dist.P2POp(dist.irecv, t, peer) for t, peer in recvs]
    if ops:
        for work in dist.batch_isend_irecv(ops):
            work.wait()


class _HaloRows(torch.autograd.Function):
    """The rows above and below a strip, from its neighbours; their gradients go back to the
    neighbours, who add them to their edge rows. Only the thin halo rows are made: the strip is
    neither copied nor saved (the layers add the halo's contribution to their output)."""

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, top: int, bottom: int, domain: Domain, fill: float
    ) -> tuple[Tensor, Tensor]:
        ctx.top, ctx.bottom, ctx.domain, ctx.shape = top, bottom, domain, tuple(x.shape)
        h = x.shape[2]
        if h < max(top, bottom):
            raise ConfigError(
                f"a strip of {h} rows is narrower than the halo of {max(top, bottom)} rows its "
                "layer needs; use fewer domain blocks."
            )
        b, c, _, w = x.shape
        above = x.new_full([b, c, top, w], fill)
        below = x.new_full([b, c, bottom, w], fill)
        sends: list[tuple[Tensor, int]] = []
        recvs: list[tuple[Tensor, int]] = []
        if domain.prev is not None:
            if bottom:
                sends.append((x[:, :, :bottom], domain.prev))
            if top:
                recvs.append((above, domain.prev))
        if domain.next is not None:
            if top:
                sends.append((x[:, :, h - top :], domain.next))
            if bottom:
                recvs.append((below, domain.next))
        _exchange(sends, recvs)
        return above, below

    @staticmethod
    def backward(ctx: Any, g_above: Tensor, g_below: Tensor) -> tuple[Tensor | None, ...]:
        top, bottom, domain = ctx.top, ctx.bottom, ctx.domain
        b, c, h, w = ctx.shape
        gx = g_above.new_zeros([b, c, h, w])
        from_prev = g_above.new_zeros([b, c, bottom, w])
        from_next = g_above.new_zeros([b, c, top, w])
        sends: list[tuple[Tensor, int]] = []
        recvs: list[tuple[Tensor, int]] = []
        if domain.prev is not None:
            if top:
                sends.append((g_above, domain.prev))
            if bottom:
                recvs.append((from_prev, domain.prev))
        if domain.next is not None:
            if bottom:
                sends.append((g_below, domain.next))
            if top:
                recvs.append((from_next, domain.next))
        _exchange(sends, recvs)
        if domain.prev is not None and bottom:
            gx[:, :, :bottom] += from_prev
        if domain.next is not None and top:
            gx[:, :, h - top :] += from_next
        return gx, None, None, None, None


def halo_rows(
    x: Tensor, top: int, bottom: int, domain: Domain, fill: float = 0.0
) -> tuple[Tensor, Tensor]:
    """The ``top`` rows of the strip above and the ``bottom`` rows of the strip below ``x``
    ``[B, C, h, W]`` (this rank's strip), ``fill`` beyond the domain's edges. Differentiable:
    the halo rows' gradients are added to their owners' rows. Every rank of the domain group
    must call it with the same ``top`` and ``bottom``."""
    if domain.size == 1:
        b, c, _, w = x.shape
        return x.new_full([b, c, top, w], fill), x.new_full([b, c, bottom, w], fill)
    above, below = _HaloRows.apply(x, top, bottom, domain, fill)
    return above, below


def halo_exchange(x: Tensor, top: int, bottom: int, domain: Domain, fill: float = 0.0) -> Tensor:
    """``x`` with its halo rows (:func:`halo_rows`) above and below: ``[B, C, top + h +
    bottom, W]``."""
    above, below = halo_rows(x, top, bottom, domain, fill)
    return torch.cat([above, x, below], dim=2)


# ---------------------------------------------------------------------------- halo layers
def _same_padding(kernel: int, padding: int, what: str) -> None:
    if kernel != 2 * padding + 1:
        raise ConfigError(
            f"domain parallelism supports {what} with 'same' padding (kernel 2p + 1) only, got "
            f"kernel {kernel} with padding {padding}."
        )


class HaloConv2d(nn.Conv2d):
    """:class:`torch.nn.Conv2d` on a strip: the zero-padded convolution of the strip, plus the
    contribution of the neighbours' halo rows to the edge rows.

    By linearity, the convolution of ``[above, x, below]`` is that of ``[0, x, 0]`` (the plain
    zero-padded layer, which saves only ``x`` - the same tensor the previous layer keeps) plus
    that of ``[above, 0, ..., 0, below]``, which touches the first and last ``p`` output rows
    only and is computed on ``3p``-row slabs. So a strip keeps what the plain layer keeps for
    its rows, and activation memory falls as 1 / strips.
    """

    domain: Domain

    def forward(self, input: Tensor) -> Tensor:
        """Convolve the strip as the whole-grid layer would; the output has the strip's rows."""
        out = super().forward(input)
        pad, pad_x = _pair(self.padding)
        if pad == 0 or self.domain.size == 1:
            return out
        above, below = halo_rows(input, pad, pad, self.domain)
        pad_w = (0, pad_x)
        weight = self.weight

        def edge(rows: Tensor, before: int, after: int) -> Tensor:
            slab = F.pad(rows, (0, 0, before, after))
            return F.conv2d(slab, weight, None, self.stride, pad_w, self.dilation, self.groups)

        out[:, :, :pad] += edge(above, 0, 2 * pad)
        out[:, :, -pad:] += edge(below, 2 * pad, 0)
        return out


class HaloConvTranspose2d(nn.ConvTranspose2d):
    """The stride-2 kernel-3 transposed convolution (padding 1, output padding 1) on a strip:
    output row ``2i + 1`` also takes input row ``i + 1``, so the last output row gets the
    first row of the strip below through the kernel's first row (added to the plain layer's
    output, as in :class:`HaloConv2d`)."""

    domain: Domain

    def forward(self, input: Tensor, output_size: list[int] | None = None) -> Tensor:
        """Twice the strip's rows, as the whole-grid layer gives them."""
        out = super().forward(input)
        if self.domain.size == 1:
            return out
        _, below = halo_rows(input, 0, 1, self.domain)
        last = F.conv_transpose2d(
            below,
            self.weight[:, :, :1],
            None,
            (1, self.stride[1]),
            (0, _pair(self.padding)[1]),
            (0, self.output_padding[1]),
            self.groups,
            (1, self.dilation[1]),
        )
        out[:, :, -1:] += last
        return out


class HaloMaxPool2d(nn.MaxPool2d):
    """Stride-1 'same' max-pooling on a strip (the inception block's pooled branch)."""

    domain: Domain

    def forward(self, input: Tensor) -> Tensor:
        """Max over the window with the neighbours' rows; -inf beyond the domain."""
        k = _pair(self.kernel_size)
        p = _pair(self.padding)
        x = halo_exchange(input, p[0], p[0], self.domain, float("-inf"))
        return F.max_pool2d(x, k, 1, (0, p[1]))


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _recast(m: nn.Module, cls: type[nn.Module]) -> nn.Module:
    """A ``cls`` (a subclass or the base of ``type(m)``) holding ``m``'s state: the same
    parameter and buffer objects, so names, optimizer references and checkpoints are kept."""
    new = cls.__new__(cls)
    new.__dict__.update({k: v for k, v in m.__dict__.items() if k != "domain"})
    return new


def _halo_layer(m: nn.Module, domain: Domain) -> nn.Module | None:
    """The halo version of a layer that sees across rows; None when ``m`` is row-local."""
    new: nn.Module
    if isinstance(m, nn.Conv2d) and not isinstance(m, HaloConv2d):
        k, p = _pair(m.kernel_size), m.padding
        if isinstance(p, str) or _pair(m.stride)[0] != 1 or _pair(m.dilation)[0] != 1:
            raise ConfigError(
                "domain parallelism supports stride-1 convolutions with integer padding only."
            )
        if m.padding_mode != "zeros":
            raise ConfigError("domain parallelism supports zero-padded convolutions only.")
        if k[0] == 1:
            return None
        _same_padding(k[0], int(p[0]), "convolutions")
        new = _recast(m, HaloConv2d)
    elif isinstance(m, nn.ConvTranspose2d) and not isinstance(m, HaloConvTranspose2d):
        k, s = _pair(m.kernel_size), _pair(m.stride)
        p, op = _pair(m.padding), _pair(m.output_padding)
        if k[0] == s[0] and p[0] == 0 and op[0] == 0:
            return None  # each input row makes its own output rows
        if (k[0], s[0], p[0], op[0]) != (3, 2, 1, 1):
            raise ConfigError(
                "domain parallelism supports transposed convolutions with kernel = stride, or "
                f"kernel 3, stride 2, padding 1, output padding 1; got kernel {k[0]}, stride "
                f"{s[0]}, padding {p[0]}, output padding {op[0]}."
            )
        new = _recast(m, HaloConvTranspose2d)
    elif isinstance(m, nn.MaxPool2d) and not isinstance(m, HaloMaxPool2d):
        k, s, p = _pair(m.kernel_size), _pair(m.stride or m.kernel_size), _pair(m.padding)
        if k[0] == s[0] and p[0] == 0:
            return None  # local when every strip starts on a multiple of the stride
        if s[0] != 1 or _pair(m.dilation) != (1, 1) or m.ceil_mode:
            raise ConfigError(
                "domain parallelism supports max-pooling with kernel = stride, or stride 1 "
                "without dilation or ceil_mode."
            )
        _same_padding(k[0], p[0], "max-pooling")
        new = _recast(m, HaloMaxPool2d)
    else:
        return None
    new.domain = domain  # type: ignore[assignment]
    return new


_PLAIN_OF: dict[type[nn.Module], type[nn.Module]] = {
    HaloConv2d: nn.Conv2d,
    HaloConvTranspose2d: nn.ConvTranspose2d,
    HaloMaxPool2d: nn.MaxPool2d,
}


def convert_halo(module: nn.Module, domain: Domain) -> nn.Module:
    """Swap every layer of ``module`` that sees across rows for its halo version, in place (the
    returned module replaces ``module`` itself when it is such a layer)."""
    return swap_modules(module, lambda m: _halo_layer(m, domain))


def revert_halo(module: nn.Module) -> nn.Module:
    """Undo :func:`convert_halo` (plain layers sharing the same tensors)."""
    return swap_modules(
        module, lambda m: _recast(m, _PLAIN_OF[type(m)]) if type(m) in _PLAIN_OF else None
    )
