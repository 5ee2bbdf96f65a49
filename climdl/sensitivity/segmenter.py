"""How far a bounded nudge of a scene's bands can move the cloud segmenter's mask.

:func:`run_segmenter_sensitivity` opens the scene and checks its bands exactly as ``climdl
segment`` does (:func:`~climdl.clouds.readers.open_scene`, :mod:`climdl.inference.segment_bands`)
and runs over the same overlapping tiles (:mod:`climdl.inference.segment_tiling`). On every batch
of tiles, :class:`TileSensitivity` perturbs the bands within their bounds (physical units:
reflectance ``"1"``, brightness temperature ``K``; :mod:`climdl.sensitivity.bounds`) to increase
the cross-entropy against the classes the network predicts for the unperturbed scene (an
untargeted adversary): FGSM, PGD started from FGSM, and random corners of the bounds' box as the
control. Gradients are taken with respect to the physical band values, the task's normalisation
inside the differentiated function, the network in eval mode. Each tile is attacked on its own
and the perturbed class probabilities are blended across overlapping tiles as ``climdl segment``
blends them, so the mask "under attack" is the one segment would give tile by tile.

Band saliency is integrated gradients of the tile's summed log-probability of its predicted
classes from a baseline scene at the training mean of every band (the network's zero input
after normalisation; a zero reflectance / 0 K scene would be far outside the data), and the
bound sensitivity ``|d CE / d x| * radius`` the first-order effect of moving one band at one
pixel by its bound. Memory is proportional to ``tile x width`` (the blended rows of every
perturbation), never to the scene; the output is written under a temporary name and renamed
(:mod:`climdl.sensitivity.segmenter_output`).
"""

from __future__ import annotations

import contextlib
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from climdl import __version__
from climdl.clouds.readers import open_scene
from climdl.clouds.scene import (
    BAND_DIM,
    Band,
    bands_of,
    image_name,
    spatial_dims,
    validate_scene,
)
from climdl.errors import ConfigError, DataError, OutputError
from climdl.inference.members import check_option_values
from climdl.inference.segment_bands import check_values, match_bands
from climdl.inference.segment_context import require_thermal, segment_context
from climdl.inference.segment_tiling import plan_tiles, run_tiled
from climdl.io.checksum import sha256_file
from climdl.io.netcdf import atomic_path
from climdl.io.provenance import CF_CONVENTIONS, climdl_source, history_entry
from climdl.preprocess.device import resolve_device
from climdl.sensitivity.attacks import (
    Box,
    Objective,
    gradient,
    integrated_gradients,
    pgd,
    random_corner,
)
from climdl.sensitivity.bounds import Bound, describe, parse_bounds, radius
from climdl.sensitivity.output import check_out_dir
from climdl.sensitivity.segmenter_output import (
    ATTACKS,
    SCHEMA_VERSION,
    SegmenterSensitivityWriter,
    SensitivityTally,
)
from climdl.sensitivity.staging import staged_run, write_report

if TYPE_CHECKING:  # the task (and Lightning) load when a run starts, not on import
    from climdl.tasks.segmentation import SegmentationTask

__all__ = [
    "DEFAULT_REFLECTANCE_BOUND",
    "DEFAULT_THERMAL_BOUND",
    "SegmenterSensitivityResult",
    "TileSensitivity",
    "default_scene_bounds",
    "run_segmenter_sensitivity",
]

DEFAULT_REFLECTANCE_BOUND = "0.01 1"
"""Default bound of a reflective band: 0.01 of TOA reflectance, about the absolute calibration
uncertainty of Landsat 8 OLI."""
DEFAULT_THERMAL_BOUND = "0.5 K"
"""Default bound of a thermal band: 0.5 K of brightness temperature."""
DEFAULT_TILE = 256
"""Tile size of a sensitivity run (smaller than segment's: the attacks keep gradients)."""
OUTPUT_NAME = "sensitivity.nc"


