"""Training throughput: climdl's Lightning training vs a hand-written PyTorch loop, for the
sample-sized and the full-size UNet, with model FLOPs and MFU; and climdl's loader alone vs
iterating in-memory NumPy arrays, on the same data.

    python bench/train_throughput.py [--models sample full] [--precision 32|bf16]
        [--steps N] [--warmup N] [--batch-size 32] [--device cpu|cuda]
        [--fused auto|on|off] [--channels-last auto|on|off] [--compile] [--peak-tflops T]

Data: the embedded sample (catalog entry sample-alps, Emulator_hist_future; 16 x 16 -> 128 x
128), loaded in memory. Models: ``sample`` is the sample config's UNet (16/128/16 filters,
orography head), ``full`` Doury et al.'s widths (32/512/64, configs/emulator/alps.yaml). Both
training paths run the same network, the same device-side normalisation, the same loss and
Adam, and the same speed options (climdl's automatic choices of :mod:`climdl.tasks.speed`
unless overridden: fused Adam, channels_last on the CPU and on CUDA in bf16, opt-in
``torch.compile``); only the machinery around them differs. ``--precision bf16`` is ``bf16-mixed`` for Lightning and
``torch.autocast`` in the hand loop. The runs interleave (hand, climdl, hand) and the hand
loop's figure is the mean of its two runs, so that the order does not decide.

Model FLOPs per sample: the matmuls and convolutions of one training step's forward and
backward (``torch.utils.flop_counter.FlopCounterMode``) over one batch, divided by its size.
MFU: the achieved model FLOP/s over the device's dense bf16 peak (a table by device name, or
``--peak-tflops``). Prints samples/s, the ratios, FLOPs, MFU and peak memory.
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from typing import Any

import lightning as L
import numpy as np
import torch
from _memory import peak_rss_bytes
from torch.utils.flop_counter import FlopCounterMode

from climdl.data.emulator_data import EmulatorDataModule
from climdl.data.spec import EmulatorSpec
from climdl.tasks.downscaling import DownscalingTask
from climdl.tasks.speed import (
    SpeedOptions,
    adam_kwargs,
    compile_network,
    to_channels_last,
    use_channels_last,
)

MODEL = {
    "base_filters": 16,
    "max_filters": 128,
    "extra_filters": 16,
    "head_features": 16,
    "lr": 1e-3,
}
"""The sample config's UNet (configs/emulator/sample.yaml)."""
FULL_MODEL = {
    "base_filters": 32,
    "max_filters": 512,
    "extra_filters": 64,
    "head_features": 16,
    "lr": 1e-3,
}
"""Doury et al. (2023)'s widths (configs/emulator/alps.yaml)."""
MODELS = {"sample": MODEL, "full": FULL_MODEL}

PEAK_BF16_TFLOPS = (  # dense bf16 tensor-core peaks; first match of the device name wins
    (("H100", "PCIe"), 756.0),
    (("H100", "NVL"), 835.0),
    (("H100",), 989.0),  # SXM
    (("H200",), 989.0),
    (("A100",), 312.0),
    (("L40S",), 362.0),
    (("4090",), 165.0),
)


def peak_tflops(device: str) -> tuple[str, float | None]:
    """The device's name and dense bf16 peak (TFLOP/s; None: unknown, or a CPU)."""
    if device != "cuda":
        return "cpu", None
    name = torch.cuda.get_device_name(0)
    for keys, peak in PEAK_BF16_TFLOPS:
        if all(k.lower() in name.lower() for k in keys):
            return name, peak
    return name, None


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


class _Timer(L.Callback):
    """Times training batches after ``warmup`` of them."""

    def __init__(self, warmup: int, device: str) -> None:
        self.warmup, self.device, self.n, self.t0, self.samples = warmup, device, 0, 0.0, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):  # type: ignore[no-untyped-def]
        if self.n == self.warmup:
            _sync(self.device)
            self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):  # type: ignore[no-untyped-def]
        self.n += 1
        if self.n > self.warmup:
            self.samples += batch["x"].shape[0]

    def rate(self) -> float:
        _sync(self.device)
        return self.samples / (time.perf_counter() - self.t0)


def _task(model: dict[str, Any], spec: EmulatorSpec, options: SpeedOptions) -> DownscalingTask:
    """A task built from the (completed) spec with the same initial weights every time."""
    torch.manual_seed(0)
    task = DownscalingTask(**model)
    task.build(spec)
    task.speed = options
    return task


def lightning_rate(
    dm: EmulatorDataModule, task: DownscalingTask, a: argparse.Namespace, steps: int, warmup: int
) -> float:
    """climdl's training: ``trainer.fit`` of the task, timed by a callback."""
    timer = _Timer(warmup, a.device)
    trainer = L.Trainer(
        max_steps=steps + warmup,
        accelerator="gpu" if a.device == "cuda" else "cpu",
        devices=1,
        precision="bf16-mixed" if a.precision == "bf16" else "32-true",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[timer],
    )
    trainer.fit(task, datamodule=dm)
    return timer.rate()


