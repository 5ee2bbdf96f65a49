"""Lightning strategies for climdl's networks: data parallel, FSDP2, tensor parallel, pipeline.

The presets in ``configs/strategy/*.yaml`` name these classes; :func:`build_strategy` makes the
same objects from a name in Python (benchmarks, notebooks). Lightning's own strategies come
first: ``ddp`` is Lightning's ``DDPStrategy``; ``fsdp`` and ``tensor`` are Lightning's
``ModelParallelStrategy``, for which :meth:`DownscalingTask.configure_model
<climdl.tasks.downscaling.DownscalingTask.configure_model>` calls :func:`parallelize_task`:

* **tensor parallel** (mesh dimension ``tensor_parallel``): the dense layers are split with
  ``parallelize_module`` — the 1-D input MLP of the UNet as column-/row-wise pairs (one
  all-reduce per pair), the DeepESD dense layer (almost all of DeepESD's parameters) column-wise
  with its output gathered. Convolutions stay replicated: PyTorch's tensor-parallel styles cover
  ``nn.Linear`` and ``nn.Embedding`` only; splitting conv channels would put an all-gather after
  every layer of a network whose per-layer weights are small (at most 512 x 512 x 3 x 3 here),
  and splitting the spatial domain needs halo exchanges that DTensor does not do (sharded conv
  inputs give wrong values in torch 2.13) — that is domain parallelism,
  :mod:`climdl.parallel.domain`, a different design.
* **FSDP2** (mesh dimension ``data_parallel``): ``fully_shard`` on every block the network lists
  in ``stages()`` (entry conv, each encoder and decoder level, the 1-D MLP, head, orography
  fusion), then on the network itself; parameters, gradients and optimizer state are sharded
  and each block is gathered just before it runs.

With a :class:`~climdl.parallel.syncbn.GlobalSyncBatchNorm` plugin, BatchNorm layers use the
statistics of the global batch of the data-parallel group, so that the data-parallel run matches
the single-process run with the same global batch (the tests check it).
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

from lightning.fabric.plugins.collectives.torch_collective import default_pg_timeout
from lightning.pytorch.plugins.layer_sync import TorchSyncBatchNorm
from lightning.pytorch.strategies import DDPStrategy, ModelParallelStrategy, Strategy
from torch import nn

from climdl.errors import ConfigError
from climdl.parallel.syncbn import GlobalSyncBatchNorm, convert_batchnorm

if TYPE_CHECKING:
    from torch.distributed.device_mesh import DeviceMesh
    from torch.distributed.tensor.parallel import ParallelStyle

StrategyName = Literal["single", "ddp", "fsdp", "tensor", "pipeline", "domain"]


class FSDP2Strategy(ModelParallelStrategy):
    """Lightning's ``ModelParallelStrategy`` with FSDP2 over every rank not used for tensor
    parallelism (Lightning's own default puts tensor parallelism across a node's devices).

    For bfloat16 use ``trainer.precision: bf16-mixed`` (autocast): FSDP2's bf16
    ``MixedPrecisionPolicy`` casts BatchNorm's weights but not its float32 running statistics,
    which the UNet's BatchNorm layers reject.

    Args:
        tensor_parallel_size: ranks per tensor-parallel group (1: FSDP2 only).
        reshard_after_forward: free each block's gathered parameters after its forward pass
            (ZeRO-3; gathered again for backward) or keep them until the backward (ZeRO-2,
            faster, more memory).
        save_distributed_checkpoint: a sharded checkpoint folder (``torch.distributed.checkpoint``;
            resumable on any number of ranks, ``climdl consolidate`` makes one file for
            inference) instead of one file assembled on rank 0.
        process_group_backend: ``gloo``, ``nccl`` or None (Lightning's choice for the device).
        timeout: collective timeout.
    """

    def __init__(
        self,
        tensor_parallel_size: int = 1,
        reshard_after_forward: bool = True,
        save_distributed_checkpoint: bool = True,
        process_group_backend: str | None = None,
        timeout: timedelta | None = default_pg_timeout,
    ) -> None:
        if tensor_parallel_size < 1:
            raise ConfigError(
                f"tensor_parallel_size must be 1 or more, got {tensor_parallel_size}."
            )
        super().__init__(
            data_parallel_size="auto",
            tensor_parallel_size=tensor_parallel_size,
            save_distributed_checkpoint=save_distributed_checkpoint,
            process_group_backend=process_group_backend,
            timeout=timeout,
        )
        self.reshard_after_forward = reshard_after_forward

    def setup_environment(self) -> None:
        """Resolve ``data_parallel_size`` to world size / tensor-parallel size, then set up."""
        world = self.num_nodes * self.num_processes
        tp = int(self._tensor_parallel_size)
        if world % tp:
            raise ConfigError(f"{world} processes cannot form tensor-parallel groups of {tp}.")
        self._data_parallel_size = world // tp
        super().setup_environment()


def tensor_parallel_plan(net: nn.Module) -> dict[str, ParallelStyle]:
    """``parallelize_module`` plan for the dense layers of climdl's networks (module path ->
    style): the UNet's 1-D MLP as column/row-wise pairs (a lone last layer column-wise with its
    output gathered), DeepESD's dense layer column-wise with its output gathered."""
    from torch.distributed.tensor import Replicate
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel

    from climdl.models import DeepESD, DouryUNet

    plan: dict[str, ParallelStyle] = {}
    for name, module in net.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(module, DouryUNet) and module.scalar_mlp is not None:
            linears = [i for i, m in enumerate(module.scalar_mlp) if isinstance(m, nn.Linear)]
            for k, i in enumerate(linears):
                path = f"{prefix}scalar_mlp.{i}"
                if k % 2 == 1:
                    plan[path] = RowwiseParallel()
                elif k == len(linears) - 1:
                    plan[path] = ColwiseParallel(output_layouts=Replicate())
                else:
                    plan[path] = ColwiseParallel()
        elif isinstance(module, DeepESD):
            plan[f"{prefix}dense"] = ColwiseParallel(output_layouts=Replicate())
    return plan