@dataclass
class SegmenterSensitivityResult:
    """What :func:`run_segmenter_sensitivity` wrote and found.

    Attributes:
        path: the sensitivity NetCDF.
        changed_fraction: attack (``fgsm``, ``pgd``, ``random``, ``random_max``) -> fraction of
            the valid pixels whose class it changed.
        bounds: the bounds used (:func:`climdl.sensitivity.bounds.describe`).
        classes: class names, in label order.
        shape: the scene's (rows, columns).
        n_tiles: tiles attacked.
        seconds: wall time.
        device: the device the network ran on.
        report_paths: ``report.html`` and ``report.md`` (with ``report=True``), else empty.
    """

    path: Path
    changed_fraction: dict[str, float]
    bounds: str
    classes: list[str]
    shape: tuple[int, int]
    n_tiles: int
    seconds: float
    device: str
    report_paths: tuple[Path, ...] = ()


def default_scene_bounds(bands: Sequence[Band]) -> str:
    """The default ``--eps`` of a scene's bands: reflectance 0.01, brightness temperature 0.5 K.

    Args:
        bands: the model's bands.

    Returns:
        A bound string for :func:`~climdl.sensitivity.bounds.parse_bounds`.
    """
    return ", ".join(
        f"{b.name}={DEFAULT_THERMAL_BOUND if b.thermal else DEFAULT_REFLECTANCE_BOUND}"
        for b in bands
    )