def _hand_setup(task: DownscalingTask, a: argparse.Namespace) -> torch.optim.Optimizer:
    """The hand loop's network on the device with the same speed options as climdl's."""
    device = torch.device(a.device)
    task.to(device).train()
    assert task.net is not None
    precision = "bf16-mixed" if a.precision == "bf16" else "32-true"
    if use_channels_last(device, precision, task.speed.channels_last):
        to_channels_last(task.net)
    if task.speed.compile:
        compile_network(task.net, device)
    params = list(task.parameters())
    return torch.optim.Adam(params, lr=task.hp.lr, **adam_kwargs(params, None, task.speed.fused))


def plain_rate(
    dm: EmulatorDataModule, task: DownscalingTask, a: argparse.Namespace, steps: int, warmup: int
) -> float:
    """A hand-written loop over in-memory tensors with the same network, normalisation, loss."""
    opt = _hand_setup(task, a)
    assert dm.source.x_np is not None and dm.source.y_np is not None
    x_all = torch.from_numpy(dm.source.x_np[dm.train_idx])
    y_all = torch.from_numpy(dm.source.y_np[dm.train_idx])
    aux_all = torch.from_numpy(dm.aux[dm.train_idx])
    bs, n = dm.batch_size, x_all.shape[0]
    rng = np.random.default_rng(0)
    autocast = torch.autocast(a.device, dtype=torch.bfloat16, enabled=a.precision == "bf16")
    samples, t0 = 0, 0.0
    for step in range(steps + warmup):
        if step == warmup:
            _sync(a.device)
            t0 = time.perf_counter()
        idx = torch.from_numpy(rng.choice(n, size=bs, replace=False))
        batch = {
            "x": x_all[idx].to(a.device),
            "y": y_all[idx].to(a.device),
            "aux": aux_all[idx].to(a.device),
        }
        batch = task.on_after_batch_transfer(batch, 0)
        with autocast:
            loss, _ = task.compute_loss(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step >= warmup:
            samples += bs
    _sync(a.device)
    return samples / (time.perf_counter() - t0)


def flops_per_sample(dm: EmulatorDataModule, task: DownscalingTask) -> float:
    """Model FLOPs (matmuls, convolutions) of one training step's forward and backward,
    per sample: counted on a 4-sample CPU batch (the count is linear in the batch size)."""
    task.train()
    assert dm.source.x_np is not None and dm.source.y_np is not None
    idx = dm.train_idx[:4]
    batch = {
        "x": torch.from_numpy(dm.source.x_np[idx]),
        "y": torch.from_numpy(dm.source.y_np[idx]),
        "aux": torch.from_numpy(dm.aux[idx]),
    }
    with FlopCounterMode(display=False) as counter:
        loss, _ = task.compute_loss(task.on_after_batch_transfer(batch, 0))
        loss.backward()
    task.zero_grad(set_to_none=True)
    return counter.get_total_flops() / len(idx)


def loader_rates(dm: EmulatorDataModule, batches: int) -> tuple[float, float]:
    """climdl's DataLoader alone vs random batches from the in-memory NumPy arrays."""
    loader = iter(dm.train_dataloader())
    next(loader)
    t0, samples = time.perf_counter(), 0
    for _ in range(batches):
        try:
            samples += next(loader)["x"].shape[0]
        except StopIteration:
            loader = iter(dm.train_dataloader())
    climdl = samples / (time.perf_counter() - t0)
    assert dm.source.x_np is not None and dm.source.y_np is not None
    x, y = dm.source.x_np, dm.source.y_np
    rng = np.random.default_rng(0)
    t0, samples = time.perf_counter(), 0
    for _ in range(batches):
        idx = np.sort(rng.choice(dm.train_idx, size=dm.batch_size, replace=False))
        xb, yb = torch.from_numpy(x[idx]), torch.from_numpy(y[idx])
        samples += xb.shape[0] + 0 * yb.shape[0]
    plain = samples / (time.perf_counter() - t0)
    return climdl, plain


def _switch(value: str) -> bool | None:
    return {"auto": None, "on": True, "off": False}[value]


def _defaults(a: argparse.Namespace, name: str) -> tuple[int, int]:
    """Steps and warm-up steps: as given, else 40/5 on a GPU (3 more warm-up steps with
    compile) and few on the CPU (the full-size UNet takes seconds a step on 2 cores)."""
    if a.device == "cuda":
        steps, warmup = 40, 8 if a.compile else 5
    else:
        steps, warmup = (15, 2) if name == "sample" else (3, 1)
        warmup += 1 if a.compile else 0
    return a.steps or steps, a.warmup if a.warmup is not None else warmup


def bench_model(
    name: str,
    dm: EmulatorDataModule,
    spec: EmulatorSpec,
    a: argparse.Namespace,
    options: SpeedOptions,
) -> float:
    """One model's lines; returns climdl's samples/s."""
    model = MODELS[name]
    steps, warmup = _defaults(a, name)
    spec_task = DownscalingTask(**model)
    spec_task.build(spec)
    fps = flops_per_sample(dm, spec_task)
    params = sum(p.numel() for p in spec_task.parameters())
    del spec_task
    plain = plain_rate(dm, _task(model, spec, options), a, steps, warmup)
    lit = lightning_rate(dm, _task(model, spec, options), a, steps, warmup)
    plain2 = plain_rate(dm, _task(model, spec, options), a, steps, warmup)
    plain_mean = (plain + plain2) / 2
    widths = "/".join(str(model[k]) for k in ("base_filters", "max_filters", "extra_filters"))
    print(
        f"== {name} UNet ({widths} filters, {params / 1e6:.2f} M parameters), "
        f"{steps} steps after {warmup} warm-up"
    )
    print(f"model FLOPs per sample (forward + backward): {fps / 1e9:.2f} GFLOP")
    print(
        f"hand-written loop:       {plain_mean:10.1f} samples/s (runs: {plain:.1f}, {plain2:.1f})"
    )
    print(
        f"climdl Lightning:        {lit:10.1f} samples/s   "
        f"ratio climdl/plain = {lit / plain_mean:.2f}"
    )
    device_name, peak = peak_tflops(a.device)
    peak = a.peak_tflops or peak
    achieved = {"climdl": lit * fps / 1e12, "hand": plain_mean * fps / 1e12}
    line = f"achieved: climdl {achieved['climdl']:.3f} TFLOP/s, hand {achieved['hand']:.3f} TFLOP/s"
    if peak:
        mfu = {k: 100 * v / peak for k, v in achieved.items()}
        line += (
            f"; MFU vs {peak:.0f} TFLOP/s bf16 dense ({device_name}): "
            f"climdl {mfu['climdl']:.2f} %, hand {mfu['hand']:.2f} %"
        )
    else:
        line += f"; MFU needs --peak-tflops (no bf16 peak known for {device_name})"
    print(line)
    return lit


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["sample", "full"])
    p.add_argument("--steps", type=int, default=None, help="timed steps (default: by device)")
    p.add_argument("--warmup", type=int, default=None, help="untimed first steps")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precision", choices=("32", "bf16"), default="32")
    p.add_argument("--fused", choices=("auto", "on", "off"), default="auto")
    p.add_argument("--channels-last", choices=("auto", "on", "off"), default="auto")
    p.add_argument("--compile", action="store_true", help="torch.compile the network")
    p.add_argument("--peak-tflops", type=float, default=None, help="the device's bf16 peak")
    p.add_argument("--no-loader", action="store_true", help="skip the loader comparison")
    a = p.parse_args()
    logging.getLogger("lightning").setLevel(logging.WARNING)  # the result lines alone
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message="You have overridden `on_after_batch_transfer`")
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    options = SpeedOptions(
        fused=_switch(a.fused), channels_last=_switch(a.channels_last), compile=a.compile
    )
    dm = EmulatorDataModule(
        catalog="sample-alps", experiment="Emulator_hist_future", batch_size=a.batch_size
    )
    dm.setup("fit")
    device = torch.device(a.device)
    precision = "bf16-mixed" if a.precision == "bf16" else "32-true"
    probe = [torch.zeros(1, device=device)]
    resolved = (
        f"fused Adam {'on' if adam_kwargs(probe, None, options.fused) else 'off'}, "
        f"channels_last {'on' if use_channels_last(device, precision, options.channels_last) else 'off'}, "
        f"compile {'on' if options.compile else 'off'}"
    )
    print(
        f"device: {a.device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"batch {a.batch_size}, precision {a.precision}, {resolved}"
    )
    spec = DownscalingTask().spec_from_data(dm)  # the fitted parts are the same for both
    lit_sample = None
    for name in a.models:
        lit = bench_model(name, dm, spec, a, options)
        lit_sample = lit if name == "sample" else lit_sample
    if not a.no_loader:
        load_climdl, load_plain = loader_rates(dm, 100)
        print(f"climdl loader alone:     {load_climdl:10.1f} samples/s")
        print(
            f"plain NumPy batches:     {load_plain:10.1f} samples/s   "
            f"ratio loader/plain = {load_climdl / load_plain:.2f}"
        )
        if lit_sample:
            print(f"loader headroom over the sample UNet's step: {load_climdl / lit_sample:.1f}x")
    print(f"peak RSS: {peak_rss_bytes() / 1e9:.2f} GB")
    if a.device == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 1e9:.2f} GB")


if __name__ == "__main__":
    main()
