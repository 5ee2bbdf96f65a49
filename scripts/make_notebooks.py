"""Write the notebooks in notebooks/ from the cell sources below (outputs stripped).

The notebooks are the product; this script keeps their sources reviewable as plain Python and
regenerates them identically: ``python scripts/make_notebooks.py``.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1] / "notebooks"

SETUP = '''\
import os
from pathlib import Path

import matplotlib
matplotlib.use("Agg")  # runs headless in CI; figures still show inline in Jupyter
%matplotlib inline

REPO = Path.cwd().parent if Path.cwd().name == "notebooks" else Path.cwd()
WORK = Path(os.environ.get("CLIMDL_NOTEBOOK_WORK", REPO / "notebooks" / "_work")).resolve()
WORK.mkdir(parents=True, exist_ok=True)
os.environ["CLIMDL_CACHE"] = str(WORK / "cache")  # the sample is generated here on first use
print("working folder:", WORK)'''


def quickstart() -> list:
    return [
        new_markdown_cell(
            "# 01 Quickstart: sample → emulator → downscale → maps\n\n"
            "The whole main job of climdl on the embedded sample, on a CPU in a few minutes:\n\n"
            "1. the sample dataset in the CORDEX ML-Bench layout (ALPS, Lambert 12.5 km grid);\n"
            "2. a small Doury UNet trained on it with `climdl train`;\n"
            "3. the held-out year downscaled from perfect (upscaled RCM) and imperfect (GCM) "
            "predictors with `climdl downscale`;\n"
            "4. maps of coarse input, RCM truth, emulator and bias on the native grid.\n\n"
            "The sample is synthetic: plausible physics, no claim about skill on real data."),
        new_code_cell(SETUP),
        new_markdown_cell("## 1. The sample\n\n`climdl catalog show sample-alps` describes it; "
                          "opening an entry generates it on first use and returns a lazy dataset."),
        new_code_cell(
            "from climdl.catalog import get_entry\n\n"
            "entry = get_entry(\"sample-alps\")\n"
            "x = entry.open(\"predictors\", experiment=\"Emulator_hist_future\")\n"
            "y = entry.open(\"target\", experiment=\"Emulator_hist_future\")\n"
            "print(entry.describe())\n"
            "x"),
        new_markdown_cell("## 2. Train a small emulator\n\n"
                          "The same command as on the terminal, narrowed for a notebook's minutes. "
                          "Every key of `configs/emulator/sample.yaml` can be overridden."),
        new_code_cell(
            "from climdl.cli import main\n\n"
            "rc = main([\"train\", \"--config\", str(REPO / \"configs/emulator/sample.yaml\"),\n"
            "           \"--trainer.max_epochs\", \"2\", \"--trainer.default_root_dir\", str(WORK / \"run\"),\n"
            "           \"--trainer.logger\", \"false\", \"--trainer.enable_progress_bar\", \"false\",\n"
            "           \"--model.init_args.base_filters\", \"8\", \"--model.init_args.max_filters\", \"64\",\n"
            "           \"--model.init_args.extra_filters\", \"8\", \"--data.init_args.batch_size\", \"32\"])\n"
            "assert rc == 0\n"
            "ckpt = sorted((WORK / \"run\").rglob(\"best-*.ckpt\"))[-1]\n"
            "ckpt"),
        new_markdown_cell("## 3. Downscale the held-out year\n\n"
                          "`climdl.inference.downscale` is `climdl downscale` as a function: it "
                          "returns the predictions as an `xr.Dataset` (lazily reopened from the "
                          "CF NetCDF file it wrote)."),
        new_code_cell(
            "from climdl.inference import downscale\n\n"
            "runs = {}\n"
            "for kind in (\"perfect\", \"imperfect\"):\n"
            "    res = downscale(ckpt, catalog=\"sample-alps\", period=\"historical\", kind=kind,\n"
            "                    output=WORK / f\"tasmax_{kind}.nc\", overwrite=True)\n"
            "    runs[kind] = res.dataset\n"
            "    print(f\"{kind}: {res.n_days} days in {res.seconds:.1f} s ({res.years_per_second * 60:.1f} \"\n"
            "          f\"simulated years/min), {res.grid}\")\n"
            "runs[\"perfect\"]"),
        new_markdown_cell("## 4. Maps: input, truth, emulator, bias\n\n"
                          "The truth of the test year ships with the sample (the benchmark withholds "
                          "it). Maps are drawn on the native Lambert grid with coastlines shipped "
                          "in the package (nothing is downloaded)."),
        new_code_cell(
            "import xarray as xr\n\n"
            "from climdl.plot import panel_figure\n\n"
            "truth = entry.open(\"target\", period=\"historical\", variables=[\"tasmax\"])\n"
            "truth = truth.assign_coords(time=truth.time.dt.floor(\"D\"))\n"
            "pred = runs[\"perfect\"].assign_coords(time=runs[\"perfect\"].time.dt.floor(\"D\"))\n"
            "coarse = entry.open(\"predictors\", period=\"historical\", kind=\"perfect\", variables=[\"t_850\"])\n"
            "day = pred.time.values[200]\n"
            "t, p = truth.tasmax.sel(time=day).load(), pred.tasmax.sel(time=day).load()\n"
            "p = p.assign_coords(Lambert_Conformal=pred.Lambert_Conformal)\n"
            "bias = (p - t.values).assign_attrs(long_name=\"emulator - RCM\", units=\"K\")\n"
            "fig = panel_figure([(\"coarse T850 (input)\", coarse.t_850.sel(time=day, method=\"nearest\")),\n"
            "                    (\"RCM truth\", t), (\"emulator\", p), (\"bias\", bias)],\n"
            "                   ncols=4, suptitle=f\"tasmax on {day}\")\n"
            "fig"),
        new_markdown_cell("## 5. A first score\n\nRMSE over the year, perfect and imperfect "
                          "predictors (`climdl evaluate` gives the full ML-Bench diagnostics)."),
        new_code_cell(
            "import numpy as np\n\n"
            "for kind, ds in runs.items():\n"
            "    d = ds.assign_coords(time=ds.time.dt.floor(\"D\"))\n"
            "    tr = entry.open(\"target\", period=\"historical\", variables=[\"tasmax\"])\n"
            "    tr = tr.assign_coords(time=tr.time.dt.floor(\"D\"))\n"
            "    a, b = xr.align(d.tasmax, tr.tasmax, join=\"inner\", exclude=[\"x\", \"y\"])\n"
            "    rmse = float(np.sqrt(((a.values - b.values) ** 2).mean()))\n"
            "    print(f\"{kind:>9}: RMSE {rmse:.2f} K over {a.sizes['time']} days\")"),
    ]


def evaluation() -> list:
    return [
        new_markdown_cell(
            "# 02 Evaluation: indices, spectra and the report\n\n"
            "How `climdl evaluate` judges a downscaled field against the RCM, on the sample's held-out "
            "year. To show what each diagnostic sees without training anything here, two stand-in "
            "\"emulators\" are built from the truth itself:\n\n"
            "* **smooth**: the truth averaged over 9 x 9 cells (right on average, too little small-scale "
            "detail: what a regression emulator tends to do);\n"
            "* **warm**: the truth + 1 K + day-to-day noise (right detail, biased and noisy).\n\n"
            "Notebook 01 shows the same with a trained UNet's output."),
        new_code_cell(SETUP),
        new_code_cell(
            "import numpy as np\n"
            "import xarray as xr\n\n"
            "from climdl.catalog import get_entry\n\n"
            "entry = get_entry(\"sample-alps\")\n"
            "truth_file = [f for f in entry.files(\"target\", period=\"historical\") if \"CNRM-CM5\" in f.name][0]\n"
            "truth = xr.open_dataset(truth_file, decode_coords=\"all\").load()\n"
            "rng = np.random.default_rng(0)\n"
            "smooth = truth.copy()\n"
            "smooth[\"tasmax\"] = truth.tasmax.rolling(x=9, y=9, center=True, min_periods=1).mean()\n"
            "warm = truth.copy()\n"
            "warm[\"tasmax\"] = truth.tasmax + 1.0 + rng.normal(0, 0.5, truth.tasmax.shape).astype(\"float32\")\n"
            "for name, ds in {\"smooth\": smooth, \"warm\": warm}.items():\n"
            "    ds[[\"tasmax\", \"pr\"]].to_netcdf(WORK / f\"{name}.nc\")\n"
            "truth.tasmax"),
        new_markdown_cell(
            "## Indices\n\n"
            "Indices summarise one simulation at each grid point. Thresholds carry units and are "
            "converted to the data's own (the benchmark's code has a bare 300 where its docstring "
            "says 25 degC)."),
        new_code_cell(
            "from climdl.evaluation import cdd, quantile, summer_days, txx\n\n"
            "su = summer_days(truth.tasmax, threshold=\"25 degC\")\n"
            "print(\"summer days, domain mean:\", float(su.mean()))\n"
            "print(\"TXx, domain mean (K):\", float(txx(truth.tasmax).mean()))\n"
            "print(\"P99 of tasmax in JJA, domain mean (K):\", float(quantile(truth.tasmax, 0.99, season=\"JJA\").mean()))\n"
            "print(\"CDD, domain mean (days):\", float(cdd(truth.pr, dry_threshold=\"1 mm/day\").mean()))"),
        new_code_cell(
            "from climdl.plot import panel_figure\n\n"
            "gm = truth.tasmax.coords.get(\"Lambert_Conformal\")\n"
            "maps = [(\"summer days (truth)\", su), (\"summer days: warm - truth\",\n"
            "        summer_days(warm.tasmax) - su)]\n"
            "maps = [(t, m.assign_coords(Lambert_Conformal=gm) if gm is not None else m) for t, m in maps]\n"
            "panel_figure(maps, kinds=[\"sequential\", \"diverging\"], ncols=2)"),
        new_markdown_cell(
            "## Spectra\n\n"
            "The radially averaged power spectral density shows how much variance each spatial "
            "scale carries. The smoothed field loses power at wavelengths below ~9 cells (110 km); "
            "RALSD (Harris et al. 2022) sums that loss into one number in dB, 0 for identical spectra."),
        new_code_cell(
            "from climdl.evaluation import psd, ralsd\n"
            "from climdl.plot import plot_psd\n\n"
            "spectra = {name: psd(ds.tasmax) for name, ds in {\"truth\": truth, \"smooth\": smooth, \"warm\": warm}.items()}\n"
            "for name in (\"smooth\", \"warm\"):\n"
            "    print(f\"RALSD {name}: {ralsd(spectra['truth'], spectra[name]):.2f} dB\")\n"
            "ax = plot_psd({k: (v.wavenumber.values, v.values) for k, v in spectra.items()}, units=\"K\")\n"
            "ax.figure"),
        new_markdown_cell(
            "## Everything at once: `climdl evaluate`\n\n"
            "The command computes every index and diagnostic for the emulator and each baseline, "
            "reduces each to one number (best marked), and writes CF NetCDF maps, JSON/CSV/Markdown "
            "tables and a self-contained HTML report."),
        new_code_cell(
            "from climdl.cli import main\n\n"
            "rc = main([\"evaluate\", \"--truth\", str(truth_file), \"--pred\", str(WORK / \"smooth.nc\"),\n"
            "           \"--name\", \"smooth\", \"--baseline\", f\"warm={WORK / 'warm.nc'}\",\n"
            "           \"--variables\", \"tasmax\", \"--out\", str(WORK / \"evaluation\"), \"--overwrite\", \"-q\"])\n"
            "assert rc == 0\n"
            "print((WORK / \"evaluation\" / \"summary.md\").read_text()[:3000])"),
        new_markdown_cell(
            "Read the columns against each other: the warm field's offset shows in every mean-based "
            "number and in the summer days, while the smoothed field's loss of detail shows in RALSD "
            "and the per-point distributions rather than in RMSE. No single number tells the whole "
            "story, which is why the benchmark reports them all. The report's figures:"),
        new_code_cell(
            "from IPython.display import Image, display\n\n"
            "figures = sorted((WORK / \"evaluation\" / \"figures\").glob(\"*.png\"))\n"
            "print(\"\\n\".join(f.name for f in figures))\n"
            "for f in figures[:3]:\n"
            "    display(Image(filename=str(f)))"),
    ]


def scaling_out() -> list:
    return [
        new_markdown_cell(
            "# 04 Scaling out: strategies, nodes, restarts, inference at scale\n\n"
            "The commands here are shown, not run (they need several processes, GPUs or a cluster); "
            "each is exercised on CPU with gloo by the test suite (`pytest -m distributed`). The cells "
            "that do run only read the presets and this process's launch environment."),
        new_code_cell(SETUP),
        new_markdown_cell(
            "## Strategy presets\n\n"
            "A preset from `configs/strategy/` is stacked after any training config: the model, data "
            "and optimiser stay the same, only the `trainer:` part changes."),
        new_code_cell(
            "for path in sorted((REPO / \"configs\" / \"strategy\").glob(\"*.yaml\")):\n"
            "    first = next(line for line in path.read_text().splitlines() if line.startswith(\"#\"))\n"
            "    print(f\"{path.name:<18} {first.lstrip('# ')}\")"),
        new_code_cell("print((REPO / \"configs\" / \"strategy\" / \"fsdp.yaml\").read_text())"),
        new_markdown_cell(
            "```bash\n"
            "# data parallel on 2 processes (CPU: gloo; GPUs: add --trainer.accelerator gpu --trainer.devices 4)\n"
            "climdl train --config configs/emulator/sample.yaml --config configs/strategy/ddp.yaml\n"
            "# FSDP2, sharded checkpoints that resume on another number of processes\n"
            "climdl train --config configs/emulator/sample.yaml --config configs/strategy/fsdp.yaml\n"
            "climdl consolidate runs/sample-alps/.../last.ckpt     # one file for climdl downscale\n"
            "# tensor parallel on the dense layers; pipeline parallel over UNet stages\n"
            "climdl train --config configs/emulator/sample.yaml --config configs/strategy/tensor.yaml\n"
            "climdl train --config configs/emulator/sample.yaml --config configs/strategy/pipeline.yaml \\\n"
            "    --trainer.strategy.init_args.schedule 1f1b --trainer.strategy.init_args.n_microbatches 4\n"
            "```"),
        new_markdown_cell(
            "## Several nodes, restarts\n\n"
            "```bash\n"
            "# on every node; HOST = the first node\n"
            "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 torchrun --nnodes 2 --nproc-per-node 4 \\\n"
            "  --rdzv-backend c10d --rdzv-endpoint HOST:29500 --rdzv-id climdl --max-restarts 3 \\\n"
            "  -m climdl.cli train --config configs/emulator/sample.yaml --config configs/strategy/ddp.yaml \\\n"
            "  --config configs/strategy/multinode.yaml --config configs/strategy/restartable.yaml \\\n"
            "  --trainer.devices 4 --ckpt_path last\n"
            "# SLURM, with automatic requeue before the time limit\n"
            "sbatch scripts/slurm/train.sbatch\n"
            "```\n\n"
            "`climdl launch-info` shows how a process sees its launch (rank, node, rendezvous):"),
        new_code_cell(
            "import subprocess, sys\n\n"
            "print(subprocess.run([sys.executable, \"-m\", \"climdl.cli\", \"launch-info\"], capture_output=True,\n"
            "                     text=True).stdout)"),
        new_markdown_cell(
            "## Inference at scale\n\n"
            "```bash\n"
            "# ranks split the chunks of time; rank 0 joins them into one file\n"
            "torchrun --nproc-per-node 4 -m climdl.cli downscale -c best.ckpt -i gcm/*.nc -o out.nc --device cuda\n"
            "# Dask: local worker processes, or an existing cluster (dask-jobqueue on SLURM)\n"
            "climdl downscale -c best.ckpt -i gcm/*.nc -o out.nc --workers 8\n"
            "climdl downscale -c best.ckpt -i gcm/*.nc -o out.nc --dask-scheduler tcp://HOST:8786\n"
            "```\n\n"
            "Every variant writes the same file as one process, and `--resume` continues any of them "
            "from the chunks already finished."),
    ]


def main() -> None:
    ROOT.mkdir(exist_ok=True)
    notebooks = {"01_quickstart": quickstart(), "02_evaluation": evaluation(),
                 "04_scaling_out": scaling_out()}
    for name, cells in notebooks.items():
        nb = new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                                "language": "python"}})
        nbformat.write(nb, ROOT / f"{name}.ipynb")
        print(ROOT / f"{name}.ipynb")


if __name__ == "__main__":
    main()
