"""The CF NetCDF of a segmenter sensitivity run (``sensitivity.nc``, ``climdl_sensitivity =
"segmenter"``), written row by row as the tiles finish.

The file is the mask file of ``climdl segment`` (:class:`~climdl.inference.segment_netcdf.
NetCDFMaskWriter`: the scene's spatial and auxiliary coordinates, its grid mapping and
``cloud_mask``, here the unperturbed prediction) with the sensitivity variables beside it:

* ``changed_fraction(attack)``: fraction of valid pixels whose class the perturbation changed;
* ``transitions(attack, class_from, class_to)``: valid pixels per (unperturbed, perturbed) class;
* ``changed_pgd(y, x)``: uint8 flag, 1 where PGD changed the class;
* ``band_saliency(band, y, x)``: integrated gradients of the tile's summed log-probability of
  its predicted classes, from the training-mean scene to the scene;
* ``band_bound_sensitivity(band, y, x)``: ``|d CE / d x| * radius``, the first-order change of
  the tile's summed cross-entropy when that band at that pixel moves by its bound;
* ``band_bound(band)``: each band's bound as text (``"0.01 1"``, ``"0.5 K"``, ``"0 (fixed)"``).

``attack`` is ``fgsm``, ``pgd``, ``random`` (the mean over the random draws) and ``random_max``
(the draw that changed the most pixels). Pixels without data in every band are NaN (fill) in
the maps and count nowhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from climdl.clouds.scene import NODATA
from climdl.inference.segment_netcdf import NetCDFMaskWriter

__all__ = ["ATTACKS", "SCHEMA_VERSION", "SegmenterSensitivityWriter", "SensitivityTally"]

ATTACKS: tuple[str, ...] = ("fgsm", "pgd", "random", "random_max")
"""Values of the ``attack`` coordinate, in file order."""
SCHEMA_VERSION = 1
"""The ``climdl_sensitivity_version`` attribute."""

_SALIENCY_COMMENT = (
    "Integrated gradients (Sundararajan et al. 2017, midpoint rule) of the sum over each tile's "
    "valid pixels of the log-probability of the class predicted for the unperturbed scene, "
    "along the straight path from a baseline scene in which every band equals its training "
    "mean (the network's zero after normalisation: a featureless average scene) to the scene. "
    "Summed over bands and pixels of a tile, the attributions give the tile's log-probability "
    "gained over the baseline; positive values support the predicted classes. Tiles that "
    "overlap are blended as climdl segment blends them."
)
_BOUND_COMMENT = (
    "First-order change of each tile's summed cross-entropy against the unperturbed classes "
    "when this band at this pixel moves by its bound: |d CE / d x| * radius."
)


def _string_coord(dst: Any, name: str, values: Sequence[str], attrs: dict[str, str]) -> None:
    dst.createDimension(name, len(values))
    var = dst.createVariable(name, str, (name,))
    for i, v in enumerate(values):
        var[i] = v
    var.setncatts(attrs)


class SegmenterSensitivityWriter:
    """Writes the segmenter sensitivity NetCDF: header first, maps row by row, totals last.

    Args:
        path: the file to create (a temporary name; the caller renames it).
        ds: the opened scene (coordinates and grid mapping are copied from it).
        iname: the scene's image variable.
        ydim: the row dimension.
        xdim: the column dimension.
        classes: class names, in label order.
        bands: the model's band names, in channel order.
        band_bounds: the bound of each band as text.
        attrs: the global attributes.
    """

    def __init__(
        self,
        path: Path,
        ds: xr.Dataset,
        iname: str,
        ydim: str,
        xdim: str,
        classes: Sequence[str],
        bands: Sequence[str],
        band_bounds: Sequence[str],
        attrs: dict[str, Any],
    ) -> None:
        height, width = int(ds.sizes[ydim]), int(ds.sizes[xdim])
        self._mask = NetCDFMaskWriter(
            path, ds, iname, ydim, xdim, height, width, list(classes), False, attrs
        )
        try:
            self._vars = self._define(ydim, xdim, height, width, classes, bands, band_bounds)
        except BaseException:
            self._mask.close()
            raise

    def _define(
        self,
        ydim: str,
        xdim: str,
        height: int,
        width: int,
        classes: Sequence[str],
        bands: Sequence[str],
        band_bounds: Sequence[str],
    ) -> dict[str, Any]:
        dst = self._mask.dataset
        mask = dst.variables["cloud_mask"]
        mask.setncattr("long_name", "cloud mask of the unperturbed scene (most probable class)")
        grid = {
            k: mask.getncattr(k) for k in ("coordinates", "grid_mapping") if k in mask.ncattrs()
        }
        _string_coord(dst, "attack", ATTACKS, {"long_name": "perturbation"})
        _string_coord(
            dst,
            "band",
            bands,
            {"long_name": "band name", "standard_name": "sensor_band_identifier"},
        )
        _string_coord(dst, "class_from", classes, {"long_name": "class without perturbation"})
        _string_coord(dst, "class_to", classes, {"long_name": "class with the perturbation"})
        bound = dst.createVariable("band_bound", str, ("band",))
        for i, text in enumerate(band_bounds):
            bound[i] = text
        bound.setncatts(
            {"long_name": "bound of the perturbation of each band, in the band's units"}
        )
        frac = dst.createVariable("changed_fraction", "f8", ("attack",))
        frac.setncatts(
            {
                "long_name": "fraction of valid pixels whose class the perturbation changed",
                "units": "1",
                "comment": "random: mean over the random draws; random_max: the draw that "
                "changed the most pixels",
            }
        )
        trans = dst.createVariable("transitions", "f8", ("attack", "class_from", "class_to"))
        trans.setncatts(
            {
                "long_name": "valid pixels per class without and with the perturbation",
                "units": "1",
                "comment": "pixel counts; random: mean over the random draws",
            }
        )
        chunks = (min(height, 512), min(width, 512))
        flag = dst.createVariable(
            "changed_pgd",
            "u1",
            (ydim, xdim),
            fill_value=np.uint8(NODATA),
            zlib=True,
            complevel=4,
            chunksizes=chunks,
        )
        flag.setncatts(
            {
                "long_name": "class changed by the PGD perturbation",
                "flag_values": np.array([0, 1], dtype=np.uint8),
                "flag_meanings": "unchanged changed",
                **grid,
            }
        )
        flag.set_auto_maskandscale(False)
        out = {"changed_fraction": frac, "transitions": trans, "changed_pgd": flag}
        for name, long_name, comment in (
            ("band_saliency", "integrated-gradient attribution of each band", _SALIENCY_COMMENT),
            ("band_bound_sensitivity", "sensitivity to each band's bound", _BOUND_COMMENT),
        ):
            var = dst.createVariable(
                name,
                "f4",
                ("band", ydim, xdim),
                fill_value=np.float32(np.nan),
                zlib=True,
                complevel=4,
                chunksizes=(1, *chunks),
            )
            var.setncatts({"long_name": long_name, "units": "1", "comment": comment, **grid})
            out[name] = var
        return out

    def write_rows(
        self,
        y0: int,
        labels: np.ndarray,
        changed_pgd: np.ndarray,
        saliency: np.ndarray,
        bound_sensitivity: np.ndarray,
    ) -> None:
        """Rows ``y0 ..`` of the maps: ``labels`` and ``changed_pgd`` ``[rows, x]`` uint8
        (:data:`NODATA` without data), ``saliency`` and ``bound_sensitivity`` ``[band, rows, x]``
        float32 (NaN without data)."""
        rows = labels.shape[0]
        self._mask.write_rows(y0, labels, None)
        self._vars["changed_pgd"][y0 : y0 + rows, :] = changed_pgd
        self._vars["band_saliency"][:, y0 : y0 + rows, :] = saliency
        self._vars["band_bound_sensitivity"][:, y0 : y0 + rows, :] = bound_sensitivity

    def write_totals(self, changed_fraction: np.ndarray, transitions: np.ndarray) -> None:
        """The scene totals: ``changed_fraction`` ``[attack]`` and ``transitions``
        ``[attack, class_from, class_to]``, attacks in :data:`ATTACKS` order."""
        self._vars["changed_fraction"][:] = changed_fraction
        self._vars["transitions"][:] = transitions

    def close(self) -> None:
        """Finish the file; called once, also after a failure."""
        self._mask.close()


class SensitivityTally:
    """Class changes of every perturbation over the scene's valid pixels, from blended rows.

    Called with the blended rows of :class:`~climdl.sensitivity.segmenter.TileSensitivity`'s
    channels (``[K x (1 + runs) + 2 x bands + 1, rows, x]``: the class probabilities without
    perturbation, with FGSM, PGD and each random draw, then saliency, bound sensitivity and
    validity), it counts the class transitions of each run and writes the rows' maps.

    Args:
        n_classes: classes ``K``.
        n_bands: bands.
        n_runs: perturbed predictions per tile (FGSM, PGD and the random draws).
        writer: where the rows go.
    """

    def __init__(
        self, n_classes: int, n_bands: int, n_runs: int, writer: SegmenterSensitivityWriter
    ) -> None:
        self.k, self.c, self.runs = n_classes, n_bands, n_runs
        self.counts = np.zeros((self.runs, self.k, self.k), dtype=np.int64)
        self.n_valid = 0
        self.writer = writer

    def __call__(self, y0: int, blended: np.ndarray) -> None:
        """Count and write the finished rows ``y0 ..`` (``run_tiled``'s ``write_rows``)."""
        k, c = self.k, self.c
        valid = blended[-1] > 0.5
        labels = [blended[i * k : (i + 1) * k].argmax(0) for i in range(1 + self.runs)]
        clean = labels[0]
        self.n_valid += int(valid.sum())
        for r, lab in enumerate(labels[1:]):
            pairs = clean[valid] * k + lab[valid]
            self.counts[r] += np.bincount(pairs, minlength=k * k).reshape(k, k)
        maps = blended[(1 + self.runs) * k : -1]
        maps = np.where(valid[None], maps, np.nan).astype(np.float32)
        self.writer.write_rows(
            y0,
            np.where(valid, clean, NODATA).astype(np.uint8),
            np.where(valid, labels[2] != clean, NODATA).astype(np.uint8),
            maps[:c],
            maps[c:],
        )

    def totals(self) -> tuple[np.ndarray, np.ndarray]:
        """``changed_fraction`` [attack] and ``transitions`` [attack, from, to], in
        :data:`ATTACKS` order."""
        n = max(self.n_valid, 1)
        frac = (self.counts.sum((1, 2)) - np.trace(self.counts, axis1=1, axis2=2)) / n
        draws = self.counts[2:]
        worst = 2 + int(np.argmax(frac[2:]))
        trans = np.stack([self.counts[0], self.counts[1], draws.mean(0), self.counts[worst]])
        changed = np.array([frac[0], frac[1], frac[2:].mean(), frac[worst]])
        return changed, trans.astype(np.float64)
