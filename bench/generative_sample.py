"""Does the generative stage beat the deterministic UNet on the sample? And what does sampling cost?

    python bench/generative_sample.py [--targets pr tasmax] [--mean-epochs 12] [--members 10]
                                      [--steps K] [--start DAY --end DAY] [--keep DIR]
                                      [--device cpu] [--memory-only]

Models, trained on the embedded sample by ``climdl train`` (reused from ``--keep DIR``):
* stage 1: the sample config's Doury UNet (``--config sample --data.targets [T]``, ``--mean-epochs``);
* stage 2: the flow-matching residual model on top of it (``--config sample_generative``, its own
  budget), taking the stage-1 checkpoint by path.

Held-out test: the historical year of ``sample-alps`` (perfect predictors, training GCM; or its
days ``--start`` to ``--end``), downscaled by stage 1 alone (deterministic) and by stage 2 with
``--members`` members, both scored by ``climdl evaluate`` against the RCM truth. Printed per target, deterministic against ensemble (the
ensemble's per-member scores as member mean ± std, and its ensemble mean): RALSD, |P99 bias|,
|Rx1day bias| (pr), std ratio, Wasserstein distance of all values and of the wet-day intensities
(pr), RMSE, the fair CRPS (for the deterministic model: its MAE), spread-skill ratio and the rank
histogram's outer-bin ratio and reliability index.

Cost, measured side by side in this run: seconds per simulated year of the deterministic downscale
and of the ensemble per member (both end to end, I/O included) and their ratio; peak RSS of the
downscale process with 1, 4 and 10 members on the same 91 days, and with 10 members on 182 days
(memory must be flat in both; one sampler step, as memory does not depend on it).
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

from _memory import peak_rss_bytes

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}


def _climdl(args: list[str], cwd: Path) -> None:
    cmd = [sys.executable, "-m", "climdl.cli", *args]
    subprocess.run(cmd, check=True, cwd=cwd, env=ENV)


def train(name: str, args: list[str], folder: Path) -> Path:
    """Best checkpoint of ``climdl train <args>`` run in ``folder/run-<name>`` (reused if there)."""
    root = folder / f"run-{name}"
    found = sorted(root.rglob("best-*.ckpt"))
    if found:
        print(f"reusing {found[-1]}")
        return found[-1]
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    _climdl(["train", *args, "--trainer.enable_progress_bar", "false", "--quiet"], root)
    best = sorted(root.rglob("best-*.ckpt"))[-1]
    print(f"trained {name} in {time.perf_counter() - t0:.0f} s -> {best}")
    return best


def downscale_child(spec: dict[str, Any]) -> None:
    """In a fresh process: one downscale; prints its seconds and this process's peak RSS."""
    from climdl.inference import downscale

    t0 = time.perf_counter()
    res = downscale(**spec)
    seconds = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, "n_days": res.n_days, "rss": peak_rss_bytes()}))


def run_downscale(spec: dict[str, Any]) -> dict[str, float]:
    """:func:`downscale_child` in a subprocess (its own peak memory): its JSON line."""
    cmd = [sys.executable, __file__, "--child", json.dumps(spec, default=str)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=ENV).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def truth_file() -> Path:
    """The RCM's held-out historical year of the training GCM (the catalog's sample)."""
    from climdl.data.catalog import get_entry

    entry = get_entry("sample-alps")
    return next(f for f in entry.files("target", period="historical") if "CNRM-CM5" in f.name)


