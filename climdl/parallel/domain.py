"""Domain (spatial) parallelism: each process of a domain group holds one strip of rows of every
sample, and the network exchanges halos with its neighbours.

Why: a UNet's activations grow with the grid (412 x 424 points for EURO-CORDEX at 12 km, over
1000 x 1000 for convection-permitting domains) and can exceed one device's memory at batch size 1;
splitting the batch (data parallelism) cannot help, splitting the grid can.

How, in three pieces:

* :func:`halo_exchange` (an autograd function): a strip gets ``top`` rows from the rank above and
  ``bottom`` rows from the rank below with point-to-point sends, and the gradients of those rows go
  back to their owners in the backward pass, where they are added to the owners' edge rows. At the
  domain's outer edges the halo is the padding value (0 for convolutions, -inf for max-pooling),
  which is what the single-device layer pads with.
* Layers that see across rows are swapped for halo versions that share the original parameters
  (names unchanged, so checkpoints are those of the plain network): 3x3 convolutions and the 3x3
  stride-1 max-pooling exchange one row each side; the Doury UNet's stride-2 kernel-3 transposed
  convolution needs one row from below; 2x2 pooling and 2x2 stride-2 transposed convolutions are
  local when every strip starts on a multiple of the pooling factor (:func:`partition` cuts so);
  BatchNorm layers become :class:`~climdl.parallel.syncbn.GlobalBatchNorm` over every rank that
  holds a part of the same batch, so their statistics are those of the whole domain and batch.
* :class:`DomainParallelStrategy`: Lightning's DDP over a 2-D mesh (data x domain). The ranks of a
  domain group read the same samples (the distributed sampler counts data groups only); the
  task weights each rank's loss by its share of the domain's valid points (see
  :func:`domain_loss`), so that DDP's gradient average over all ranks is the gradient of the
  single-process loss.

The Doury UNet's encoder goes down to a 1 x 1 bottleneck that must see the whole domain, so its
coarse part (:meth:`~climdl.models.unet.DouryUNet.forward_coarse`: entry, encoder, 1-D inputs,
decoder levels with skips, on the ~16 x 16 predictor grid) runs whole on every rank; its
BatchNorm layers reduce over the data group. The decoder levels beyond the input resolution,
where nearly all of the activation memory and FLOPs are, and the head run on the rank's strip
(:class:`RowScatter` cuts the coarse output). The cloud UNet is sharded from its input on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from lightning.fabric.plugins.collectives.torch_collective import default_pg_timeout
from lightning.pytorch.strategies import DDPStrategy
from torch import Tensor, nn

from climdl.errors import ConfigError
from climdl.models import CloudUNet, DouryUNet
from climdl.models.heads import FineCovariateHead
from climdl.parallel.syncbn import convert_batchnorm, revert_batchnorm, swap_modules

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


class RowScatter(nn.Module):
    """Keep rows ``start:stop`` of a tensor every rank holds whole. Slicing is differentiable:
    the backward pass gives each rank the gradient of its own rows, and the data-parallel
    gradient sum adds the ranks' parts."""

    def __init__(self, start: int, stop: int) -> None:
        super().__init__()
        self.start, self.stop = start, stop

    def forward(self, x: Tensor) -> Tensor:
        """``x[:, :, start:stop]``."""
        return x[:, :, self.start : self.stop]

    def extra_repr(self) -> str:
        """The rows kept."""
        return f"rows={self.start}:{self.stop}"


# ---------------------------------------------------------------------------- networks
@dataclass(frozen=True)
class DomainPlan:
    """How a network is split.

    Attributes:
        network: ``unet`` (Doury: coarse part whole, fine part on strips) or ``cloud_unet``
            (all on strips).
        multiple: strips start on multiples of this many rows of the network's output (and
            input, for the cloud UNet).
        rows: the Doury UNet's output rows on this rank; None for the cloud UNet, whose scenes
            vary in size (:meth:`Domain.block` per batch).
    """

    network: str
    multiple: int
    rows: tuple[int, int] | None = None


def _unwrap(net: nn.Module) -> tuple[nn.Module, FineCovariateHead | None]:
    if isinstance(net, FineCovariateHead):
        return net.net, net
    return net, None


