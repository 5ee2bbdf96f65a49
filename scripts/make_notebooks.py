"""Write the notebooks in notebooks/ from the cell sources below (outputs stripped).

The notebooks are the product; this script keeps their sources reviewable as plain Python and
regenerates them identically: ``python scripts/make_notebooks.py`` (then ``ruff check --fix`` and
``ruff format`` give the cells the code base's layout, so ``make lint`` covers them).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook
from notebook_generative import generative

ROOT = Path(__file__).resolve().parents[1] / "notebooks"

SETUP = """\
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # runs headless in CI; figures still show inline in Jupyter
%matplotlib inline

REPO = Path.cwd().parent if Path.cwd().name == "notebooks" else Path.cwd()
WORK = Path(os.environ.get("CLIMDL_NOTEBOOK_WORK", REPO / "notebooks" / "_work")).resolve()
WORK.mkdir(parents=True, exist_ok=True)
os.environ["CLIMDL_CACHE"] = str(WORK / "cache")  # the sample is generated here on first use
print("working folder:", WORK)"""


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
            "The sample is synthetic: plausible physics, no claim about skill on real data."
        ),
        new_code_cell(SETUP),
        new_markdown_cell(
            "## 1. The sample\n\n`climdl catalog show sample-alps` describes it; "
            "opening an entry generates it on first use and returns a lazy dataset."
        ),
        new_code_cell(
            "from climdl.data.catalog import get_entry\n\n"
            'entry = get_entry("sample-alps")\n'
            'x = entry.open("predictors", experiment="Emulator_hist_future")\n'
            'y = entry.open("target", experiment="Emulator_hist_future")\n'
            "print(entry.describe())\n"
            "x"
        ),
        new_markdown_cell(
            "## 2. Train a small emulator\n\n"
            "The same command as on the terminal, narrowed for a notebook's minutes. "
            "Every key of `configs/emulator/sample.yaml` can be overridden."
        ),
        new_code_cell(
            "from climdl.cli import main\n\n"
            'rc = main(["train", "--config", str(REPO / "configs/emulator/sample.yaml"),\n'
            '           "--trainer.max_epochs", "2", "--trainer.default_root_dir", str(WORK / "run"),\n'
            '           "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",\n'
            '           "--model.init_args.base_filters", "8", "--model.init_args.max_filters", "64",\n'
            '           "--model.init_args.extra_filters", "8", "--data.init_args.batch_size", "32"])\n'
            "assert rc == 0\n"
            'ckpt = sorted((WORK / "run").rglob("best-*.ckpt"))[-1]\n'
            "ckpt"
        ),
        new_markdown_cell(
            "## 3. Downscale the held-out year\n\n"
            "`climdl.inference.downscale` is `climdl downscale` as a function: it "
            "returns the predictions as an `xr.Dataset` (lazily reopened from the "
            "CF NetCDF file it wrote)."
        ),
        new_code_cell(
            "from climdl.inference import downscale\n\n"
            "runs = {}\n"
            'for kind in ("perfect", "imperfect"):\n'
            '    res = downscale(ckpt, catalog="sample-alps", period="historical", kind=kind,\n'
            '                    output=WORK / f"tasmax_{kind}.nc", overwrite=True)\n'
            "    runs[kind] = res.dataset\n"
            '    print(f"{kind}: {res.n_days} days in {res.seconds:.1f} s ({res.years_per_second * 60:.1f} "\n'
            '          f"simulated years/min), {res.grid}")\n'
            'runs["perfect"]'
        ),
        new_markdown_cell(
            "## 4. Maps: input, truth, emulator, bias\n\n"
            "The truth of the test year ships with the sample (the benchmark withholds "
            "it). Maps are drawn on the native Lambert grid with coastlines shipped "
            "in the package (nothing is downloaded)."
        ),
        new_code_cell(
            "import xarray as xr\n\n"
            "from climdl.plot import panel_figure\n\n"
            'truth = entry.open("target", period="historical", variables=["tasmax"])\n'
            'truth = truth.assign_coords(time=truth.time.dt.floor("D"))\n'
            'pred = runs["perfect"].assign_coords(time=runs["perfect"].time.dt.floor("D"))\n'
            'coarse = entry.open("predictors", period="historical", kind="perfect", variables=["t_850"])\n'
            "day = pred.time.values[200]\n"
            "t, p = truth.tasmax.sel(time=day).load(), pred.tasmax.sel(time=day).load()\n"
            "p = p.assign_coords(Lambert_Conformal=pred.Lambert_Conformal)\n"
            'bias = (p - t.values).assign_attrs(long_name="emulator - RCM", units="K")\n'
            'fig = panel_figure([("coarse T850 (input)", coarse.t_850.sel(time=day, method="nearest")),\n'
            '                    ("RCM truth", t), ("emulator", p), ("bias", bias)],\n'
            '                   ncols=4, suptitle=f"tasmax on {day}")\n'
            "fig"
        ),
        new_markdown_cell(
            "## 5. A first score\n\nRMSE over the year, perfect and imperfect "
            "predictors (`climdl evaluate` gives the full ML-Bench diagnostics)."
        ),
        new_code_cell(
            "import numpy as np\n\n"
            "for kind, ds in runs.items():\n"
            '    d = ds.assign_coords(time=ds.time.dt.floor("D"))\n'
            '    tr = entry.open("target", period="historical", variables=["tasmax"])\n'
            '    tr = tr.assign_coords(time=tr.time.dt.floor("D"))\n'
            '    a, b = xr.align(d.tasmax, tr.tasmax, join="inner", exclude=["x", "y"])\n'
            "    rmse = float(np.sqrt(((a.values - b.values) ** 2).mean()))\n"
            "    print(f\"{kind:>9}: RMSE {rmse:.2f} K over {a.sizes['time']} days\")"
        ),
    ]


def evaluation() -> list:
    return [
        new_markdown_cell(
            "# 02 Evaluation: indices, spectra and the report\n\n"
            "How `climdl evaluate` judges a downscaled field against the RCM, on the sample's held-out "
            "year. To show what each diagnostic sees without training anything here, two stand-in "
            '"emulators" are built from the truth itself:\n\n'
            "* **smooth**: the truth averaged over 9 x 9 cells (right on average, too little small-scale "
            "detail: what a regression emulator tends to do);\n"
            "* **warm**: the truth + 1 K + day-to-day noise (right detail, biased and noisy).\n\n"
            "Notebook 01 shows the same with a trained UNet's output."
        ),
        new_code_cell(SETUP),
        new_code_cell(
            "import numpy as np\n"
            "import xarray as xr\n\n"
            "from climdl.data.catalog import get_entry\n\n"
            'entry = get_entry("sample-alps")\n'
            'truth_file = next(f for f in entry.files("target", period="historical") if "CNRM-CM5" in f.name)\n'
            'truth = xr.open_dataset(truth_file, decode_coords="all").load()\n'
            "rng = np.random.default_rng(0)\n"
            "smooth = truth.copy()\n"
            'smooth["tasmax"] = truth.tasmax.rolling(x=9, y=9, center=True, min_periods=1).mean()\n'
            "warm = truth.copy()\n"
            'warm["tasmax"] = truth.tasmax + 1.0 + rng.normal(0, 0.5, truth.tasmax.shape).astype("float32")\n'
            'for name, ds in {"smooth": smooth, "warm": warm}.items():\n'
            '    ds[["tasmax", "pr"]].to_netcdf(WORK / f"{name}.nc")\n'
            "truth.tasmax"
        ),
        new_markdown_cell(
            "## Indices\n\n"
            "Indices summarise one simulation at each grid point. Thresholds carry units and are "
            "converted to the data's own (the benchmark's code has a bare 300 where its docstring "
            "says 25 degC)."
        ),
        new_code_cell(
            "from climdl.evaluation import cdd, quantile, summer_days, txx\n\n"
            'su = summer_days(truth.tasmax, threshold="25 degC")\n'
            'print("summer days, domain mean:", float(su.mean()))\n'
            'print("TXx, domain mean (K):", float(txx(truth.tasmax).mean()))\n'
            'print("P99 of tasmax in JJA, domain mean (K):", float(quantile(truth.tasmax, 0.99, season="JJA").mean()))\n'
            'print("CDD, domain mean (days):", float(cdd(truth.pr, dry_threshold="1 mm/day").mean()))'
        ),
        new_code_cell(
            "from climdl.plot import panel_figure\n\n"
            'gm = truth.tasmax.coords.get("Lambert_Conformal")\n'
            'maps = [("summer days (truth)", su), ("summer days: warm - truth",\n'
            "        summer_days(warm.tasmax) - su)]\n"
            "maps = [(t, m.assign_coords(Lambert_Conformal=gm) if gm is not None else m) for t, m in maps]\n"
            'panel_figure(maps, kinds=["sequential", "diverging"], ncols=2)'
        ),
        new_markdown_cell(
            "## Spectra\n\n"
            "The radially averaged power spectral density shows how much variance each spatial "
            "scale carries. The smoothed field loses power at wavelengths below ~9 cells (110 km); "
            "RALSD (Harris et al. 2022) sums that loss into one number in dB, 0 for identical spectra."
        ),
        new_code_cell(
            "from climdl.evaluation import psd, ralsd\n"
            "from climdl.plot import plot_psd\n\n"
            'spectra = {name: psd(ds.tasmax) for name, ds in {"truth": truth, "smooth": smooth, "warm": warm}.items()}\n'
            'for name in ("smooth", "warm"):\n'
            "    print(f\"RALSD {name}: {ralsd(spectra['truth'], spectra[name]):.2f} dB\")\n"
            'ax = plot_psd({k: (v.wavenumber.values, v.values) for k, v in spectra.items()}, units="K")\n'
            "ax.figure"
        ),
        new_markdown_cell(
            "## Everything at once: `climdl evaluate`\n\n"
            "The command computes every index and diagnostic for the emulator and each baseline, "
            "reduces each to one number (best marked), and writes CF NetCDF maps, JSON/CSV/Markdown "
            "tables and a self-contained HTML report."
        ),
        new_code_cell(
            "from climdl.cli import main\n\n"
            'rc = main(["evaluate", "--truth", str(truth_file), "--pred", str(WORK / "smooth.nc"),\n'
            '           "--name", "smooth", "--baseline", f"warm={WORK / \'warm.nc\'}",\n'
            '           "--variables", "tasmax", "--out", str(WORK / "evaluation"), "--overwrite", "-q"])\n'
            "assert rc == 0\n"
            'print((WORK / "evaluation" / "summary.md").read_text()[:3000])'
        ),
        new_markdown_cell(
            "Read the columns against each other: the warm field's offset shows in every mean-based "
            "number and in the summer days, while the smoothed field's loss of detail shows in RALSD "
            "and the per-point distributions rather than in RMSE. No single number tells the whole "
            "story, which is why the benchmark reports them all. The report's figures:"
        ),
        new_code_cell(
            "from IPython.display import Image, display\n\n"
            'figures = sorted((WORK / "evaluation" / "figures").glob("*.png"))\n'
            'print("\\n".join(f.name for f in figures))\n'
            "for f in figures[:3]:\n"
            "    display(Image(filename=str(f)))"
        ),
    ]


def cloud_segmentation() -> list:
    return [
        new_markdown_cell(
            "# 03 Cloud segmentation: scene, mask, prediction, errors\n\n"
            "A small CNN learns to label every pixel of a multispectral scene as clear, cloud, thin "
            "cloud, cloud shadow or snow, and is compared with a physically based threshold test "
            "(Fmask-like: brightness, whiteness, the thermal band against the scene's own clear "
            "sky, shadows cast along the sun's azimuth). On a CPU in a few minutes:\n\n"
            "1. labelled scenes from the embedded generator (`climdl sample-clouds`): Landsat-like "
            "bands over real Blue Marble surfaces, procedural clouds, shadows and snow;\n"
            "2. what separates the classes: their spectra;\n"
            "3. a small UNet trained with `climdl train --config configs/clouds/sample.yaml`;\n"
            "4. `climdl segment` on held-out scenes, with class probabilities;\n"
            "5. prediction, truth and the threshold test side by side, maps of the errors, scores.\n\n"
            "The scenes are synthetic (plausible radiometry, exact labels); for real data the same "
            "config reads 38-Cloud (`--data.init_args.layout 38-cloud`)."
        ),
        new_code_cell(SETUP),
        new_markdown_cell(
            "## 1. A labelled scene\n\n"
            "A scene is a CF NetCDF file: `image` (band, y, x) with each band's name, central "
            "wavelength and units (reflectance, or brightness temperature in K for the thermal "
            "band), a projected grid with 2-D lat/lon, and `mask`, a CF flag variable."
        ),
        new_code_cell(
            "from climdl.clouds.readers import load_scene\n"
            "from climdl.clouds.sample import write_cloud_sample\n"
            "from climdl.clouds.scene import bands_of, classes_of, read_image, read_mask\n\n"
            'sample = write_cloud_sample(WORK / "scenes", n_scenes=8, size=(256, 256), seed=2026,\n'
            "                            overwrite=True)\n"
            "scene = load_scene(sample.files[3])  # read into memory, file closed\n"
            "classes = classes_of(scene)\n"
            "truth = read_mask(scene)\n"
            "for b in bands_of(scene):\n"
            '    print(f"{b.name:>7}  {b.wavelength:6.3f} um  units {b.units}")\n'
            'print({c: f"{(truth == k).mean():.0%}" for k, c in enumerate(classes)})\n'
            "scene"
        ),
        new_code_cell(
            "from climdl.plot import mask_panels, rgb_composite\n\n"
            "rgb = rgb_composite(scene)  # red, green, blue with one common stretch\n"
            'mask_panels(rgb, [("label", truth)], flag_meanings=classes, panel_size=4.5,\n'
            "            suptitle=f\"scene 3: {scene.attrs['theme']} surface near \"\n"
            "                     f\"{scene.attrs['latitude_of_centre']:.0f} N, {scene.attrs['longitude_of_centre']:.0f} E\")"
        ),
        new_markdown_cell(
            "## 2. What tells the classes apart\n\n"
            "Mean reflectance of each class per band, and the thermal band. Clouds and snow are "
            "both bright in the visible; snow is dark at 1.6 um (SWIR) where water clouds stay "
            "bright, and clouds are cold in the thermal band. Thin cloud sits between clear sky "
            "and cloud everywhere, which is why it is the hardest class."
        ),
        new_code_cell(
            "import numpy as np\n\n"
            "from climdl.plot import new_figure\n\n"
            "image = read_image(scene)\n"
            "bands = bands_of(scene)\n"
            "refl = [i for i, b in enumerate(bands) if not b.thermal]\n"
            "tir = next(i for i, b in enumerate(bands) if b.thermal)\n"
            "fig = new_figure((10, 3.6))\n"
            "ax, bx = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)\n"
            "for k, name in enumerate(classes):\n"
            "    sel = truth == k\n"
            "    if sel.sum() < 20:\n"
            "        continue\n"
            "    ax.plot([bands[i].wavelength for i in refl], [np.nanmean(image[i][sel]) for i in refl],\n"
            '            marker="o", label=name)\n'
            '    bx.hist(image[tir][sel], bins=40, histtype="step", density=True, label=name)\n'
            'ax.set(xscale="log", xlabel="wavelength (um)", ylabel="TOA reflectance",\n'
            '       title="mean spectrum per class")\n'
            'bx.set(xlabel="brightness temperature (K)", ylabel="density", title=bands[tir].name)\n'
            'ax.legend(fontsize="small")\n'
            "fig"
        ),
        new_markdown_cell(
            "## 3. Train a small segmentation UNet\n\n"
            "The sample config trains on 96 generated scenes (random 64 x 64 crops, flips and "
            "rotations on the device, cross-entropy + Dice + an any-cloud term; the bands, "
            "spectral indices and each pixel's temperature relative to its whole scene's), "
            "validates on whole scenes and, after fitting, scores the best checkpoint and the "
            "threshold test on 8 scenes of another seed. Ten epochs, the config's own (about a "
            "minute on two CPU cores)."
        ),
        new_code_cell(
            "import json\n\n"
            "import pandas as pd\n\n"
            "from climdl.cli import main\n"
            "from climdl.tasks.threshold_scores import comparison_rows\n\n"
            'rc = main(["train", "--config", str(REPO / "configs/clouds/sample.yaml"),\n'
            '           "--trainer.max_epochs", "10", "--trainer.default_root_dir", str(WORK / "clouds-run"),\n'
            '           "--trainer.logger", "false", "--trainer.enable_progress_bar", "false", "--quiet"])\n'
            "assert rc == 0\n"
            'ckpt = sorted((WORK / "clouds-run").rglob("best-*.ckpt"))[-1]\n'
            'summary = json.loads(next((WORK / "clouds-run").rglob("summary.json")).read_text())\n'
            'test = summary["test"]\n'
            "print(f\"held-out scenes: {len(test['scenes'])}; checkpoint: {ckpt.name}\")\n"
            'pd.DataFrame(comparison_rows(test["model"], test["baseline"], classes),\n'
            '             columns=["class", "CNN IoU", "threshold IoU", "CNN F1", "threshold F1"]).set_index("class")'
        ),
        new_markdown_cell(
            "## 4. Segment held-out scenes\n\n"
            "`climdl segment` cuts a scene of any size into overlapping tiles, blends their "
            "probabilities with a smooth window (no seams), checks the scene's bands against the "
            "checkpoint's by name, wavelength and units, and writes a CF NetCDF flag variable "
            "(`cloud_mask`) and, on request, the class probabilities. The 8 scenes written above "
            "(seed 2026) were not seen in training (seeds 0 and 1)."
        ),
        new_code_cell(
            "import xarray as xr\n\n"
            "for i in (3, 7):\n"
            '    rc = main(["segment", "-c", str(ckpt), "-i", str(sample.files[i]),\n'
            '               "-o", str(WORK / f"mask_{i}.nc"), "--probabilities", "--tile", "128",\n'
            '               "--overlap", "32", "--overwrite", "-q"])\n'
            "    assert rc == 0\n"
            'pred_ds = xr.load_dataset(WORK / "mask_3.nc")\n'
            'print(pred_ds.cloud_mask.attrs["flag_meanings"], "|", pred_ds.attrs["tiling"])\n'
            "pred_ds"
        ),
        new_markdown_cell(
            "## 5. Prediction, truth and the threshold test\n\n"
            "The threshold test (`climdl.models.threshold`) needs no training and knows no thin "
            "cloud; the CNN learned all five classes from the labels."
        ),
        new_code_cell(
            "from climdl.models.threshold import threshold_labels\n\n"
            "def predictions(i):\n"
            "    s = load_scene(sample.files[i])\n"
            '    p = xr.load_dataset(WORK / f"mask_{i}.nc")\n'
            "    cnn = np.nan_to_num(p.cloud_mask.values, nan=255).astype(np.uint8)\n"
            "    base = threshold_labels(read_image(s), bands_of(s), classes, s.attrs)\n"
            "    return s, read_mask(s), cnn, base, p\n\n"
            "figs = []\n"
            "for i in (3, 7):\n"
            "    s, y, cnn, base, _ = predictions(i)\n"
            '    figs.append(mask_panels(rgb_composite(s), [("label", y), ("CNN", cnn),\n'
            '                                              ("threshold test", base)],\n'
            "                            flag_meanings=classes, suptitle=f\"scene {i} ({s.attrs['theme']})\"))\n"
            "figs[0]"
        ),
        new_code_cell("figs[1]"),
        new_markdown_cell(
            "### Where the errors are\n\n"
            "Any-cloud errors (cloud or thin cloud against everything else): **missed** cloud "
            "(omission, the costly one for a cloud mask: contaminated pixels pass into the "
            "analysis), **false** cloud (commission: good pixels thrown away), and pixels in the "
            "right cloud/no-cloud group but the wrong class (e.g. shadow called snow). Right: the "
            "CNN's probability of any cloud, sharp where it is sure and soft at cloud edges."
        ),
        new_code_cell(
            'ERRORS = ["correct", "missed_cloud", "false_cloud", "wrong_class"]\n'
            'ERROR_COLOURS = {"correct": None, "missed_cloud": "#d7191c", "false_cloud": "#fdae61",\n'
            '                 "wrong_class": "#2c7bb6"}\n'
            'cloudy = np.isin(np.arange(len(classes)), [classes.index("cloud"), classes.index("thin_cloud")])\n\n'
            "def error_map(pred, y):\n"
            "    valid = (y != 255) & (pred != 255)\n"
            "    yc, pc = cloudy[np.minimum(y, len(classes) - 1)], cloudy[np.minimum(pred, len(classes) - 1)]\n"
            "    out = np.full(y.shape, 255, np.uint8)\n"
            "    out[valid & (pred == y)] = 0\n"
            "    out[valid & yc & ~pc] = 1\n"
            "    out[valid & ~yc & pc] = 2\n"
            "    out[valid & (pred != y) & (yc == pc)] = 3\n"
            "    return out\n\n"
            "s, y, cnn, base, p = predictions(3)\n"
            "rgb = rgb_composite(s)\n"
            'fig = mask_panels(rgb, [("CNN errors", error_map(cnn, y)), ("threshold-test errors", error_map(base, y))],\n'
            "                  flag_meanings=ERRORS, colours=ERROR_COLOURS, alpha=0.8, ncols=4)\n"
            "ax = fig.add_subplot(1, 4, 4)\n"
            'prob = p.probability.sel({"class": ["cloud", "thin_cloud"]}).sum("class")\n'
            'im = ax.imshow(prob.values, cmap="magma", vmin=0, vmax=1, interpolation="nearest")\n'
            'fig.colorbar(im, ax=ax, shrink=0.8, label="P(cloud or thin cloud)")\n'
            "ax.set_axis_off()\n"
            'ax.set_title("CNN cloud probability", fontsize="medium")\n'
            "fig"
        ),
        new_markdown_cell(
            "## 6. Scores on these scenes\n\n"
            "IoU per class from the confusion matrices (torchmetrics), pixels without data or "
            'label ignored; "any cloud" merges cloud and thin cloud, as binary cloud masks do.'
        ),
        new_code_cell(
            "from climdl.tasks.seg_metrics import confusion, scores\n\n"
            "rows = {}\n"
            "for i in (3, 7):\n"
            "    s, y, cnn, base, _ = predictions(i)\n"
            '    for name, pred in (("CNN", cnn), ("threshold", base)):\n'
            "        sc = scores(confusion(pred, y, len(classes)), classes)\n"
            '        rows[(f"scene {i}", name)] = {**{c: sc[f"iou_{c}"] for c in classes},\n'
            '                                      "any cloud": sc["cloud_iou"], "mean IoU": sc["miou"]}\n'
            "pd.DataFrame(rows).T.round(3)"
        ),
        new_markdown_cell(
            "Six short epochs on 24 small scenes already beat the threshold test on most classes "
            "and on the mean IoU. Two things it does not yet do: thin cloud stays the hardest "
            "class, and on the binary question a cloud mask answers (any cloud or not) the "
            "threshold test is still ahead, mostly because the CNN calls some clear pixels thin "
            "cloud and some snow cloud (see the error maps). More epochs and more scenes help "
            "most; `--model.init_args.any_cloud_weight` adds a loss on that binary decision. On "
            "real data, train on 38-Cloud (`--data.init_args.layout 38-cloud`) and run `climdl "
            "segment` directly on Landsat 8/9 Level-1 products (`-i ..._MTL.txt`), writing "
            "NetCDF or GeoTIFF (`-o mask.tif`)."
        ),
    ]


def scaling_out() -> list:
    return [
        new_markdown_cell(
            "# 04 Scaling out: strategies, nodes, restarts, inference at scale\n\n"
            "The commands here are shown, not run (they need several processes, GPUs or a cluster); "
            "each is exercised on CPU with gloo by the test suite (`pytest -m distributed`). The cells "
            "that do run only read the presets and this process's launch environment."
        ),
        new_code_cell(SETUP),
        new_markdown_cell(
            "## Strategy presets\n\n"
            "A preset from `configs/strategy/` is stacked after any training config: the model, data "
            "and optimiser stay the same, only the `trainer:` part changes."
        ),
        new_code_cell(
            'for path in sorted((REPO / "configs" / "strategy").glob("*.yaml")):\n'
            '    first = next(line for line in path.read_text().splitlines() if line.startswith("#"))\n'
            "    print(f\"{path.name:<18} {first.lstrip('# ')}\")"
        ),
        new_code_cell('print((REPO / "configs" / "strategy" / "fsdp.yaml").read_text())'),
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
            "```"
        ),
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
            "`climdl launch-info` shows how a process sees its launch (rank, node, rendezvous):"
        ),
        new_code_cell(
            "import subprocess\nimport sys\n\n"
            'print(subprocess.run([sys.executable, "-m", "climdl.cli", "launch-info"], capture_output=True,\n'
            "                     text=True).stdout)"
        ),
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
            "from the chunks already finished."
        ),
    ]


def main() -> None:
    ROOT.mkdir(exist_ok=True)
    notebooks = {
        "01_quickstart": quickstart(),
        "02_evaluation": evaluation(),
        "03_cloud_segmentation": cloud_segmentation(),
        "04_scaling_out": scaling_out(),
        "05_generative": generative(SETUP),
    }
    for name, cells in notebooks.items():
        for i, cell in enumerate(cells):  # stable ids: regenerating changes nothing in git
            cell["id"] = f"{name[:2]}-{i:02d}"
        nb = new_notebook(
            cells=cells,
            metadata={
                "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
            },
        )
        nbformat.write(nb, ROOT / f"{name}.ipynb")
        print(ROOT / f"{name}.ipynb")
    # the cells above are written compactly; the notebooks get ruff's layout (as the code does)
    paths = [str(ROOT / f"{name}.ipynb") for name in notebooks]
    ruff = [sys.executable, "-m", "ruff"]
    subprocess.run([*ruff, "check", "--fix", "-q", *paths], check=True)
    subprocess.run([*ruff, "format", "-q", *paths], check=True)


if __name__ == "__main__":
    main()
