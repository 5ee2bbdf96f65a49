"""Throughput and peak memory of ``climdl segment`` (tiled cloud segmentation).

Measured side by side in one run, each in a fresh subprocess (so that peak RSS is its own):

* ``segment`` on a 2000^2 and an 8000^2 scene (reading strips of the NetCDF, tiling, batched
  forward passes, blending, writing the CF mask): scene megapixels per second and peak RSS;
* the bare network forward pass over the same number of tiles of the same size, already in
  memory, with the weight layout ``segment`` chooses (channels_last on the CPU): megapixels per
  second. The ratio ``segment / bare`` is the price of the streaming,
  blending and I/O around the network.

The 8000^2 scene is 1 GB of float32 on disk; bounded-memory tiling keeps ``segment``'s peak
near that of the 2000^2 scene (memory grows with tile x width, not with the scene). The
network has random weights (speed does not depend on training) and the architecture of
``configs/clouds/sample.yaml`` on 4 bands. ``--thermal`` adds a thermal band (K) and makes the
model read the scene's thermal context (``features: bands+scene``): ``segment`` then makes its
whole-scene context pass before the tiles (timed on its own), the bare forward gets a fixed
context::

    .venv/bin/python bench/segment_throughput.py [--sizes 2000 8000] [--tile 512] [--overlap 64]
        [--batch-size 8] [--device cpu] [--base-filters 8] [--block plain] [--thermal]
        [--repeats 3] [--folder DIR] [--keep]

``segment`` and the bare forward alternate, ``--repeats`` times each, and the best of each is
kept (robust to other load on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _memory import peak_rss_bytes

BANDS = [("blue", 0.482), ("green", 0.561), ("red", 0.655), ("nir", 0.865)]
THERMAL = ("tir", 10.9)
MODEL: dict[str, object] = {"depth": 3, "base_filters": 8, "max_filters": 64, "block": "plain"}


def _bands(thermal: bool) -> list[tuple[str, float, str]]:
    """(name, wavelength in um, units) of the scene's bands."""
    return [(b, w, "1") for b, w in BANDS] + ([(*THERMAL, "K")] if thermal else [])


def _rss_mb() -> float:
    return peak_rss_bytes() / 2**20


def make_checkpoint(path: Path, thermal: bool) -> None:
    """A segmentation checkpoint with random weights for 4 bands (5 with ``thermal``, and the
    scene context read) and 5 classes."""
    import lightning as L
    import torch

    from climdl.clouds.scene import CLASSES
    from climdl.clouds.spec import SegmenterSpec
    from climdl.tasks.segmentation import SegmentationTask

    torch.manual_seed(0)
    bands = _bands(thermal)
    spec = {
        "bands": [b for b, _, _ in bands],
        "wavelengths": [w for _, w, _ in bands],
        "band_units": [u for _, _, u in bands],
        "classes": list(CLASSES),
        "ignore_index": 255,
        "stats": {
            "mean": torch.tensor([280.0 if u == "K" else 0.2 for _, _, u in bands]),
            "std": torch.tensor([10.0 if u == "K" else 0.2 for _, _, u in bands]),
        },
        "class_counts": torch.ones(len(CLASSES)),
    }
    task = SegmentationTask(**MODEL, features="bands+scene" if thermal else "bands")
    task.build(SegmenterSpec.from_dict(spec))
    trainer = L.Trainer(
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        max_epochs=0,
        accelerator="cpu",
    )
    trainer.strategy.connect(task)
    trainer.save_checkpoint(path)


