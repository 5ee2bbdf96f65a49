"""Domain (spatial) parallelism: each process of a domain group holds one strip of rows of every
sample, and the network exchanges halos with its neighbours.

Why: a UNet's activations grow with the grid (412 x 424 points for EURO-CORDEX at 12 km, over
1000 x 1000 for convection-permitting domains) and can exceed one device's memory at batch size 1;
splitting the batch (data parallelism) cannot help, splitting the grid can.

How, in three pieces:

* :func:`~climdl.parallel.halo.halo_rows` (an autograd function): a strip gets ``top`` rows from the rank above and
  ``bottom`` rows from the rank below with point-to-point sends, and the gradients of those rows go
  back to their owners in the backward pass, where they are added to the owners' edge rows. At the
  domain's outer edges the halo is the padding value (0 for convolutions, -inf for max-pooling),
  which is what the single-device layer pads with.
* Layers that see across rows are swapped for halo versions that share the original parameters
  (names unchanged, so checkpoints are those of the plain network): 3x3 convolutions and the 3x3
  stride-1 max-pooling exchange one row each side; the Doury UNet's stride-2 kernel-3 transposed
  convolution needs one row from below; 2x2 pooling and 2x2 stride-2 transposed convolutions are
  local when every strip starts on a multiple of the pooling factor (:func:`~climdl.parallel.halo.partition`
  cuts so; both in :mod:`climdl.parallel.halo`);
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
from lightning.fabric.plugins.collectives.torch_collective import default_pg_timeout
from lightning.pytorch.strategies import DDPStrategy
from torch import Tensor, nn

from climdl.errors import ConfigError
from climdl.models import CloudUNet, DouryUNet
from climdl.models.heads import FineCovariateHead
from climdl.parallel.halo import Domain, convert_halo, partition, revert_halo
from climdl.parallel.syncbn import convert_batchnorm, revert_batchnorm

__all__ = [
    "Domain",
    "DomainParallelStrategy",
    "DomainPlan",
    "RowScatter",
    "domain_loss",
    "plan_for",
    "shard_network",
    "unshard_network",
]


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