def main() -> None:
    """Train (or reuse) both stages per target, downscale, evaluate, print the comparison."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--targets", nargs="+", default=["pr", "tasmax"])
    p.add_argument("--mean-epochs", type=int, default=12)
    p.add_argument("--gen-epochs", type=int, default=None, help="default: the config's")
    p.add_argument("--members", type=int, default=10)
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: the model's)")
    p.add_argument("--start", default=None, help="first held-out day scored (default: all)")
    p.add_argument("--end", default=None, help="last held-out day scored (default: all)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: temp)")
    p.add_argument(
        "--memory-only", action="store_true", help="only the peak-memory runs (models in --keep)"
    )
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child is not None:
        downscale_child(json.loads(args.child))
        return
    import torch

    work = (args.keep or Path(tempfile.mkdtemp(prefix="climdl-bench-gen-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    print(f"machine: {os.cpu_count()} cores, torch {torch.__version__}, device {args.device}")
    common = {"catalog": "sample-alps", "period": "historical", "kind": "perfect",
              "device": args.device, "overwrite": True}  # fmt: skip
    scored = {**common, "start": args.start, "end": args.end}
    truth = truth_file()
    for target in [] if args.memory_only else args.targets:
        mean = train(
            f"{target}-mean",
            ["--config", "sample", "--trainer.max_epochs", str(args.mean_epochs),
             "--data.targets", f"[{target}]"],
            work,
        )  # fmt: skip
        gen_args = ["--config", "sample_generative", "--data.targets", f"[{target}]",
                    "--model.init_args.mean_checkpoint", str(mean)]  # fmt: skip
        if args.gen_epochs is not None:
            gen_args += ["--trainer.max_epochs", str(args.gen_epochs)]
        gen = train(f"{target}-generative", gen_args, work)
        det_nc, ens_nc = work / f"{target}_det.nc", work / f"{target}_ens.nc"
        det = run_downscale({"checkpoints": str(mean), "output": str(det_nc), **scored})
        ens = run_downscale(
            {"checkpoints": str(gen), "output": str(ens_nc), "members": args.members,
             "seed": 0, "sampler_steps": args.steps, **scored}
        )  # fmt: skip
        years = det["n_days"] / 365.25
        per_det = det["seconds"] / years
        per_member = ens["seconds"] / years / args.members
        print(f"\n== {target}: {det['n_days']} held-out days, {args.members} members")
        print(
            f"cost: deterministic {per_det:.2f} s per simulated year; ensemble "
            f"{per_member:.2f} s per simulated year per member ({per_member / per_det:.1f}x); "
            f"peak RSS {det['rss'] / 2**20:.0f} vs {ens['rss'] / 2**20:.0f} MiB"
        )
        out = work / f"eval-{target}"
        _climdl(
            ["evaluate", "--truth", str(truth), "--pred", str(ens_nc), "--name", "generative",
             "--baseline", f"unet={det_nc}", "--variables", target, "--out", str(out),
             "--overwrite", "--no-report", "--quiet"],
            work,
        )  # fmt: skip
        summary = json.loads((out / "summary.json").read_text())["summary"][target]
        keys = ["ralsd", "bias_p99", "bias_rx1day", "std_ratio", "wasserstein", "wasserstein_wet",
                "rmse", "crps", "ssr", "rank_outer", "rank_reliability"]  # fmt: skip
        print("diagnostic | " + " | ".join(summary[next(iter(summary))]["values"]))
        for key in keys:
            row = summary.get(key)
            if row is None:
                continue
            spread = row.get("spread") or {}
            cells = []
            for model, value in row["values"].items():
                s = spread.get(model)
                cells.append(
                    "-" if value is None else f"{value:.4g}" + (f" ± {s:.2g}" if s else "")
                )
            print(f"{row['label']} [{row['units']}] | " + " | ".join(cells))
    print(
        "\n== peak memory of the ensemble downscale (1 sampler step: memory does not depend on it)"
    )
    target = args.targets[0]
    gen = sorted((work / f"run-{target}-generative").rglob("best-*.ckpt"))[-1]
    for n, end in ((1, "1981-04-01"), (4, "1981-04-01"), (10, "1981-04-01"), (10, "1981-07-01")):
        r = run_downscale(
            {"checkpoints": str(gen), "output": str(work / f"mem_{n}_{end}.nc"), "members": n,
             "sampler_steps": 1, "end": end, **common}
        )  # fmt: skip
        print(f"{n:2d} members, {r['n_days']} days: peak RSS {r['rss'] / 2**20:.0f} MiB, "
              f"{r['seconds']:.1f} s")  # fmt: skip


if __name__ == "__main__":
    main()