def make_scene(path: Path, size: int, thermal: bool, deflate: bool) -> None:
    """A ``size`` x ``size`` 4-band (5 with ``thermal``) scene, written 512 rows at a time
    (bounded memory); ``deflate``: compressed (level 1, shuffle), as scene archives are."""
    import netCDF4

    bands = _bands(thermal)
    n = len(bands)
    rng = np.random.default_rng(0)
    block = (0.15 + 0.1 * rng.standard_normal((n, 512, 512))).astype(np.float32)
    if thermal:
        block[-1] = 280.0 + 10.0 * rng.standard_normal((512, 512))
    with netCDF4.Dataset(path, "w") as ds:
        ds.createDimension("band", n)
        ds.createDimension("y", size)
        ds.createDimension("x", size)
        band = ds.createVariable("band", str, ("band",))
        for i, (name, _, _) in enumerate(bands):
            band[i] = name
        wl = ds.createVariable("wavelength", "f4", ("band",))
        wl[:] = [w for _, w, _ in bands]
        wl.units = "um"
        bu = ds.createVariable("band_units", str, ("band",))
        for i, (_, _, units) in enumerate(bands):
            bu[i] = units
        for name in ("y", "x"):
            v = ds.createVariable(name, "f8", (name,))
            v[:] = np.arange(size) * 30.0
            v.units = "m"
        img = ds.createVariable(
            "image",
            "f4",
            ("band", "y", "x"),
            chunksizes=(1, min(size, 512), min(size, 512)),
            zlib=deflate,
            complevel=1,
            shuffle=deflate,
        )
        img.coordinates = "wavelength band_units"
        for r0 in range(0, size, 512):
            rows = min(512, size - r0)
            reps = -(-size // 512)
            strip = np.tile(block[:, :rows], (1, 1, reps))[:, :, :size]
            img[:, r0 : r0 + rows, :] = strip


def child_segment(args: argparse.Namespace) -> dict[str, float]:
    import netCDF4  # noqa: F401  (imports are not what is measured)

    import climdl.inference.segment as seg_module
    import climdl.tasks.checkpoint  # noqa: F401
    from climdl.inference.segment import segment

    context_s = [0.0]
    whole_scene = seg_module.segment_context

    def timed(*a: object, **k: object) -> object:  # the whole-scene pass of a +scene model
        s = time.perf_counter()
        try:
            return whole_scene(*a, **k)  # type: ignore[arg-type]
        finally:
            context_s[0] += time.perf_counter() - s

    seg_module.segment_context = timed  # type: ignore[assignment]
    t0 = time.perf_counter()
    res = segment(
        args.ckpt,
        args.scene,
        args.out,
        tile=args.tile,
        overlap=args.overlap,
        batch_size=args.batch_size,
        device=args.device,
        overwrite=True,
    )
    return {
        "seconds": time.perf_counter() - t0,
        "context_s": context_s[0],
        "mpx": res.shape[0] * res.shape[1] / 1e6,
        "tiles": res.n_tiles,
        "peak_rss_mb": _rss_mb(),
    }


def child_forward(args: argparse.Namespace) -> dict[str, float]:
    import torch

    from climdl.inference.segment_tiling import plan_tiles
    from climdl.preprocess.device import resolve_device
    from climdl.tasks.segmentation import load_segmenter
    from climdl.tasks.speed import use_channels_last

    dev = resolve_device(args.device)
    task = load_segmenter(args.ckpt).to(dev)
    if use_channels_last(dev, "32", None):  # the layout segment chooses: like for like
        task = task.to(memory_format=torch.channels_last)
    grid = plan_tiles(args.size, args.size, args.tile, args.overlap, task.size_multiple)
    assert task.spec is not None
    x = torch.rand(args.batch_size, len(task.spec.bands), grid.tile_h, grid.tile_w, device=dev)
    ctx = None
    if task.needs_context:  # the scene's context, computed once: fixed for every tile
        x[:, -1] = 280.0 + 10.0 * x[:, -1]
        ctx = torch.tensor([[290.0, 285.0]], device=dev).expand(args.batch_size, -1)
    with torch.inference_mode():
        task.predict_proba(x[:1], None if ctx is None else ctx[:1])  # warm-up
        t0 = time.perf_counter()
        left = grid.n_tiles
        while left > 0:
            b = min(left, args.batch_size)
            task.predict_proba(x[:b], None if ctx is None else ctx[:b])
            left -= args.batch_size
        if dev.type == "cuda":
            torch.cuda.synchronize()
    return {
        "seconds": time.perf_counter() - t0,
        "mpx": args.size**2 / 1e6,
        "tiles": grid.n_tiles,
        "peak_rss_mb": _rss_mb(),
    }


def _run_child(kind: str, **kw: object) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", kind]
    for k, v in kw.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[2000, 8000])
    p.add_argument("--tile", type=int, default=512)
    p.add_argument("--overlap", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--base-filters", type=int, default=8)
    p.add_argument("--block", default="plain", choices=["plain", "residual", "inception"])
    p.add_argument(
        "--thermal",
        action="store_true",
        help="a 5th, thermal band and a model that reads the scene's thermal context",
    )
    p.add_argument("--deflate", action="store_true", help="compressed scenes (level 1, shuffle)")
    p.add_argument("--repeats", type=int, default=3, help="runs of each (the best is kept)")
    p.add_argument("--folder", type=Path, default=None)
    p.add_argument("--keep", action="store_true", help="keep the scenes and outputs")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--ckpt", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--scene", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    MODEL.update(
        base_filters=args.base_filters, block=args.block, max_filters=8 * args.base_filters
    )
    if args.child:
        res = child_segment(args) if args.child == "segment" else child_forward(args)
        print(json.dumps(res))
        return

    folder = args.folder or Path(tempfile.mkdtemp(prefix="segbench-"))
    folder.mkdir(parents=True, exist_ok=True)
    ckpt = folder / "random.ckpt"
    make_checkpoint(ckpt, args.thermal)
    common = {
        "tile": args.tile,
        "overlap": args.overlap,
        "batch_size": args.batch_size,
        "device": args.device,
        "ckpt": ckpt,
    }
    rows = []
    try:
        for size in args.sizes:
            scene = folder / f"scene_{size}.nc"
            if not scene.exists():
                make_scene(scene, size, args.thermal, args.deflate)
            segs, fwds = [], []
            for _ in range(args.repeats):  # alternated: both sides see the same load
                segs.append(
                    _run_child(
                        "segment", scene=scene, out=folder / f"mask_{size}.nc", size=size, **common
                    )
                )
                fwds.append(
                    _run_child(
                        "forward", size=size, scene=scene, out=folder / "unused.nc", **common
                    )
                )
            seg = min(segs, key=lambda r: r["seconds"])
            fwd = min(fwds, key=lambda r: r["seconds"])
            seg["peak_rss_mb"] = max(r["peak_rss_mb"] for r in segs)
            fwd["peak_rss_mb"] = max(r["peak_rss_mb"] for r in fwds)
            rows.append((size, seg, fwd, scene.stat().st_size / 1e6))
            if not args.keep:
                scene.unlink()
                (folder / f"mask_{size}.nc").unlink(missing_ok=True)
    finally:
        if not args.keep and args.folder is None:
            shutil.rmtree(folder, ignore_errors=True)
    import torch

    print(
        f"# segment throughput - {platform.node()} ({os.cpu_count()} CPUs, torch "
        f"{torch.__version__}, {args.device}, {torch.get_num_threads()} threads); tile "
        f"{args.tile}, overlap {args.overlap}, batch {args.batch_size}; best of {args.repeats}; "
        f"model {MODEL}; {len(_bands(args.thermal))} bands"
        + (", scene context read" if args.thermal else "")
        + (", deflated scenes" if args.deflate else "")
    )
    print(
        "| scene | tiles | segment Mpx/s | bare forward Mpx/s | ratio | segment s | "
        "of which context pass s | segment peak RSS MB | forward peak RSS MB | "
        "scene on disk MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for size, seg, fwd, disk_mb in rows:
        s_rate = seg["mpx"] / seg["seconds"]
        f_rate = fwd["mpx"] / fwd["seconds"]
        print(
            f"| {size}^2 | {int(seg['tiles'])} | {s_rate:.2f} | {f_rate:.2f} | "
            f"{s_rate / f_rate:.2f} | {seg['seconds']:.1f} | {seg['context_s']:.2f} | "
            f"{seg['peak_rss_mb']:.0f} | {fwd['peak_rss_mb']:.0f} | {disk_mb:.0f} |"
        )


if __name__ == "__main__":
    main()
