"""Training throughput: climdl's Lightning training vs a hand-written PyTorch loop, and
climdl's loader alone vs iterating in-memory NumPy arrays, on the same data and model.

    python bench/train_throughput.py [--steps 20] [--batch-size 32] [--device cpu|cuda]

Data: the embedded sample (catalog entry sample-alps, Emulator_hist_future), loaded in memory.
Model: the sample config's UNet (16/128/16 filters, orography head). Both training paths run
the same network, the same device-side normalisation and the same loss, with Adam; only the
machinery around them differs. Prints samples/s, the ratios and peak memory.
"""

from __future__ import annotations

import argparse
import time

import lightning as L
import numpy as np
import torch
from _memory import peak_rss_bytes

from climdl.data.emulator_data import EmulatorDataModule
from climdl.tasks.downscaling import DownscalingTask

MODEL = {
    "base_filters": 16,
    "max_filters": 128,
    "extra_filters": 16,
    "head_features": 16,
    "lr": 1e-3,
}


class _Timer(L.Callback):
    """Times training batches after ``warmup`` of them."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.n, self.t0, self.samples = warmup, 0, 0.0, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):  # type: ignore[no-untyped-def]
        if self.n == self.warmup:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):  # type: ignore[no-untyped-def]
        self.n += 1
        if self.n > self.warmup:
            self.samples += batch["x"].shape[0]

    def rate(self) -> float:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return self.samples / (time.perf_counter() - self.t0)


def lightning_rate(dm: EmulatorDataModule, steps: int, warmup: int, device: str) -> float:
    torch.manual_seed(0)
    task = DownscalingTask(**MODEL)
    timer = _Timer(warmup)
    trainer = L.Trainer(
        max_steps=steps + warmup,
        accelerator=device,
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[timer],
    )
    trainer.fit(task, datamodule=dm)
    return timer.rate()


def plain_rate(dm: EmulatorDataModule, steps: int, warmup: int, device: str) -> float:
    """A hand-written loop over in-memory tensors with the same network, normalisation, loss."""
    torch.manual_seed(0)
    task = DownscalingTask(**MODEL)
    task.build(task.spec_from_data(dm))
    task.to(device).train()
    opt = torch.optim.Adam(task.parameters(), lr=MODEL["lr"])
    assert dm.source.x_np is not None and dm.source.y_np is not None
    x_all = torch.from_numpy(dm.source.x_np[dm.train_idx])
    y_all = torch.from_numpy(dm.source.y_np[dm.train_idx])
    aux_all = torch.from_numpy(dm.aux[dm.train_idx])
    bs, n = dm.batch_size, x_all.shape[0]
    rng = np.random.default_rng(0)
    samples, t0 = 0, 0.0
    for step in range(steps + warmup):
        if step == warmup:
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        idx = torch.from_numpy(rng.choice(n, size=bs, replace=False))
        batch = {
            "x": x_all[idx].to(device),
            "y": y_all[idx].to(device),
            "aux": aux_all[idx].to(device),
        }
        batch = task.on_after_batch_transfer(batch, 0)
        loss, _ = task.compute_loss(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step >= warmup:
            samples += bs
    if device == "cuda":
        torch.cuda.synchronize()
    return samples / (time.perf_counter() - t0)


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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = p.parse_args()
    dm = EmulatorDataModule(
        catalog="sample-alps", experiment="Emulator_hist_future", batch_size=a.batch_size
    )
    dm.setup("fit")
    accel = "gpu" if a.device == "cuda" else "cpu"
    plain = plain_rate(dm, a.steps, a.warmup, a.device)
    lit = lightning_rate(dm, a.steps, a.warmup, accel)
    plain2 = plain_rate(dm, a.steps, a.warmup, a.device)  # again: the order must not decide
    load_climdl, load_plain = loader_rates(dm, 100)
    plain_mean = (plain + plain2) / 2
    print(
        f"device: {a.device}, torch {torch.__version__}, threads {torch.get_num_threads()}, batch {a.batch_size}"
    )
    print(
        f"hand-written loop:       {plain_mean:10.1f} samples/s (runs: {plain:.1f}, {plain2:.1f})"
    )
    print(
        f"climdl Lightning:        {lit:10.1f} samples/s   ratio climdl/plain = {lit / plain_mean:.2f}"
    )
    print(f"climdl loader alone:     {load_climdl:10.1f} samples/s")
    print(
        f"plain NumPy batches:     {load_plain:10.1f} samples/s   ratio loader/plain = {load_climdl / load_plain:.2f}"
    )
    print(f"loader headroom over the training step: {load_climdl / lit:.1f}x")
    print(f"peak RSS: {peak_rss_bytes() / 1e9:.2f} GB")
    if a.device == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 1e9:.2f} GB")


if __name__ == "__main__":
    main()
