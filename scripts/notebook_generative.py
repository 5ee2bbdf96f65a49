"""The cells of notebooks/05_generative.ipynb (written by scripts/make_notebooks.py)."""

from __future__ import annotations

from nbformat.v4 import new_code_cell, new_markdown_cell

_CELLS = [
    new_markdown_cell("""# 05 Generative ensembles: a flow-matching residual on top of the UNet

A deterministic UNet predicts the conditional mean: for precipitation that mean is too smooth, its extremes too weak and its small scales missing. climdl's generative emulator keeps the UNet as **stage 1** and adds a **stage 2** that learns the distribution of what the UNet misses (the residual, target minus UNet mean), conditioned on the coarse predictors, the UNet mean and the orography. Stage 2 is trained by conditional flow matching and sampled with Heun's ODE solver: each member is a plausible high-resolution day.

On the embedded sample, on a CPU in a few minutes (both stages are narrowed for a notebook; `configs/emulator/sample_generative.yaml` is the real budget):

1. train a pr UNet (stage 1) and the residual model on top of it (stage 2) with `climdl train`;
2. downscale a held-out month as a 4-member ensemble with `climdl downscale --members`;
3. look at the members beside the truth and the UNet mean;
4. score the ensemble with `climdl evaluate`: fair CRPS, spread-skill ratio, rank histogram.

The sample is synthetic: plausible physics, no claim about skill on real data."""),
    new_markdown_cell("""## 1. Two stages, two `climdl train` runs

Stage 1 is the sample config's Doury UNet with `pr` as its target. Stage 2 names it by path (`--model.init_args.mean_checkpoint`); the data must be stage 1's (same targets, predictors and grids, or one clear error). Stage 1 is frozen inside stage 2, and stage 2's checkpoint carries both, so downscaling needs nothing else."""),
    new_code_cell("""from climdl.cli import main

quiet = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false", "--quiet"]
short = ["--trainer.max_epochs", "3", "--trainer.limit_train_batches", "12",
         "--trainer.limit_val_batches", "2", "--data.test_period", "null"]  # a notebook's minutes
rc = main(
    [
        "train", "--config", str(REPO / "configs/emulator/sample.yaml"),
        "--data.targets", "[pr]",
        *short, "--trainer.default_root_dir", str(WORK / "stage1"),
        "--model.init_args.base_filters", "8", "--model.init_args.max_filters", "64",
        "--model.init_args.extra_filters", "8",
        *quiet,
    ]
)  # fmt: skip
assert rc == 0
stage1 = sorted((WORK / "stage1").rglob("last.ckpt"))[-1]
rc = main(
    [
        "train", "--config", str(REPO / "configs/emulator/sample_generative.yaml"),
        "--model.init_args.mean_checkpoint", str(stage1),
        *short, "--trainer.default_root_dir", str(WORK / "stage2"),
        "--model.init_args.base_filters", "8", "--model.init_args.max_filters", "32",
        *quiet,
    ]
)  # fmt: skip
assert rc == 0
stage2 = sorted((WORK / "stage2").rglob("last.ckpt"))[-1]
stage1, stage2"""),
    new_markdown_cell("""## 2. Downscale as an ensemble

`climdl downscale --members N --seed S` writes every variable with a `member` dimension (an integer coordinate with the CF standard name `realization`). Member *k* of a day depends only on the seed, the date and *k*: the same whatever the chunking, the batch size or the number of ranks or Dask workers, and a killed run resumes with `--resume` like a deterministic one. The UNet mean alone is stage 1's checkpoint, downscaled as before."""),
    new_code_cell("""from climdl.inference import downscale

common = dict(catalog="sample-alps", period="historical", kind="perfect", end="1981-01-31",
              overwrite=True)  # fmt: skip
mean = downscale(stage1, output=WORK / "pr_unet.nc", **common).dataset
ens = downscale(stage2, output=WORK / "pr_ensemble.nc", members=4, seed=0, sampler_steps=3, **common)
print(f"{ens.n_days} days x 4 members in {ens.seconds:.1f} s")
ens.dataset.pr"""),
    new_markdown_cell("""## 3. Members beside the truth and the UNet mean

On a wet day the UNet's mean field is smooth; each member adds small-scale structure and intensity of its own, and the members differ where the predictors leave the answer open."""),
    new_code_cell("""import xarray as xr

from climdl.data.catalog import get_entry
from climdl.plot import panel_figure

entry = get_entry("sample-alps")
truth_file = next(f for f in entry.files("target", period="historical") if "CNRM-CM5" in f.name)
time_coder = xr.coders.CFDatetimeCoder(use_cftime=True)  # as climdl writes its outputs
truth = xr.open_dataset(truth_file, decode_coords="all", decode_times=time_coder)
members = ens.dataset.pr
wettest = int(truth.pr.sel(time=members.time).mean(("y", "x")).argmax())
day = members.time.values[wettest]
gm = truth.pr.coords.get("Lambert_Conformal")

def on_grid(da):
    return da.assign_coords(Lambert_Conformal=gm) if gm is not None else da

panels = [("RCM truth", on_grid(truth.pr.sel(time=day))), ("UNet mean", on_grid(mean.pr.sel(time=day)))]
panels += [(f"member {k}", on_grid(members.sel(time=day, member=k))) for k in range(3)]
panel_figure(panels, kinds=["sequential"] * len(panels), ncols=3)"""),
    new_markdown_cell("""## 4. Score the ensemble: `climdl evaluate`

With a `member` dimension the evaluation computes every diagnostic for each member (reported as the member mean ± std), evaluates the ensemble mean as a model of its own, and adds the probabilistic scores: the fair CRPS (for a deterministic prediction beside it, its MAE: the number to beat), the spread-skill ratio (1 is calibrated, below 1 too little spread) and the rank histogram (flat is calibrated, U-shaped too little spread). These few training minutes are far from the real budget: read the numbers for what they show, not as the model's skill."""),
    new_code_cell("""import json

rc = main(
    [
        "evaluate", "--truth", str(truth_file), "--pred", str(WORK / "pr_ensemble.nc"),
        "--name", "generative", "--baseline", f"unet={WORK / 'pr_unet.nc'}",
        "--variables", "pr", "--seasons", "DJF", "--out", str(WORK / "evaluation"), "--overwrite", "-q",
    ]
)  # fmt: skip
assert rc == 0
summary = json.loads((WORK / "evaluation" / "summary.json").read_text())["summary"]["pr"]
for key in ("crps", "ssr", "rank_outer", "ralsd", "wasserstein_wet", "bias_p99"):
    row = summary[key]
    print(f"{row['label']:45s}", {m: round(v, 3) for m, v in row["values"].items() if v is not None})"""),
    new_code_cell("""from IPython.display import Image, display

figures = sorted((WORK / "evaluation" / "figures").glob("*ensemble*.png")) or sorted(
    (WORK / "evaluation" / "figures").glob("*.png")
)
print("\\n".join(f.name for f in figures))
for f in figures[:2]:
    display(Image(filename=str(f)))"""),
]


def generative(setup: str) -> list:
    """Two stages trained in a notebook's minutes, an ensemble downscaled, its members and scores."""
    return [_CELLS[0], new_code_cell(setup), *_CELLS[1:]]
