"""Domain parallelism on a large grid: activation memory per rank with 1, 2 and 4 strips, and
training throughput against data parallelism on the same processes.

    python bench/domain_parallel.py                      # CPU, gloo: 32x32 -> 512x512 Doury UNet
    python bench/domain_parallel.py --size 256 --steps 2 # quicker
    python bench/domain_parallel.py --device cuda --blocks 1 --batch 8 --precision bf16

Model: the Doury UNet (:class:`~climdl.models.unet.DouryUNet`, ``--filters`` base/max/extra,
Doury's 32/512/64 by default; 15 predictors, 32 1-D inputs) from ``--in-size`` to ``--size``
points a side, in training mode (BatchNorm on the batch), on random inputs and a random target
with the NaN-masked MSE. Every configuration runs in fresh processes (``torch.multiprocessing``
spawn, gloo, ``--threads`` torch threads each), so each one's peak memory is its own.

(a) Memory, ``--blocks`` (1 2 4): one process per strip, one domain group of that many strips
(:func:`~climdl.parallel.domain.shard_network`; 1 block is the plain network in one process),
one forward and backward of ``--batch`` samples. A ``saved_tensors_hooks`` pair counts the
bytes autograd keeps for the backward pass (unique storages, parameters excluded), separately
for the coarse part that every rank runs whole (entry, encoder, bottleneck, decoder levels with
skips: :meth:`~climdl.models.unet.DouryUNet.forward_coarse`) and the sharded part (the decoder
levels beyond the input resolution, the head and the loss). The sharded part should fall as
1/blocks (bench/RESULTS.md says what the halo layers and the domain-wide BatchNorm keep
besides); the coarse part and the weights (and their gradients) stay.
Also printed: each rank's peak resident memory (``VmHWM``, see ``bench/_memory.py``).

(b) Throughput, ``--procs`` (2 4): training steps (forward, backward, DDP's gradient all-reduce
over all ranks, Adam) on ``--batch`` samples a step in all, after ``--warmup`` steps:
data parallelism (each rank ``batch / procs`` whole samples, BatchNorm over the global batch as
under ``configs/strategy/ddp.yaml``) against domain parallelism (one domain group of ``procs``
strips, each rank every sample's strip: ``configs/strategy/domain.yaml`` with ``domain_size:
procs``), and with ``--mesh`` and 4 processes the 2 x 2 data x domain mesh. Same global batch,
same processes. Also printed: CPU seconds per sample summed over the ranks, which the load of
a shared machine changes less than the wall time.

``--device cuda`` (one process, one GPU): the 1-block figures only (activation memory, peak
GPU memory, step time and samples/s), for the plain network and for the domain code path on
one rank (halo layers padding locally), in ``--precision`` (bf16 autocast or fp32).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import time
import warnings
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from _memory import peak_rss_bytes
from torch import Tensor

from climdl.errors import ConfigError
from climdl.models import DouryUNet
from climdl.parallel.domain import Domain, domain_loss, plan_for, shard_network
from climdl.parallel.launch import free_port
from climdl.parallel.syncbn import convert_batchnorm
from climdl.tasks.losses import masked_mse

IN_CHANNELS, N_SCALARS = 15, 32


# ---------------------------------------------------------------------------- measuring
class SavedBytes:
    """Bytes autograd saves for the backward pass, by part: each storage counted once, in the
    first part that saves it; parameters and autocast's copies of them excluded."""

    def __init__(self, params: list[Tensor]) -> None:
        self.skip = {p.untyped_storage().data_ptr() for p in params}
        self.seen: set[int] = set()
        self.parts: dict[str, int] = {}

    @contextlib.contextmanager
    def part(self, name: str) -> Iterator[None]:
        """Count what the forward pass inside saves under ``name``."""
        self.parts.setdefault(name, 0)

        def pack(t: Tensor) -> Tensor:
            st = t.untyped_storage()
            ptr = st.data_ptr()
            if ptr and ptr not in self.skip and ptr not in self.seen and not _weight_copy(t):
                self.seen.add(ptr)
                self.parts[name] += st.nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            yield


def _weight_copy(t: Tensor) -> bool:
    """Whether ``t`` is autocast's low-precision copy of a parameter (a weight, not an
    activation): made by a cast whose input is a leaf that accumulates a gradient."""
    fn = t.grad_fn
    if fn is None or type(fn).__name__ != "ToCopyBackward0":
        return False
    return any(type(f).__name__ == "AccumulateGrad" for f, _ in fn.next_functions if f)


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _net(cfg: dict[str, Any]) -> DouryUNet:
    base, top, extra = cfg["filters"]
    torch.manual_seed(0)
    return DouryUNet(
        IN_CHANNELS,
        1,
        in_size=(cfg["in_size"],) * 2,
        out_size=(cfg["size"],) * 2,
        n_scalars=N_SCALARS,
        base_filters=base,
        max_filters=top,
        extra_filters=extra,
    )