def _sync_batchnorm(net: nn.Module, strategy: Strategy, dp_mesh: DeviceMesh) -> None:
    """Apply the trainer's BatchNorm synchronisation over the data-parallel group (Lightning
    does this itself for DDP only)."""
    layer_sync = getattr(strategy, "_layer_sync", None)
    if dp_mesh.size() == 1 or layer_sync is None:
        return
    group = dp_mesh.get_group()
    if isinstance(layer_sync, GlobalSyncBatchNorm):
        convert_batchnorm(net, group)
    elif isinstance(layer_sync, TorchSyncBatchNorm):  # CUDA only
        for name, child in list(net.named_children()):
            setattr(net, name, nn.SyncBatchNorm.convert_sync_batchnorm(child, group))


def parallelize_task(task: Any, strategy: ModelParallelStrategy) -> None:
    """Tensor parallelism, BatchNorm synchronisation and FSDP2 on ``task.net``, in that order
    (the order torch's 2-D parallel recipe requires). Idempotent: a second call (validation
    after fit) leaves the sharded network alone."""
    if getattr(task, "_climdl_parallelized", False):
        return
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor.parallel import parallelize_module

    net: nn.Module = task.net
    mesh = strategy.device_mesh
    dp_mesh, tp_mesh = mesh["data_parallel"], mesh["tensor_parallel"]
    if tp_mesh.size() > 1:
        plan = tensor_parallel_plan(net)
        if not plan:
            raise ConfigError(
                f"tensor parallelism found no dense layer in {type(net).__name__}; "
                "use fsdp or ddp for this network."
            )
        parallelize_module(net, tp_mesh, plan)
    _sync_batchnorm(net, strategy, dp_mesh)
    kwargs: dict[str, Any] = {
        "mesh": dp_mesh,
        "reshard_after_forward": getattr(strategy, "reshard_after_forward", True),
    }
    stages = getattr(net, "stages", None)
    blocks: list[nn.Module] = stages() if callable(stages) else []
    for block in blocks:
        if any(True for _ in block.parameters()):
            fully_shard(block, **kwargs)
    fully_shard(net, **kwargs)
    task._climdl_parallelized = True


def build_strategy(name: StrategyName, **kwargs: Any) -> Strategy | str:
    """The strategy a preset names: ``single`` -> ``"auto"``, ``ddp`` -> ``DDPStrategy``,
    ``fsdp`` -> :class:`FSDP2Strategy`, ``tensor`` -> ``ModelParallelStrategy`` (tensor parallel
    across a node's devices, data parallel across nodes), ``pipeline`` ->
    :class:`~climdl.parallel.pipeline.PipelineStrategy`, ``domain`` ->
    :class:`~climdl.parallel.domain.DomainParallelStrategy`. ``kwargs`` go to the class."""
    if name == "single":
        return "auto"
    if name == "ddp":
        return DDPStrategy(**kwargs)
    if name == "fsdp":
        return FSDP2Strategy(**kwargs)
    if name == "tensor":
        return ModelParallelStrategy(**kwargs)
    if name == "pipeline":
        from climdl.parallel.pipeline import PipelineStrategy

        return PipelineStrategy(**kwargs)
    if name == "domain":
        from climdl.parallel.domain import DomainParallelStrategy

        return DomainParallelStrategy(**kwargs)
    raise ConfigError(
        f"unknown strategy {name!r}; choose single, ddp, fsdp, tensor, pipeline or domain."
    )
