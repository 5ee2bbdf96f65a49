"""How far can a bounded nudge of the predictors move the sample emulators? And what does it cost?

    python bench/sensitivity_sample.py [--epochs 12] [--days 64] [--device cpu]
                                       [--checkpoint T.ckpt --checkpoint P.ckpt] [--keep DIR]

Models: the sample config's Doury UNet (``climdl train --config sample``), one for ``tasmax`` and one
for ``pr``, trained on the embedded sample for ``--epochs`` epochs (12 is the config's budget), unless
checkpoints are given. Predictors: the held-out historical test year, perfect (upscaled RCM)
predictors of the catalog entry ``sample-alps``. Bounds: climdl's defaults
(``t=0.5 K, q=5 %, z=20 m2 s-2, u=v=0.5 m s-1``).

Printed, from one ``climdl.sensitivity.run_emulator_sensitivity`` run per model:
* per target and attack (FGSM / PGD on the domain mean, PGD on the RMS pattern, random corners of
  the same box: mean and worst of the draws), the median and maximum over days of the domain-mean
  change, the largest grid-point change, the RMS change (and the wet-fraction change for pr);
* the ratio adversarial / random of the median domain-mean change;
* cost, measured side by side on the same days: seconds per analysed day against one plain
  forward pass per day (``EmulatorSet.predict`` on the same predictors), and the peak RSS.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _memory import peak_rss_bytes

REPO = Path(__file__).resolve().parents[1]


def train(target: str, epochs: int, folder: Path) -> Path:
    """A sample emulator for ``target`` trained by ``climdl train``: its best checkpoint.

    Each target trains in its own folder (the config's logger writes ``runs/`` under the working
    directory); a folder kept from an earlier run (``--keep``) is reused.
    """
    root = folder / f"run-{target}"
    found = sorted(root.rglob("best-*.ckpt"))
    if found:
        print(f"reusing {found[-1]}")
        return found[-1]
    root.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "climdl.cli", "train", "--config", "sample",
        "--trainer.max_epochs", str(epochs), "--trainer.enable_progress_bar", "false",
        "--data.targets", f"[{target}]", "--quiet",
    ]  # fmt: skip
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=root, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    best = sorted(root.rglob("best-*.ckpt"))[-1]
    print(f"trained {target}: {epochs} epochs in {time.perf_counter() - t0:.0f} s -> {best}")
    return best


def forward_seconds(ckpt: Path, days: int, device: str) -> float:
    """Seconds for one plain forward pass over the same sampled days (batches of 8)."""
    import torch

    from climdl.inference.job import Job, JobConfig
    from climdl.sensitivity.emulator import sample_days

    job = Job(
        JobConfig(
            checkpoints=(str(ckpt),), catalog="sample-alps", period="historical",
            kind="perfect", device=device, batch_size=8,
        )
    )  # fmt: skip
    try:
        idx = sample_days(job.n_days, days)
        t0 = time.perf_counter()
        x_np, times = job.read_days(idx)
        x, aux = job.model_inputs(x_np, times)
        for a in range(0, x.shape[0], 8):
            job.emulators.predict(x[a : a + 8], {k: v[a : a + 8] for k, v in aux.items()})
        if torch.cuda.is_available() and job.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0
    finally:
        job.ds.close()


def main() -> None:
    """Train (or take) the two sample emulators, attack them, print the tables."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--days", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--checkpoint", action="append", type=Path, default=None)
    p.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: temp)")
    args = p.parse_args()
    import torch

    from climdl.sensitivity import run_emulator_sensitivity

    work = args.keep or Path(tempfile.mkdtemp(prefix="climdl-bench-sens-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"machine: {os.cpu_count()} cores, torch {torch.__version__}, device {args.device}")
    ckpts = args.checkpoint or [train(t, args.epochs, work) for t in ("tasmax", "pr")]
    for k, ckpt in enumerate(ckpts):
        out = work / f"sensitivity-{k}"
        t0 = time.perf_counter()
        res = run_emulator_sensitivity(
            ckpt, catalog="sample-alps", period="historical", kind="perfect", days=args.days,
            device=args.device, out_dir=out, overwrite=True,
        )  # fmt: skip
        seconds = time.perf_counter() - t0
        plain = forward_seconds(ckpt, args.days, args.device)
        print(f"\n== {ckpt}  ({res.n_days} days, bounds {res.bounds})")
        with open(res.summary_path) as f:
            rows = list(csv.DictReader(f))
        cols = list(rows[0])
        print(" | ".join(cols))
        for row in rows:
            print(" | ".join(row[c] for c in cols))
        by = {(r["target"], r["attack"]): r for r in rows}
        for target in dict.fromkeys(r["target"] for r in rows):
            rnd = float(by[(target, "random")]["median_abs_mean_change"])
            for attack in ("fgsm", "pgd"):
                adv = float(by[(target, attack)]["median_abs_mean_change"])
                ratio = f"{adv / rnd:.1f}x" if rnd > 0 else "inf"
                print(f"{target}: median |domain-mean change| {attack} / random = {ratio}")
        print(
            f"cost: {seconds / res.n_days:.3f} s per day vs {plain / res.n_days:.4f} s per day for "
            f"one plain forward ({seconds / plain:.0f}x); peak RSS {peak_rss_bytes() / 2**20:.0f} MiB"
        )
        print(f"files: {res.path}, {res.summary_path}")


if __name__ == "__main__":
    main()