def _batch(cfg: dict[str, Any], n: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """``n`` random samples (the same ones in every process): predictors, 1-D inputs, target
    with a few masked points."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, IN_CHANNELS, cfg["in_size"], cfg["in_size"], generator=g)
    s = torch.randn(n, N_SCALARS, generator=g)
    y = torch.randn(n, 1, cfg["size"], cfg["size"], generator=g)
    y[:, :, :3] = float("nan")
    return x.to(device), s.to(device), y.to(device)


def _mesh(data: int, domain: int) -> tuple[Any, Any]:
    """This rank's :class:`~climdl.parallel.domain.Domain` and data group on a data x domain
    mesh of consecutive ranks (as :class:`~climdl.parallel.domain.DomainParallelStrategy`)."""
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh("cpu", (data, domain), mesh_dim_names=("data", "domain"))
    return Domain.from_group(mesh["domain"].get_group()), mesh["data"].get_group()


# ---------------------------------------------------------------------------- (a) memory
def _memory_worker(rank: int, world: int, port: int, cfg: dict[str, Any], out: Any) -> None:
    """One strip of a ``world``-strip domain: one forward and backward, what autograd saved."""
    warnings.filterwarnings("ignore", category=FutureWarning)  # syncbn's all_reduce, every step
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(cfg["threads"])

    if world > 1:
        dist.init_process_group("gloo", rank=rank, world_size=world)
    net = _net(cfg).train()
    x, s, y = _batch(cfg, cfg["batch"], torch.device("cpu"))
    rows = (0, cfg["size"])
    domain = None
    if world > 1:
        domain, data_group = _mesh(1, world)
        plan = shard_network(net, domain, data_group, None)
        assert plan.rows is not None
        rows = plan.rows
    y = y[:, :, rows[0] : rows[1]]
    counter = SavedBytes(list(net.parameters()))
    t0 = time.perf_counter()
    with counter.part("coarse"):
        h = net.forward_coarse(x, s)
    with counter.part("sharded"):
        pred = net.forward_fine(net.scatter(h))
        loss = masked_mse(pred, y)
        if domain is not None:
            loss, _ = domain_loss({"y": loss}, {"y": torch.isfinite(y).sum()}, domain)
    loss.backward()
    elapsed = time.perf_counter() - t0
    weights = sum(p.numel() * p.element_size() for p in net.parameters())
    out.put(
        {
            "rank": rank,
            "rows": rows,
            "weights": weights,
            "rss": peak_rss_bytes(),
            "seconds": elapsed,
            **counter.parts,
        }
    )
    if world > 1:
        dist.destroy_process_group()


# ---------------------------------------------------------------------------- (b) throughput
def _train_worker(rank: int, world: int, port: int, cfg: dict[str, Any], out: Any) -> None:
    """Training steps of one rank on a ``data x domain`` mesh (domain 1: data parallelism)."""
    warnings.filterwarnings("ignore", category=FutureWarning)
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(cfg["threads"])
    from torch.nn.parallel import DistributedDataParallel as DDP

    dist.init_process_group("gloo", rank=rank, world_size=world)
    size = cfg["domain"]
    data = world // size
    net = _net(cfg).train()
    x, s, y = _batch(cfg, cfg["batch"], torch.device("cpu"))
    per = cfg["batch"] // data
    mine = slice((rank // size) * per, (rank // size + 1) * per)  # this data group's samples
    x, s, y = x[mine], s[mine], y[mine]
    domain = None
    if size > 1:
        domain, data_group = _mesh(data, size)
        plan = shard_network(net, domain, data_group, None)
        assert plan.rows is not None
        y = y[:, :, plan.rows[0] : plan.rows[1]]
    else:
        convert_batchnorm(net, None)  # BatchNorm over the global batch, as the ddp preset
    model = DDP(net)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    t0 = cpu0 = 0.0
    for step in range(cfg["warmup"] + cfg["steps"]):
        if step == cfg["warmup"]:
            dist.barrier()
            t0, cpu0 = time.perf_counter(), time.process_time()
        opt.zero_grad(set_to_none=True)
        loss = masked_mse(model(x, s), y)
        if domain is not None:
            loss, _ = domain_loss({"y": loss}, {"y": torch.isfinite(y).sum()}, domain)
        loss.backward()
        opt.step()
    dist.barrier()
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    out.put({"rank": rank, "seconds": elapsed, "cpu": cpu, "rss": peak_rss_bytes()})
    dist.destroy_process_group()


def _spawn(worker: Any, world: int, cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """Run ``worker`` in ``world`` fresh processes; their reports in rank order."""

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    mp.start_processes(
        worker, args=(world, free_port(), cfg, queue), nprocs=world, start_method="spawn", join=True
    )
    reports = [queue.get(timeout=60) for _ in range(world)]
    return sorted(reports, key=lambda r: r["rank"])


# ---------------------------------------------------------------------------- one GPU
def device_figures(cfg: dict[str, Any], device_name: str, precision: str) -> None:
    """1 block on one device: activation memory and training steps, for the plain network and
    for the domain code path on one rank (halo layers padding locally, no neighbours)."""

    device = torch.device(device_name)
    cuda = device.type == "cuda"
    name = torch.cuda.get_device_name(device) if cuda else _cpu_model()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    print(f"device: {name}; torch {torch.__version__}; {_describe(cfg)}; {precision}")
    print("network        | saved: coarse | saved: sharded | peak GPU memory | ms/step | samples/s")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for label in ("plain", "domain, 1 rank"):
        net = _net(cfg).to(device).train()
        if label != "plain":
            shard_network(net, Domain(1, 0), None, None)
        x, s, y = _batch(cfg, cfg["batch"], device)
        opt = torch.optim.Adam(net.parameters(), lr=1e-4)
        counter = SavedBytes(list(net.parameters()))
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        t0 = 0.0
        for step in range(cfg["warmup"] + cfg["steps"]):
            if step == cfg["warmup"]:
                sync()
                t0 = time.perf_counter()
            counting = counter if step == 0 else None
            with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                with counting.part("coarse") if counting else contextlib.nullcontext():
                    h = net.forward_coarse(x, s)
                with counting.part("sharded") if counting else contextlib.nullcontext():
                    loss = masked_mse(net.forward_fine(net.scatter(h)).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sync()
        ms = 1e3 * (time.perf_counter() - t0) / cfg["steps"]
        peak = f"{torch.cuda.max_memory_allocated(device) / 2**30:11.2f} GiB" if cuda else "n/a"
        print(
            f"{label:14s} | {_gib(counter.parts['coarse'])} | {_gib(counter.parts['sharded'])}  "
            f"| {peak:>15s} | {ms:7.0f} | {1e3 * cfg['batch'] / ms:9.2f}"
        )
        del net, opt, x, s, y, h, loss


# ---------------------------------------------------------------------------- report
def _gib(n: float) -> str:
    return f"{n / 2**30:9.3f} GiB"


def _describe(cfg: dict[str, Any]) -> str:
    b, m, e = cfg["filters"]
    return (
        f"Doury UNet {cfg['in_size']}x{cfg['in_size']} -> {cfg['size']}x{cfg['size']}, "
        f"filters {b}/{m}/{e}, batch {cfg['batch']}"
    )


def memory_table(cfg: dict[str, Any], blocks: list[int]) -> None:
    """(a): one row per block count, the largest rank's figures."""
    print(
        f"\n(a) activation memory per rank, one forward + backward, batch {cfg['batch']} "
        "(largest rank; ratio to 1 block)"
    )
    print(
        "blocks | rows/rank | saved: coarse (whole) | saved: sharded part    | saved: total "
        "          | weights   | peak RSS            | fwd+bwd s"
    )
    base: dict[str, float] = {}
    for n in blocks:
        reps = _spawn(_memory_worker, n, cfg)
        top = max(reps, key=lambda r: r["sharded"])
        fig = {
            "coarse": float(top["coarse"]),
            "sharded": float(top["sharded"]),
            "total": float(top["coarse"] + top["sharded"]),
            "rss": float(max(r["rss"] for r in reps)),
        }
        base = base or fig

        def col(k: str, fig: dict[str, float] = fig, base: dict[str, float] = base) -> str:
            return f"{_gib(fig[k])} ({fig[k] / base[k]:.2f}x)"

        rows = top["rows"][1] - top["rows"][0]
        secs = max(r["seconds"] for r in reps)
        print(
            f"{n:6d} | {rows:9d} | {col('coarse')} | {col('sharded')} | {col('total')} | "
            f"{top['weights'] / 2**20:6.1f} MiB | {col('rss')} | {secs:8.1f}"
        )
        if n > 1:
            print(
                f"       | per rank: sharded part {', '.join(_gib(r['sharded']) for r in reps)}"
                f"; peak RSS {', '.join(_gib(r['rss']) for r in reps)}"
            )


def throughput_table(cfg: dict[str, Any], procs: list[int], mesh: bool) -> None:
    """(b): data vs domain parallelism (and the 2 x 2 mesh) on the same processes; CPU
    seconds per sample (all ranks' process time) as a measure of the work that a shared
    machine's load does not change as much as the wall time."""
    print(
        f"\n(b) training throughput, global batch {cfg['batch']}, {cfg['steps']} timed steps "
        f"after {cfg['warmup']} (DDP gradient all-reduce, Adam)"
    )
    print(
        "processes | layout                    | samples/s | s/step | vs data parallel "
        "| CPU s/sample | peak RSS per rank"
    )
    for p in procs:
        layouts = [(f"data parallel ({p} x 1)", 1), (f"domain parallel (1 x {p})", p)]
        if mesh and p == 4:
            layouts.append(("data x domain (2 x 2)", 2))
        ref = 0.0
        for label, size in layouts:
            if cfg["batch"] % (p // size):
                print(
                    f"{p:9d} | {label:25s} | skipped: batch {cfg['batch']} not divisible "
                    f"by {p // size} data groups"
                )
                continue
            reps = _spawn(_train_worker, p, {**cfg, "domain": size})
            secs = max(r["seconds"] for r in reps)
            rate = cfg["batch"] * cfg["steps"] / secs
            ref = ref or rate
            rss = max(r["rss"] for r in reps)
            cpu = sum(r["cpu"] for r in reps) / (cfg["batch"] * cfg["steps"])
            print(
                f"{p:9d} | {label:25s} | {rate:9.3f} | {secs / cfg['steps']:6.2f} | "
                f"{rate / ref:15.2f}x | {cpu:12.2f} | {_gib(rss)}"
            )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=512, help="output points a side (power of two)")
    p.add_argument("--in-size", type=int, default=32, help="predictor points a side")
    p.add_argument(
        "--filters",
        type=int,
        nargs=3,
        default=[32, 512, 64],
        metavar=("BASE", "MAX", "EXTRA"),
        help="Doury UNet widths (Doury's default)",
    )
    p.add_argument(
        "--blocks",
        type=int,
        nargs="*",
        default=None,
        help="(a) strips, one process each (default 1 2 4; with --device cuda: 1 only)",
    )
    p.add_argument("--procs", type=int, nargs="*", default=[2, 4], help="(b) processes")
    p.add_argument("--batch", type=int, default=4, help="samples per step in all (global)")
    p.add_argument("--steps", type=int, default=2, help="(b) timed training steps")
    p.add_argument("--warmup", type=int, default=1, help="(b) untimed steps first")
    p.add_argument("--mesh", action="store_true", help="(b) with 4 processes, also 2 x 2")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument(
        "--device",
        default="cpu",
        help="cpu: the comparisons, in gloo processes; cuda: 1 block in this process",
    )
    p.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        default="bf16",
        help="with --device cuda: bf16 autocast (default) or fp32; the CPU runs are fp32",
    )
    a = p.parse_args()
    cuda = a.device != "cpu"
    blocks = a.blocks if a.blocks is not None else ([1] if cuda else [1, 2, 4])
    if cuda and blocks != [1]:
        p.error("--device cuda measures 1 block (one process); 2 and 4 blocks run on the CPU.")
    cfg = {
        "size": a.size,
        "in_size": a.in_size,
        "filters": a.filters,
        "batch": a.batch,
        "steps": a.steps,
        "warmup": a.warmup,
        "threads": a.threads,
    }
    try:  # a clear sentence before any process starts
        net = _net(cfg)
        for n in {*blocks, *([] if cuda else a.procs)}:
            if n > 1:
                plan_for(net, n)
    except ConfigError as e:
        p.error(str(e))
    if cuda:
        device_figures(cfg, a.device, a.precision)
        return
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    load = os.getloadavg()
    print(
        f"machine: {_cpu_model()}, {os.cpu_count()} cores; torch {torch.__version__}; gloo; "
        f"{a.threads} thread(s) per process; load average at start {load[0]:.2f}"
    )
    print(_describe(cfg))
    if blocks:
        memory_table(cfg, blocks)
    if a.procs:
        throughput_table(cfg, a.procs, a.mesh)
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
