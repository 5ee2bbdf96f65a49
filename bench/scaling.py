"""Data-parallel scaling on CPU (gloo): samples/s with 1 vs 2 processes, and where the time goes.

    python bench/scaling.py [--steps 20] [--warmup 3] [--batch-size 16] [--no-sync-bn]
    python bench/scaling.py --device cuda --batch-size 64     # single-GPU figures (see below)

Model and data: the sample config's emulator (UNet 16/128/16 filters, orography head) on the
embedded ALPS sample, in memory; every process trains on its own slice of each global batch
(batch_size per process, as under ``configs/strategy/ddp.yaml``), with the device-side
normalisation, loss and Adam of ``climdl train``. Each configuration runs in fresh processes
with ``torch.set_num_threads(--threads)``:

* 1 process (the baseline), then 2 processes with DDP (gradient all-reduce, and BatchNorm over
  the global batch unless ``--no-sync-bn``), then 2 processes without the gradient all-reduce
  (``DDP.no_sync``): the difference is the communication the backward pass could not hide;
* a DDP communication hook times every gradient bucket's all-reduce (start to completion; it
  overlaps the rest of the backward pass), and the global-BatchNorm all-reduces are timed too.

Prints samples/s, speed-up, scaling efficiency (speed-up / processes), the communication share
of a step, and peak memory per process. Also prints 1 process with ``2 x --threads`` threads,
the other way to use the same cores.

``--device cuda`` prints single-device training figures instead, one line each, for the
Doury-size UNet: fp32, bf16 autocast, bf16 + channels-last, each with ``torch.compile`` off and
on, then DDP and FSDP2 (``fully_shard`` per UNet block, bf16 autocast) on one rank with NCCL - the GPU check of climdl.parallel's code paths.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import time
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from _memory import peak_rss_bytes

MODEL = {"base_filters": 16, "max_filters": 128, "extra_filters": 16, "head_features": 16}


def _setup_data() -> Any:
    from climdl.data.emulator_data import EmulatorDataModule

    dm = EmulatorDataModule(
        catalog="sample-alps", experiment="Emulator_hist_future", targets=["tasmax"], orography=True
    )
    dm.setup()
    return dm


def _worker(rank: int, world: int, port: int, cfg: dict[str, Any], out: Any) -> None:
    """One training process: time ``steps`` optimizer steps after ``warmup`` ones."""
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(cfg["threads"])
    if world > 1:
        dist.init_process_group("gloo", rank=rank, world_size=world)
    import climdl.parallel.syncbn as syncbn
    from climdl.tasks.downscaling import DownscalingTask

    dm = _setup_data()
    torch.manual_seed(0)
    task = DownscalingTask(**MODEL, lr=1e-3)
    task.build(task.spec_from_data(dm))
    task.train()
    comm = {"grad": 0.0, "bn": 0.0}
    if world > 1 and cfg["sync_bn"]:
        syncbn.convert_batchnorm(task)
        reduce = syncbn._all_reduce_sum

        def timed(t: torch.Tensor, group: Any) -> torch.Tensor:
            t0 = time.perf_counter()
            r = reduce(t, group)
            comm["bn"] += time.perf_counter() - t0
            return r

        syncbn._all_reduce_sum = timed  # forward all-reduces (the backward ones are not timed)
    model: Any = task
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(task)

        def hook(state, bucket):  # type: ignore[no-untyped-def]  # DDP checks real annotations
            t0 = time.perf_counter()
            buf = bucket.buffer().div_(world)
            fut = dist.all_reduce(buf, async_op=True).get_future()

            def done(f: Any) -> torch.Tensor:
                comm["grad"] += time.perf_counter() - t0
                return f.value()[0]

            return fut.then(done)

        model.register_comm_hook(None, hook)
    opt = torch.optim.Adam(task.parameters(), lr=1e-3)
    assert dm.source.x_np is not None and dm.source.y_np is not None
    x_all, y_all, aux_all = dm.source.x_np, dm.source.y_np, dm.aux
    bs, idx = cfg["batch_size"], dm.train_idx
    rng = np.random.default_rng(0)
    t0 = 0.0
    for step in range(cfg["warmup"] + cfg["steps"]):
        if step == cfg["warmup"]:
            if world > 1:
                dist.barrier()
            comm.update(grad=0.0, bn=0.0)
            t0 = time.perf_counter()
        rows = np.sort(rng.choice(idx, size=bs * world, replace=False))[rank::world]
        batch = {
            "x": torch.from_numpy(x_all[rows]),
            "y": torch.from_numpy(y_all[rows]),
            "aux": torch.from_numpy(aux_all[rows]),
        }
        batch = task.on_after_batch_transfer(batch, 0)
        opt.zero_grad(set_to_none=True)
        # the forward goes through the DDP wrapper (its reducer hooks the backward); the task's
        # loss takes the output as ``net_out``, as under the pipeline strategy
        sync = model.no_sync() if cfg["no_sync"] and world > 1 else contextlib.nullcontext()
        with sync:
            pred = model(batch["x_n"], batch["aux_n"])
            loss, _ = task.compute_loss({**batch, "net_out": pred})
            loss.backward()
        opt.step()
    if world > 1:
        dist.barrier()
    elapsed = time.perf_counter() - t0
    peak = peak_rss_bytes() / 2**20
    if rank == 0:
        out.put(
            {
                "elapsed": elapsed,
                "samples": bs * world * cfg["steps"],
                "grad": comm["grad"],
                "bn": comm["bn"],
                "peak_mb": peak,
                "steps": cfg["steps"],
            }
        )
    if world > 1:
        dist.destroy_process_group()


def _run(world: int, cfg: dict[str, Any]) -> dict[str, Any]:
    from climdl.parallel.launch import free_port

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    mp.start_processes(
        _worker,
        args=(world, free_port(), cfg, queue),
        nprocs=world,
        start_method="spawn",
        join=True,
    )
    res: dict[str, Any] = queue.get(timeout=60)
    res["rate"] = res["samples"] / res["elapsed"]
    res["step_ms"] = 1e3 * res["elapsed"] / res["steps"]
    return res


DOURY = {"base_filters": 32, "max_filters": 512, "extra_filters": 64, "head_features": 16}


def _device_rate(
    task: Any,
    model: Any,
    batch: dict[str, torch.Tensor],
    steps: int,
    warmup: int,
    dtype: torch.dtype | None,
    device: torch.device,
) -> float:
    """Training samples/s of ``model`` (a wrapper of ``task.net`` or the net) on one device."""
    opt = torch.optim.Adam(task.parameters(), lr=1e-4)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    t0 = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            sync()
            t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            out = model(batch["x_n"], batch["aux_n"])
            loss, _ = task.compute_loss({**batch, "net_out": out.float()})
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync()
    return batch["x"].shape[0] * steps / (time.perf_counter() - t0)


def device_figures(
    device_name: str, steps: int, warmup: int, batch_size: int, full: bool = True
) -> None:
    """One line per figure on one device: fp32 / bf16 / bf16 + channels-last, ``torch.compile``
    off and on, and DDP and FSDP2 (one rank, NCCL on GPUs) with bf16 - the Doury-size UNet."""
    from torch.distributed.fsdp import fully_shard
    from torch.nn.parallel import DistributedDataParallel as DDP

    from climdl.parallel.launch import free_port
    from climdl.tasks.downscaling import DownscalingTask

    device = torch.device(device_name)
    dm = _setup_data()
    rows = np.arange(batch_size) % dm.train_idx.size
    idx = dm.train_idx[rows]
    assert dm.source.x_np is not None and dm.source.y_np is not None
    raw = {
        "x": torch.from_numpy(dm.source.x_np[idx]),
        "y": torch.from_numpy(dm.source.y_np[idx]),
        "aux": torch.from_numpy(dm.aux[idx]),
    }

    def fresh(channels_last: bool = False) -> tuple[Any, dict[str, torch.Tensor]]:
        torch.manual_seed(0)
        task = DownscalingTask(**(DOURY if full else MODEL))
        task.build(task.spec_from_data(dm))
        task.to(device).train()
        batch = task.on_after_batch_transfer({k: v.to(device) for k, v in raw.items()}, 0)
        if channels_last:
            task.net.to(memory_format=torch.channels_last)
            batch["x_n"] = batch["x_n"].contiguous(memory_format=torch.channels_last)
        return task, batch

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine()
    print(
        f"device: {name}; torch {torch.__version__}; UNet {'Doury size' if full else 'sample'}; "
        f"batch {batch_size}; {steps} timed steps"
    )
    bf16 = torch.bfloat16
    for label, dtype, cl, compiled in (
        ("fp32", None, False, False),
        ("bf16", bf16, False, False),
        ("bf16 channels-last", bf16, True, False),
        ("bf16 torch.compile", bf16, False, True),
        ("bf16 channels-last torch.compile", bf16, True, True),
    ):
        task, batch = fresh(cl)
        model = torch.compile(task.net) if compiled else task.net
        rate = _device_rate(
            task, model, batch, steps, 3 * warmup if compiled else warmup, dtype, device
        )
        print(f"train {label:34s}: {rate:8.1f} samples/s")
    backend = "nccl" if device.type == "cuda" else "gloo"
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())})
    dist.init_process_group(
        backend, rank=0, world_size=1, device_id=device if device.type == "cuda" else None
    )
    try:
        task, batch = fresh()
        ddp = DDP(task.net, device_ids=[device.index] if device.type == "cuda" else None)
        rate = _device_rate(task, ddp, batch, steps, warmup, bf16, device)
        print(f"train {'bf16 DDP, 1 rank (' + backend + ')':34s}: {rate:8.1f} samples/s")
        task, batch = fresh()
        for block in task.net.stages():  # as climdl.parallel.strategies.parallelize_task does
            fully_shard(block)
        fully_shard(task.net)
        # bf16 by autocast (precision: bf16-mixed): FSDP2's bf16 MixedPrecisionPolicy would cast
        # BatchNorm's weights but not its float32 running statistics
        rate = _device_rate(task, task.net, batch, steps, warmup, bf16, device)
        print(f"train {'bf16 FSDP2, 1 rank (' + backend + ')':34s}: {rate:8.1f} samples/s")
    finally:
        dist.destroy_process_group()
    if device.type == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated(device) / 1e9:.2f} GB")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=16, help="samples per process and step")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--no-sync-bn", action="store_true", help="per-process BatchNorm statistics")
    p.add_argument(
        "--device",
        default=None,
        help="cuda (or cpu): instead of the 1-vs-2-process comparison, single-device "
        "figures - fp32/bf16/channels-last, torch.compile off/on, DDP and FSDP2 on one "
        "rank (NCCL on GPUs) - for the Doury-size UNet",
    )
    p.add_argument("--small", action="store_true", help="with --device: the sample-size UNet")
    a = p.parse_args()
    if a.device:
        device_figures(a.device, a.steps, a.warmup, a.batch_size, full=not a.small)
        return
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    _setup_data()  # makes the sample in the cache once, before the workers read it
    base = {
        "steps": a.steps,
        "warmup": a.warmup,
        "batch_size": a.batch_size,
        "threads": a.threads,
        "sync_bn": not a.no_sync_bn,
        "no_sync": False,
    }
    one = _run(1, base)
    wide = _run(1, {**base, "threads": 2 * a.threads})
    two = _run(2, base)
    quiet = _run(2, {**base, "no_sync": True})
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"torch {torch.__version__}; gloo; {a.threads} thread(s) per process; "
        f"batch {a.batch_size} per process; {a.steps} timed steps"
    )
    print(f"1 process          : {one['rate']:7.1f} samples/s ({one['step_ms']:.0f} ms/step)")
    print(
        f"1 process, {2 * a.threads} threads: {wide['rate']:7.1f} samples/s "
        f"({wide['rate'] / one['rate']:.2f}x)"
    )
    speedup = two["rate"] / one["rate"]
    print(
        f"2 processes (DDP)  : {two['rate']:7.1f} samples/s ({two['step_ms']:.0f} ms/step): "
        f"speed-up {speedup:.2f}x, scaling efficiency {100 * speedup / 2:.0f}%"
    )
    print(f"2 processes no_sync: {quiet['rate']:7.1f} samples/s ({quiet['step_ms']:.0f} ms/step)")
    exposed = max(0.0, two["step_ms"] - quiet["step_ms"])
    grad_ms = 1e3 * two["grad"] / two["steps"]
    bn_ms = 1e3 * two["bn"] / two["steps"]
    print(
        f"gradient all-reduce (DDP comm hook, overlaps backward): {grad_ms:.1f} ms/step = "
        f"{100 * grad_ms / two['step_ms']:.0f}% of a step"
    )
    print(
        f"exposed gradient communication (DDP - no_sync): {exposed:.1f} ms/step = "
        f"{100 * exposed / two['step_ms']:.0f}% of a step"
    )
    if base["sync_bn"]:
        print(
            f"global BatchNorm all-reduces (forward): {bn_ms:.1f} ms/step = "
            f"{100 * bn_ms / two['step_ms']:.0f}% of a step"
        )
    print(
        f"peak memory per process: 1 proc {one['peak_mb']:.0f} MB, 2 procs {two['peak_mb']:.0f} MB"
    )


if __name__ == "__main__":
    main()