class TileSensitivity:
    """The attacks and attributions of one batch of tiles, as ``run_tiled``'s ``predict``.

    Called on raw tiles ``[B, C, h, w]`` (physical units, NaN without data) it returns, stacked
    along the channel axis, the class probabilities without perturbation, with the FGSM and the
    PGD perturbation and with each random draw (``K`` channels each), the band saliency and the
    bound sensitivity (``C`` each) and a validity channel (1 where every band has data), so that
    one blend gives every map.

    Args:
        task: the segmenter, in eval mode, on its device.
        bounds: the bounds of the perturbed bands (:func:`parse_bounds`).
        pgd_steps: PGD ascent steps.
        random_draws: random corners per tile.
        ig_steps: integrated-gradient quadrature points.
        seed: seed of the random draws (the same seed gives the same draws).
    """

    def __init__(
        self,
        task: SegmentationTask,
        bounds: Mapping[str, Bound],
        *,
        pgd_steps: int = 5,
        random_draws: int = 4,
        ig_steps: int = 16,
        seed: int = 0,
    ) -> None:
        assert task.spec is not None
        self.task = task
        self.bounds = dict(bounds)
        self.bands = list(task.spec.bands)
        self.n_classes = len(task.spec.classes)
        self.pgd_steps = pgd_steps
        self.random_draws = random_draws
        self.ig_steps = ig_steps
        self.device = task.band_mean.device
        self.seed = seed
        #: ``[1, P]`` the scene's thermal context for checkpoints that read it (set by
        #: :func:`run_segmenter_sensitivity` before the tiles, as ``segment`` computes it); held
        #: fixed under the perturbations, which move pixels, not the scene's percentiles
        self.context: Tensor | None = None

    def _ctx(self, x: Tensor) -> Tensor | None:
        """The scene context for a batch ``x`` of tiles (None for checkpoints without it)."""
        return None if self.context is None else self.context.expand(x.shape[0], -1)

    @property
    def n_runs(self) -> int:
        """Perturbed predictions per tile: FGSM, PGD and the random draws."""
        return 2 + self.random_draws

    @property
    def n_channels(self) -> int:
        """Channels of :meth:`__call__`'s output."""
        return (1 + self.n_runs) * self.n_classes + 2 * len(self.bands) + 1

    def box(self, x: Tensor) -> Box:
        """The allowed perturbations of inputs ``x`` (0 for fixed bands and missing values)."""
        return Box(radius(x, self.bounds, self.bands))

    def objective(self, x: Tensor, probs: Tensor | None = None) -> Objective:
        """Cross-entropy against the classes predicted for ``x`` (from ``probs``, its class
        probabilities, when already known), summed over each tile's pixels with data in every
        band: the untargeted adversary's objective, one value per tile."""
        task = self.task
        target = (task.predict_proba(x, self._ctx(x)) if probs is None else probs).argmax(1)
        valid = torch.isfinite(x).all(1)

        def cross_entropy(xp: Tensor) -> Tensor:
            logits = task(task.normalise(xp, self._ctx(xp))[0]).float()
            ce = F.cross_entropy(logits, target, reduction="none")
            return torch.where(valid, ce, torch.zeros_like(ce)).sum((1, 2))

        return cross_entropy

    def perturbations(self, x: Tensor, objective: Objective | None = None) -> dict[str, Tensor]:
        """The perturbations of tiles ``x``: ``fgsm``, ``pgd`` (from FGSM, best iterate) and
        ``random_<i>`` for each draw, each inside :meth:`box`."""
        return self._attack(x, objective or self.objective(x))[1]

    def _attack(self, x: Tensor, objective: Objective) -> tuple[Tensor, dict[str, Tensor]]:
        """The objective's gradient at ``x`` (also the bound sensitivity's) and the perturbations
        of :meth:`perturbations`."""
        box = self.box(x)
        _, grad = gradient(objective, x)
        out = {"fgsm": box.project(box.radius * torch.sign(grad))}  # attacks.fgsm, grad reused
        out["pgd"] = pgd(objective, x, box, self.pgd_steps, start=out["fgsm"])
        corners = self._corners(x)
        for i in range(self.random_draws):
            out[f"random_{i}"] = box.radius * corners[i]
        return grad, out

    def _corners(self, x: Tensor) -> list[Tensor]:
        """Per draw, random signs for tiles ``x``: each tile's from a CPU generator seeded by the
        run's seed and the tile's own values, so the draws depend neither on how tiles are
        batched nor on the device."""
        unit = Box(torch.ones(()))
        signs: list[list[Tensor]] = [[] for _ in range(self.random_draws)]
        for tile in x.detach().cpu():
            digest = zlib.crc32(tile.numpy().tobytes())
            state = np.random.SeedSequence([self.seed, digest]).generate_state(1, np.uint64)[0]
            gen = torch.Generator().manual_seed(int(state >> 1))
            for i in range(self.random_draws):
                signs[i].append(random_corner(tile[None], unit, gen))
        return [torch.cat(s).to(x) for s in signs]

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        """See the class docstring."""
        task = self.task
        x = torch.from_numpy(tiles).to(self.device)
        probs = [task.predict_proba(x, self._ctx(x))]
        objective = self.objective(x, probs[0])
        grad, deltas = self._attack(x, objective)
        probs += [task.predict_proba(x + d, self._ctx(x)) for d in deltas.values()]
        sensitivity = grad.abs() * self.box(x).radius
        baseline = task.band_mean.to(x.dtype)
        saliency = integrated_gradients(lambda xp: -objective(xp), x, baseline, self.ig_steps)
        valid = torch.isfinite(x).all(1, keepdim=True)
        parts = [*probs, torch.nan_to_num(saliency), sensitivity, valid.to(x.dtype)]
        out: np.ndarray = torch.cat(parts, 1).float().cpu().numpy()
        return out


