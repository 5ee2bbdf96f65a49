"""Host-device synchronisations per training step of climdl's tasks, by origin.

    python bench/host_syncs.py [--steps 12] [--warmup 2] [--val-batches 4]
                               [--tasks downscaling,segmentation,generative]

Each task trains one epoch of ``--steps`` steps on its embedded sample the way ``climdl
train`` does, with the progress bar on and a CSV logger writing every 5 steps (as in
``configs/*/sample.yaml``), then validates ``--val-batches`` batches, under
:class:`climdl.tasks.host_sync.SyncsPerStep`. It prints the synchronising calls of each
training step after ``--warmup`` (steady state) and, per origin (``file:line function op``),
their number per step; then the same per validation batch (but the first, and the last, whose
window holds Lightning's conversion of the epoch's logged means). Works on a CPU-only machine (see :mod:`climdl.tasks.host_sync` for how it tells the
tensors that would be on a GPU); on a CUDA machine it reads the real devices.

Models: the downscaling UNet of ``bench/train_throughput.py`` (batch 32), the cloud UNet of
``configs/clouds/sample.yaml`` (batch 16, 64 x 64 crops) and the generative residual of
``configs/emulator/sample_generative.yaml`` (batch 16, 64 x 64 crops) over the downscaling
model just trained as its stage 1.
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger

from climdl.clouds.data import CloudDataModule
from climdl.data.emulator_data import EmulatorDataModule
from climdl.tasks.downscaling import DownscalingTask
from climdl.tasks.generative import GenerativeDownscalingTask
from climdl.tasks.host_sync import HostSyncs, SyncsPerStep
from climdl.tasks.segmentation import SegmentationTask

MODEL: dict[str, Any] = {
    "base_filters": 16,
    "max_filters": 128,
    "extra_filters": 16,
    "head_features": 16,
    "lr": 1e-3,
}
"""The downscaling model of bench/train_throughput.py."""


def fit(
    task: L.LightningModule, dm: L.LightningDataModule, steps: int, val: int, root: Path
) -> SyncsPerStep:
    """Train an epoch of ``steps`` steps and validate ``val`` batches, with the progress bar and
    a CSV logger; the syncs per step."""
    counter = SyncsPerStep()
    trainer = L.Trainer(
        max_epochs=1,
        limit_train_batches=steps,
        limit_val_batches=val,
        accelerator="auto",
        devices=1,
        logger=CSVLogger(root, name="csv"),
        log_every_n_steps=5,
        enable_checkpointing=False,
        enable_progress_bar=True,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[counter],
        default_root_dir=root,
    )
    trainer.fit(task, datamodule=dm)
    trainer.save_checkpoint(root / "last.ckpt")
    return counter


def report(name: str, steps: list[HostSyncs], warmup: int, what: str = "step") -> None:
    """Print the steady-state steps' totals and the syncs per step by origin."""
    steady = steps[warmup:]
    per_origin: Counter[str] = Counter()
    via: dict[str, str] = {}
    for s in steady:
        per_origin.update(s.by_origin)
        via.update(s.via)
    n = max(len(steady), 1)
    total = sum(s.total for s in steady)
    print(f"== {name}: {len(steady)} {what}s after {warmup} (warm-up)")
    print(f"syncs per {what}: {[s.total for s in steady]}  mean {total / n:.2f}")
    for key, count in per_origin.most_common():
        origin = key.rsplit(" ", 1)[0]
        print(f"  {count / n:6.2f}/{what}  {key}")
        print(f"                 via {via.get(origin, '')}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=12, help="training steps (one epoch)")
    p.add_argument("--warmup", type=int, default=2, help="first steps left out of the counts")
    p.add_argument("--val-batches", type=int, default=4)
    p.add_argument("--tasks", default="downscaling,segmentation,generative")
    a = p.parse_args()
    tasks = a.tasks.split(",")
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    device = "cuda" if torch.cuda.is_available() else "cpu (simulated device tensors)"
    results: list[tuple[str, SyncsPerStep]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        stage1: Path | None = None
        if "downscaling" in tasks or "generative" in tasks:
            torch.manual_seed(0)
            dm = EmulatorDataModule(
                catalog="sample-alps", experiment="Emulator_hist_future", batch_size=32
            )
            counter = fit(DownscalingTask(**MODEL), dm, a.steps, a.val_batches, root / "ds")
            results.append(("DownscalingTask (UNet, batch 32)", counter))
            stage1 = root / "ds" / "last.ckpt"
        if "segmentation" in tasks:
            torch.manual_seed(0)
            cdm = CloudDataModule(
                sample_scenes=24, crop_size=64, samples_per_epoch=16 * a.steps, batch_size=16
            )
            seg: dict[str, Any] = {"depth": 2, "base_filters": 16, "max_filters": 128}
            counter = fit(SegmentationTask(**seg), cdm, a.steps, a.val_batches, root / "seg")
            results.append(("SegmentationTask (cloud UNet, batch 16)", counter))
        if "generative" in tasks:
            assert stage1 is not None
            torch.manual_seed(0)
            dm = EmulatorDataModule(
                catalog="sample-alps", experiment="Emulator_hist_future", batch_size=16
            )
            gen = GenerativeDownscalingTask(
                str(stage1), depth=3, base_filters=16, max_filters=64, crop=64
            )
            counter = fit(gen, dm, a.steps, a.val_batches, root / "gen")
            results.append(("GenerativeDownscalingTask (flow residual, batch 16)", counter))
    print(f"\ndevice: {device}, torch {torch.__version__}, lightning {L.__version__}")
    print("progress bar on, CSVLogger every 5 steps; a step: its on_train_batch_start to the next")
    for name, counter in results:
        report(name, counter.steps, a.warmup)
    for name, counter in results:
        report(name, counter.val_steps[:-1], 1, "validation batch")


if __name__ == "__main__":
    main()
