"""Cloud CNN vs the Fmask-like threshold test, class by class, on held-out generated scenes.

For each training seed, one run:

1. ``climdl train --config configs/clouds/sample.yaml --trainer.max_epochs E --seed_everything S``
   (plus any ``--set`` overrides), in a fresh subprocess, timed (the demo's cloud stage);
2. its best checkpoint (chosen on the validation scenes, as the config says) segments whole
   scenes of the chosen split, and the threshold test (:mod:`climdl.models.threshold`) labels the
   same scenes; both confusion matrices are scored by :func:`climdl.tasks.seg_metrics.scores`.

Splits: ``train`` (the run's training scenes: does it fit them?), ``val`` (the training run's own validation scenes: make choices on these), ``test``
(the config's 8 held-out scenes, seed 1, 128 x 128) and ``wide`` (scenes of another seed and a
size unlike the 64-pixel training crops, ``--wide-size``). Nothing here feeds back into
training; the test splits are only reported. ``--checkpoint`` scores an existing checkpoint
instead of training::

    CLIMDL_CACHE=/tmp/cache .venv/bin/python bench/cloud_skill.py [--seeds 123 1 2] [--epochs 6]
        [--split val test wide] [--set model.init_args.depth=3 ...] [--checkpoint CKPT]
        [--wide-scenes 6] [--wide-size 192 256] [--wide-seed 2027] [--json OUT.json]

Prints one table per split and seed (IoU per class, any-cloud IoU / precision / recall, mean
IoU; CNN and threshold side by side) and a summary over seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from climdl.clouds.training_scenes import SceneSource, ensure_sample, scene_sources
from climdl.tasks.seg_metrics import confusion, scores
from climdl.tasks.segmentation import SegmentationTask, load_segmenter
from climdl.tasks.threshold_scores import baseline_confusion

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "clouds" / "sample.yaml"


def train(seed: int, epochs: int, sets: list[str], root: Path) -> tuple[Path, float]:
    """Train the sample config in a subprocess; the best checkpoint and the wall time (s)."""
    cmd = [
        str(Path(sys.executable).with_name("climdl")),
        "train",
        "--config",
        str(CONFIG),
        "--trainer.max_epochs",
        str(epochs),
        "--seed_everything",
        str(seed),
        "--trainer.default_root_dir",
        str(root),
        "--trainer.logger",
        "false",
        "--trainer.enable_progress_bar",
        "false",
        "--quiet",
    ]
    for s in sets:
        key, _, value = s.partition("=")
        cmd += [f"--{key}", value]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    best = sorted(root.rglob("best-*.ckpt"))[-1]
    return best, wall


def predict(task: SegmentationTask, src: SceneSource) -> np.ndarray:
    """The CNN's labels of one whole scene (padded with no data to the network's multiple;
    with the scene's thermal context, :mod:`climdl.clouds.context`, when the model reads it)."""
    x, _ = src.read()
    m = task.size_multiple
    h, w = x.shape[1:]
    ph, pw = -(-h // m) * m, -(-w // m) * m
    xp = np.full((x.shape[0], ph, pw), np.nan, np.float32)
    xp[:, :h, :w] = x
    ctx = torch.from_numpy(src.context())[None] if task.needs_context else None
    prob = task.predict_proba(torch.from_numpy(xp)[None], ctx)
    out: np.ndarray = prob[0, :, :h, :w].argmax(0).numpy().astype(np.uint8)
    return out


def model_confusion(task: SegmentationTask, sources: list[SceneSource]) -> torch.Tensor:
    """Summed confusion of the CNN over whole scenes."""
    k = len(task.classes)
    total = torch.zeros(k, k, dtype=torch.long)
    for src in sources:
        _, y = src.read()
        total += confusion(predict(task, src), y, k).long()
    return total


def split_sources(
    split: str, task: SegmentationTask, args: argparse.Namespace
) -> list[SceneSource]:
    """The scenes of a split (``train``/``val``: the run's own scenes, by name)."""
    if split in ("val", "train"):
        spec = task.spec
        assert spec is not None
        n = len(spec.train_scenes) + len(spec.val_scenes)
        srcs = scene_sources(None, "netcdf", ensure_sample(n, (128, 128), 0))
        chosen = [s for s in srcs if (s.name in set(spec.val_scenes)) == (split == "val")]
    elif split == "test":
        chosen = scene_sources(None, "netcdf", ensure_sample(8, (128, 128), 1))
    else:
        size = (int(args.wide_size[0]), int(args.wide_size[1]))
        chosen = scene_sources(
            None, "netcdf", ensure_sample(args.wide_scenes, size, args.wide_seed)
        )
    for s in chosen:
        s.load()
    return chosen


def table(model: dict[str, float], base: dict[str, float], classes: list[str]) -> list[str]:
    """Markdown rows: CNN and threshold side by side."""
    rows = ["| | CNN | threshold |", "| --- | --- | --- |"]
    for c in classes:
        rows.append(f"| IoU {c} | {model[f'iou_{c}']:.3f} | {base[f'iou_{c}']:.3f} |")
    for key, what in (
        ("cloud_iou", "any-cloud IoU"),
        ("cloud_precision", "any-cloud precision"),
        ("cloud_recall", "any-cloud recall"),
        ("miou", "mean IoU"),
    ):
        rows.append(f"| {what} | {model[key]:.3f} | {base[key]:.3f} |")
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[123, 1, 2])
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--set", dest="sets", nargs="*", default=[], help="KEY=VALUE overrides")
    p.add_argument("--split", nargs="+", default=["val"], choices=["train", "val", "test", "wide"])
    p.add_argument("--checkpoint", type=Path, default=None)
    p.add_argument("--wide-scenes", type=int, default=6)
    p.add_argument("--wide-size", type=int, nargs=2, default=[192, 256])
    p.add_argument("--wide-seed", type=int, default=2027)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    torch.set_grad_enabled(False)
    results: list[dict[str, Any]] = []
    base_cache: dict[str, dict[str, float]] = {}
    runs = [None] if args.checkpoint else args.seeds
    for seed in runs:
        with tempfile.TemporaryDirectory() as tmp:
            if args.checkpoint is None:
                assert seed is not None
                ckpt, wall = train(seed, args.epochs, args.sets, Path(tmp))
            else:
                ckpt, wall = args.checkpoint, float("nan")
            task = load_segmenter(ckpt)
        classes = list(task.classes)
        for split in args.split:
            srcs = split_sources(split, task, args)
            model = scores(model_confusion(task, srcs), classes)
            if split not in base_cache:
                base_cache[split] = scores(baseline_confusion(srcs), classes)
            base = base_cache[split]
            print(f"\n### split {split} ({len(srcs)} scenes), seed {seed}, train wall {wall:.0f} s")
            print("\n".join(table(model, base, classes)), flush=True)
            results.append(
                {"seed": seed, "split": split, "wall_s": wall, "model": model, "baseline": base}
            )
    print("\n### summary (mean over seeds)")
    print(
        "| split | seeds | CNN mean IoU | CNN any-cloud IoU | threshold any-cloud IoU | classes CNN > threshold | train wall s |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for split in args.split:
        rs = [r for r in results if r["split"] == split]
        miou = np.mean([r["model"]["miou"] for r in rs])
        anyc = np.mean([r["model"]["cloud_iou"] for r in rs])
        wins = min(
            sum(r["model"][f"iou_{c}"] > r["baseline"][f"iou_{c}"] for c in classes) for r in rs
        )
        wall = np.mean([r["wall_s"] for r in rs])
        print(
            f"| {split} | {len(rs)} | {miou:.3f} | {anyc:.3f} | {rs[0]['baseline']['cloud_iou']:.3f} "
            f"| {wins}/{len(classes)} (worst seed) | {wall:.0f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