def run_segmenter_sensitivity(
    checkpoint: str | Path,
    scene: str | Path,
    *,
    out_dir: str | Path,
    eps: str | None = None,
    pgd_steps: int = 5,
    random_draws: int = 4,
    ig_steps: int = 16,
    seed: int = 0,
    device: str = "auto",
    tile: int | None = None,
    overlap: int | None = None,
    batch_size: int = 4,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    history: str | None = None,
    report: bool = False,
) -> SegmenterSensitivityResult:
    """Attack the cloud segmenter on a scene within bounds and write ``out_dir/sensitivity.nc``.

    The file (and the report) is written into a temporary folder that becomes ``out_dir``'s
    content only once complete (:func:`climdl.io.staged_folder.staged_folder`): a full disk or
    an interrupt leaves no partial run behind.

    Args:
        checkpoint: a cloud-segmenter checkpoint from ``climdl train``.
        scene: anything ``climdl segment`` reads (scene NetCDF, Landsat product, GeoTIFF).
        out_dir: the output folder (created if needed).
        eps: the bounds, ``band=value unit`` items keyed by the band names ``climdl segment``
            uses (``"red=0.02 1, tir=1 K"``); bands not named are held fixed. Default
            :func:`default_scene_bounds`.
        pgd_steps: PGD ascent steps.
        random_draws: random corners of the bounds' box per tile.
        ig_steps: integrated-gradient quadrature points.
        seed: seed of the random draws.
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        tile: tile size (a multiple of the network's ``2**depth``); default 256.
        overlap: pixels shared by neighbouring tiles; default an eighth of the tile.
        batch_size: tiles per attack batch.
        overwrite: replace an existing ``sensitivity.nc``.
        progress: ``progress(tiles_done, tiles_total)``.
        history: the command line to record in ``history`` (default: one that states the
            options).
        report: also write the stand-alone report (``report.html``, ``report.md``,
            ``figures/``) in ``out_dir``, as part of the same set.

    Returns:
        The file written, the changed fraction per attack, the bounds, shape, tiles and time.

    Raises:
        ConfigError: bad bounds (e.g. a band the model does not use), steps, draws or batch size
            below 1, or a tile or overlap the network cannot use.
        DataError: an unreadable checkpoint or scene, a scene without the model's bands or
            without a pixel that has data in every band.
        OutputError: the output exists (without ``overwrite``) or cannot be written.
    """
    from climdl.tasks.segmentation import load_segmenter

    t0 = time.perf_counter()
    for name, value in (
        ("--pgd-steps", pgd_steps),
        ("--random-draws", random_draws),
        ("--ig-steps", ig_steps),
        ("--batch-size", batch_size),
    ):
        if value < 1:
            raise ConfigError(f"{name} must be at least 1, got {value}.")
    check_option_values(None, seed, None)  # the same range and sentence as downscale's --seed
    ckpt, scene_p = Path(checkpoint), Path(scene)
    out = Path(out_dir)
    out_p = out / OUTPUT_NAME
    if out_p.resolve() == scene_p.resolve():
        raise OutputError(f"the output {out_p} would replace the input scene; choose another name.")
    dev = resolve_device(device)
    task = load_segmenter(ckpt).to(dev).eval().requires_grad_(False)
    spec = task.spec
    assert spec is not None
    model_bands = [
        Band(n, w, u) for n, w, u in zip(spec.bands, spec.wavelengths, spec.band_units, strict=True)
    ]
    units = {b.name: b.units for b in model_bands}
    text = default_scene_bounds(model_bands) if eps is None else eps
    bounds = parse_bounds(text, spec.bands, units)
    sens = TileSensitivity(
        task,
        bounds,
        pgd_steps=pgd_steps,
        random_draws=random_draws,
        ig_steps=ig_steps,
        seed=seed,
    )
    tile = DEFAULT_TILE if tile is None else tile
    overlap = tile // 8 if overlap is None else overlap
    ds = open_scene(scene_p)
    try:
        validate_scene(ds, scene_p)
        ydim, xdim = spatial_dims(ds, scene_p)
        scene_bands = bands_of(ds, scene_p)
        require_thermal(
            task.needs_context, task.hp.features, scene_bands, model_bands, scene_p, ckpt
        )
        order = match_bands(scene_bands, model_bands, scene_p)
        iname = image_name(ds, scene_p)
        image = ds[iname].transpose(BAND_DIM, ydim, xdim).isel({BAND_DIM: order})
        height, width = int(ds.sizes[ydim]), int(ds.sizes[xdim])
        if task.needs_context:  # the whole scene's, before the tiles, as segment computes it
            sens.context = segment_context(image, model_bands, ydim, xdim, dev)
        grid = plan_tiles(height, width, tile, overlap, task.size_multiple)
        checked = False

        def read_rows(y0: int, y1: int) -> np.ndarray:
            """The input strip, checked against the training statistics once."""
            nonlocal checked
            a = np.asarray(image.isel({ydim: slice(y0, y1)}).values, dtype=np.float32)
            if not checked:
                check_values(a, model_bands, spec.mean.numpy(), spec.std.numpy(), scene_p)
                checked = True
            return a

        bound_text = [bounds[b].text if b in bounds else "0 (fixed)" for b in spec.bands]
        described = describe(bounds)
        line = history or (
            f"climdl sensitivity --checkpoint {ckpt} --input {scene_p} --eps '{described}' "
            f"(pgd_steps {pgd_steps}, random_draws {random_draws}, ig_steps {ig_steps}, seed "
            f"{seed}, tile {grid.tile_h}x{grid.tile_w}, overlap {grid.overlap}; climdl "
            f"{__version__})"
        )
        attrs: dict[str, Any] = {
            "Conventions": CF_CONVENTIONS,
            "title": "sensitivity of a cloud mask to bounded perturbations of the bands",
            "institution": "unspecified (set by the user)",
            "source": climdl_source("cloud segmentation sensitivity (FGSM, PGD, random, IG)"),
            "history": history_entry(line, ds.attrs.get("history")),
            "climdl_sensitivity": "segmenter",
            "climdl_sensitivity_version": np.int32(SCHEMA_VERSION),
            "climdl_version": __version__,
            "bounds": described,
            "pgd_steps": np.int32(pgd_steps),
            "random_draws": np.int32(random_draws),
            "ig_steps": np.int32(ig_steps),
            "seed": np.int64(seed),
            "checkpoints": f"{ckpt.resolve()} sha256:{sha256_file(ckpt)}",
            "classes": " ".join(spec.classes),
            "input_file": str(scene_p.resolve()),
            "objective": "cross-entropy against the unperturbed predicted classes, summed over "
            "each tile's valid pixels (untargeted)",
            "tiling": f"{grid.tile_h}x{grid.tile_w} tiles, overlap {grid.overlap}, "
            f"{grid.n_tiles} tiles attacked one by one, sine-squared blending",
        }
        if report:  # an earlier report (or an evaluation's) is replaced only with overwrite
            check_out_dir(out, overwrite)
        elif out_p.exists() and not overwrite:
            raise OutputError(f"{out_p} already exists; pass --overwrite to replace it.")
        pages: tuple[Path, ...] = ()
        # the whole set (NetCDF and report) is written in a stage whose entries become out_dir's
        # once complete, or is removed on failure or interrupt
        with staged_run(out, overwrite=overwrite, report=report) as stage:
            with contextlib.ExitStack() as stack:
                tmp = stack.enter_context(atomic_path(stage / OUTPUT_NAME, overwrite=True))
                writer = SegmenterSensitivityWriter(
                    tmp, ds, iname, ydim, xdim, spec.classes, spec.bands, bound_text, attrs
                )
                stack.callback(writer.close)  # closed before the file is renamed into place
                tally = SensitivityTally(sens.n_classes, len(sens.bands), sens.n_runs, writer)
                run_tiled(
                    read_rows,
                    sens,
                    grid,
                    sens.n_channels,
                    tally,
                    batch_size=batch_size,
                    progress=progress,
                )
                if tally.n_valid == 0:
                    raise DataError(f"{scene_p} has no pixel with data in every band.")
                changed, transitions = tally.totals()
                writer.write_totals(changed, transitions)
            if report:
                pages = write_report(stage, out)
    finally:
        ds.close()
    return SegmenterSensitivityResult(
        path=out_p,
        changed_fraction={a: float(v) for a, v in zip(ATTACKS, changed, strict=True)},
        bounds=described,
        classes=list(spec.classes),
        shape=(height, width),
        n_tiles=grid.n_tiles,
        seconds=time.perf_counter() - t0,
        device=str(dev),
        report_paths=pages,
    )
