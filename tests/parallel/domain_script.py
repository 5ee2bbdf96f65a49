"""Run under N gloo processes by tests/parallel/test_domain.py: one network (or a stack of halo
layers) split into row strips against the whole network in one process.

``python domain_script.py OUT CASE DATA`` with RANK/WORLD_SIZE/MASTER_* set; ``DATA`` data groups
of ``WORLD_SIZE / DATA`` strips (a data x domain mesh). Rank 0 writes the largest differences
(forward, loss, parameter and input gradients) as JSON to OUT. Every rank computes the whole
reference itself (same seed), then its strip; gradients are summed over ranks and divided by the
world size, as DDP does.
"""

from __future__ import annotations

import copy
import json
import sys
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from climdl.models import CloudUNet, DouryUNet
from climdl.models.heads import FineCovariateHead
from climdl.parallel.domain import domain_loss, shard_network
from climdl.parallel.halo import Domain, HaloConv2d, convert_halo, partition
from climdl.tasks.losses import masked_mse


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def layers_case(domain: Domain, rows: int) -> dict[str, float]:
    """3x3 conv, 3x3 stride-1 max-pool, kernel-3 stride-2 transposed conv, 3x3 conv on an
    odd-sized grid: forward and input gradient of every strip."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.MaxPool2d(3, stride=1, padding=1),
        nn.ConvTranspose2d(4, 4, 3, stride=2, padding=1, output_padding=1),
        nn.Conv2d(4, 2, 3, padding=1),
    )
    x = torch.randn(2, 3, rows, 11, requires_grad=True)
    w = torch.randn(2, 2, 2 * rows, 11 * 2)
    ref = net(x)
    (ref * w).sum().backward()
    start, stop = partition(rows, domain.size)[domain.rank]
    halo = convert_halo(copy.deepcopy(net), domain)
    assert sum(isinstance(m, HaloConv2d) for m in halo.modules()) == 2
    xs = x.detach()[:, :, start:stop].clone().requires_grad_()
    out = halo(xs)
    (out * w[:, :, 2 * start : 2 * stop]).sum().backward()
    assert x.grad is not None and xs.grad is not None
    return {
        "forward": float((out - ref[:, :, 2 * start : 2 * stop]).abs().max()),
        "input_grad": float((xs.grad - x.grad[:, :, start:stop]).abs().max()),
    }


def network_case(case: str, domain: Domain, data: int, data_rank: int, data_group: object) -> dict:
    """A network in training mode (BatchNorm on the batch), MSE on a random target."""
    torch.manual_seed(0)
    block: Any = "residual" if case.endswith("residual") else "plain"
    if case.startswith("cloud"):
        net: nn.Module = CloudUNet(3, 4, depth=2, base_filters=4, block="inception")
        x = torch.randn(4, 3, 24, 12)
        target = torch.randn(4, 4, 24, 12)
        target[0, :, :3] = float("nan")  # masked points weigh in the counts
    else:
        unet = DouryUNet(3, 4, in_size=(16, 16), out_size=(64, 64), n_scalars=2,
                         base_filters=4, max_filters=8, extra_filters=4, block=block)  # fmt: skip
        net = FineCovariateHead(unet, 4, torch.randn(1, 64, 64), 2) if case == "unet_orog" else unet
        x = torch.randn(4, 3, 16, 16)
        target = torch.randn(4, 2 if case == "unet_orog" else 4, 64, 64)
        target[1, :, 5:9] = float("nan")
    s = torch.randn(4, 2)
    whole = copy.deepcopy(net)
    args = (x, s) if not case.startswith("cloud") else (x,)
    ref_out = whole(*args)
    per = x.shape[0] // data  # DDP averages the data groups' losses (each pooled over its days)
    groups = [slice(d * per, (d + 1) * per) for d in range(data)]
    ref_loss = torch.stack([masked_mse(ref_out[g], target[g]) for g in groups]).mean()
    ref_loss.backward()
    sharded = copy.deepcopy(net)
    plan = shard_network(sharded, domain, data_group, None)
    # this data group's samples, this rank's rows
    batch = groups[data_rank]
    if plan.rows is not None:
        start, stop = plan.rows
        out = sharded(x[batch], s[batch])
    else:
        start, stop = domain.block(x.shape[2], plan.multiple)
        out = sharded(x[batch, :, start:stop])
    y = target[batch, :, start:stop]
    part = masked_mse(out, y)
    objective, whole_parts = domain_loss({"y": part}, {"y": torch.isfinite(y).sum()}, domain)
    objective.backward()
    world = dist.get_world_size()
    grads = {}
    for name, p in sharded.named_parameters():
        g = p.grad.clone() if p.grad is not None else torch.zeros_like(p)
        dist.all_reduce(g)
        grads[name] = g / world
    ref_grads = {k: p.grad for k, p in whole.named_parameters() if p.grad is not None}
    num = sum(float((grads[k] - ref_grads[k]).square().sum()) for k in grads)
    den = sum(float(ref_grads[k].square().sum()) for k in grads)
    # the data group's loss is the whole-domain loss of its samples
    group_ref = masked_mse(ref_out[batch], target[batch])
    running = {
        k: _rel(v, dict(whole.named_buffers())[k])
        for k, v in sharded.named_buffers()
        if k.endswith("running_var")
    }
    return {
        "forward": float((out - ref_out[batch, :, start:stop]).abs().max()),
        "loss": abs(float(whole_parts["y"]) - float(group_ref)) / float(group_ref),
        "grad_rel_l2": (num / den) ** 0.5,
        "running_var": max(running.values()),
        "same_names": float(list(sharded.state_dict()) != list(whole.state_dict())),
    }


def segmentation_case(domain: Domain, loss: Any) -> dict[str, float]:
    """The cloud task's loss (class-weighted cross-entropy or BCE, Dice, the any-cloud term)
    on strips, every sum reduced over the domain, against the whole grid."""
    from climdl.clouds.scene import NODATA
    from climdl.tasks.segmentation import SegmentationTask
    from tests.tasks.test_segmentation import _spec

    torch.manual_seed(0)
    task = SegmentationTask(depth=2, base_filters=4, max_filters=8, loss=loss,
                            class_weights="balanced", any_cloud_weight=0.5)  # fmt: skip
    task.build(_spec())
    logits = (torch.randn(2, 3, 20, 8) * 3).requires_grad_()
    y = torch.randint(0, 3, (2, 20, 8))
    y[0, :6] = NODATA  # the first strip is mostly without data
    y[1, 15:] = 2
    whole = task.loss_from_logits(logits, y)
    (ref_grad,) = torch.autograd.grad(whole, logits)
    task.domain = domain
    start, stop = domain.block(20, 4)
    part = logits.detach()[:, :, start:stop].clone().requires_grad_()
    mine = task.loss_from_logits(part, y[:, start:stop])
    (grad,) = torch.autograd.grad(mine, part)
    # each rank back-propagates the whole loss: the halo-free strips' gradients add up to
    # world x the whole one's (DDP divides by the world size)
    return {
        "loss": abs(float(mine) - float(whole)) / abs(float(whole)),
        "input_grad": float((grad / domain.size - ref_grad[:, :, start:stop]).abs().max()),
    }


def main() -> None:
    out, case, data = sys.argv[1], sys.argv[2], int(sys.argv[3])
    dist.init_process_group("gloo")
    world, rank = dist.get_world_size(), dist.get_rank()
    size = world // data
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh("cpu", (data, size), mesh_dim_names=("data", "domain"))
    domain = Domain.from_group(mesh["domain"].get_group())
    if case.startswith("seg_"):
        result = segmentation_case(domain, case[4:])
    elif case.startswith("layers"):
        result = layers_case(domain, int(case.split("_")[1]))
    else:
        result = network_case(case, domain, data, rank // size, mesh["data"].get_group())
    table = torch.tensor(list(result.values()), dtype=torch.float64)
    dist.all_reduce(table, op=dist.ReduceOp.MAX)
    if rank == 0:
        with open(out, "w") as f:
            json.dump(dict(zip(result, table.tolist(), strict=True)), f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