def plan_for(net: nn.Module, domain_size: int) -> DomainPlan:
    """Check that ``net`` can be split into ``domain_size`` strips and say how (before any
    work: every rank computes the same answer, so none is left waiting for a neighbour).

    Raises:
        ConfigError: a network domain parallelism does not support, a Doury UNet without decoder
            levels beyond its input resolution, or a grid that cannot be cut into that many strips.
    """
    inner, _ = _unwrap(net)
    if isinstance(inner, DouryUNet):
        if inner.fine_levels == 0:
            raise ConfigError(
                "domain parallelism splits the Doury UNet's decoder levels beyond the input "
                "resolution, and this network has none (out_size equals the trimmed input); "
                "use the ddp preset."
            )
        multiple = 2**inner.fine_levels
        partition(inner.out_size[0], domain_size, multiple)  # raises when it cannot be cut
        return DomainPlan("unet", multiple)
    if isinstance(inner, CloudUNet):
        return DomainPlan("cloud_unet", inner.size_multiple)
    raise ConfigError(
        f"domain parallelism supports the unet and the cloud UNet, not {type(inner).__name__}; "
        "use the ddp or fsdp preset."
    )


def shard_network(net: nn.Module, domain: Domain, data_group: Any, all_group: Any) -> DomainPlan:
    """Split ``net`` over ``domain`` in place (parameters stay the same objects).

    Args:
        net: a :class:`~climdl.models.unet.DouryUNet` or
            :class:`~climdl.models.cloud_unet.CloudUNet`, possibly in a
            :class:`~climdl.models.heads.FineCovariateHead`.
        domain: this rank's place in its domain group.
        data_group: the ranks holding the same strip of other samples (BatchNorm of the parts
            every rank holds whole).
        all_group: every rank of the run (BatchNorm of the strips).

    Returns:
        The plan, with this rank's output rows for the Doury UNet.
    """
    plan = plan_for(net, domain.size)
    inner, head = _unwrap(net)
    if isinstance(inner, DouryUNet):
        assert inner.out_size[0] % plan.multiple == 0
        start, stop = domain.block(inner.out_size[0], plan.multiple)
        whole: list[nn.Module] = [inner.entry, *inner.encoder, *inner.decoder[: inner.split_level]]
        if inner.scalar_mlp is not None:
            whole.append(inner.scalar_mlp)
        for part in whole:
            convert_batchnorm(part, data_group)
        for i in range(inner.split_level, len(inner.decoder)):
            stage = inner.decoder[i]
            convert_halo(stage, domain)
            convert_batchnorm(stage, all_group)
        inner.scatter = RowScatter(start // plan.multiple, stop // plan.multiple)
        if head is not None:
            head.fuse = convert_halo(head.fuse, domain)  # type: ignore[assignment]
            head.row_start = start
        return DomainPlan(plan.network, plan.multiple, (start, stop))
    convert_halo(inner, domain)
    convert_batchnorm(inner, all_group)
    return plan


def unshard_network(net: nn.Module) -> nn.Module:
    """Undo :func:`shard_network` (plain layers sharing the same tensors), e.g. before the
    trained network is used in one process."""
    inner, head = _unwrap(net)
    if isinstance(inner, DouryUNet):
        inner.scatter = nn.Identity()
    if head is not None:
        head.row_start = 0
    revert_halo(net)
    revert_batchnorm(net)
    return net


# ---------------------------------------------------------------------------- the loss
def domain_loss(
    parts: dict[str, Tensor], counts: dict[str, Tensor], domain: Domain
) -> tuple[Tensor, dict[str, Tensor]]:
    """The objective this rank back-propagates and the whole domain's loss parts, for logging.

    ``parts[t]`` is the mean loss of target ``t`` over this strip's ``counts[t]`` valid points.
    The domain's mean is ``sum_r parts_r * n_r / N`` (``N`` the domain's count); each rank
    back-propagates ``size * parts * n / N`` so that the data-parallel gradient average over all
    ``data x domain`` ranks is the gradient of the mean over the data groups' whole-domain losses.
    One all-reduce of ``2 x targets`` numbers (no gradient through it).
    """
    names = list(parts)
    local = torch.stack([counts[t].float() for t in names])
    weighted = torch.stack([parts[t].detach().float() * counts[t].float() for t in names])
    table = torch.cat([local, weighted])
    if domain.size > 1:
        dist.all_reduce(table, group=domain.group)
    total = table[: len(names)].clamp_min(1)
    whole = {t: table[len(names) + i] / total[i] for i, t in enumerate(names)}
    objective = torch.stack(
        [parts[t] * (counts[t].float() / total[i]) for i, t in enumerate(names)]
    ).sum()
    return objective * domain.size, whole


# ---------------------------------------------------------------------------- the strategy
class DomainParallelStrategy(DDPStrategy):
    """Lightning's DDP on a data x domain mesh: ``domain_size`` consecutive ranks split every
    sample's grid into strips (keep them on one node: they exchange halos at every layer), and
    the ``world / domain_size`` domain groups are data parallel.

    The task (:meth:`DownscalingTask.configure_model
    <climdl.tasks.downscaling.DownscalingTask.configure_model>`, the segmentation task likewise)
    calls :meth:`shard` to split its network; the strategy undoes it at teardown so that the
    trained network runs in one process again. Weights are replicated: checkpoints are ordinary
    single files that resume on any number of processes.

    Args:
        domain_size: strips per sample (processes per domain group).
        process_group_backend: ``gloo``, ``nccl`` or None (Lightning's choice for the device).
        timeout: collective timeout.
        kwargs: further ``DDPStrategy`` arguments.
    """

    def __init__(
        self,
        domain_size: int = 2,
        process_group_backend: str | None = None,
        timeout: timedelta | None = default_pg_timeout,
        **kwargs: Any,
    ) -> None:
        if domain_size < 1:
            raise ConfigError(f"domain_size must be 1 or more, got {domain_size}.")
        super().__init__(process_group_backend=process_group_backend, timeout=timeout, **kwargs)
        self.domain_size = domain_size
        self.domain: Domain | None = None
        self.data_group: Any = None
        self._sharded: list[nn.Module] = []

    @property
    def data_size(self) -> int:
        """Data-parallel groups: world size / domain size."""
        return max(1, (self.num_nodes * self.num_processes) // self.domain_size)

    def setup_environment(self) -> None:
        """Start the process group, then build the data x domain mesh."""
        world = self.num_nodes * self.num_processes
        if world % self.domain_size:
            raise ConfigError(
                f"{world} processes cannot form domain groups of {self.domain_size}: use a "
                "multiple of domain_size processes (devices x num_nodes)."
            )
        super().setup_environment()
        if self.domain is not None and (self.domain.size == 1 or self.domain.group is not None):
            return  # a later fit/validate/test of the same trainer: the mesh is there
        if world == 1 or not dist.is_initialized():
            self.domain = Domain(1, 0)
            return
        from torch.distributed.device_mesh import init_device_mesh

        mesh = init_device_mesh(
            self.root_device.type,
            (world // self.domain_size, self.domain_size),
            mesh_dim_names=("data", "domain"),
        )
        self.domain = Domain.from_group(mesh["domain"].get_group())
        self.data_group = mesh["data"].get_group()

    @property
    def distributed_sampler_kwargs(self) -> dict[str, Any]:
        """The ranks of a domain group read the same samples."""
        return {"num_replicas": self.data_size, "rank": self.global_rank // self.domain_size}

    def shard(self, net: nn.Module) -> DomainPlan:
        """Split ``net`` over this rank's domain group (see :func:`shard_network`)."""
        domain = self.domain if self.domain is not None else Domain(1, 0)
        plan = shard_network(net, domain, self.data_group, None)
        self._sharded.append(net)
        return plan

    def setup(self, trainer: Any) -> None:
        """DDP's set-up, then the same random state on every rank of a domain group: the
        strips of a sample must come from the same crop, flips and dropout masks, whichever
        seed (or none) the run was given."""
        super().setup(trainer)
        domain = self.domain
        if domain is None or domain.size == 1:
            return
        source = dist.get_global_rank(domain.group, 0)
        state = torch.get_rng_state()
        dist.broadcast(state, src=source, group=domain.group)
        torch.set_rng_state(state)
        if self.root_device.type == "cuda":
            cuda_state = torch.cuda.get_rng_state(self.root_device).to(self.root_device)
            dist.broadcast(cuda_state, src=source, group=domain.group)
            torch.cuda.set_rng_state(cuda_state.cpu(), self.root_device)

    def teardown(self) -> None:
        """Undo the split (the task's rows and domain, the data module's row block, the
        networks' halo layers), then DDP's teardown: the trained objects work whole again in
        this process (a later trainer, a baseline read through the data module's loaders)."""
        module = self.lightning_module
        undo = getattr(module, "unshard_domain", None)
        if callable(undo):
            undo()
        super().teardown()
        for net in self._sharded:
            unshard_network(net)
        self._sharded.clear()
