"""Checks of a scene's bands against a segmentation checkpoint's, before any computation.

The scene's bands are matched to the checkpoint's by name (reordered if needed) and checked
against its wavelengths and units (:func:`match_bands`), and the first strip read against the
training statistics (:func:`check_values`), so that mislabelled, misordered or unconverted bands
stop with one sentence instead of giving a plausible-looking wrong mask.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from climdl.clouds.scene import Band
from climdl.errors import DataError

log = logging.getLogger(__name__)


def match_bands(scene: Sequence[Band], model: Sequence[Band], source: object) -> list[int]:
    """Indices of the model's bands in the scene; :class:`DataError` for missing bands and for
    bands whose wavelength or units contradict the checkpoint (mislabelled or misordered)."""
    names = [b.name for b in scene]
    missing = [b.name for b in model if b.name not in names]
    if missing:
        raise DataError(
            f"{source} lacks the band(s) {', '.join(missing)} that the model was "
            f"trained on; it has {', '.join(names)} and the model needs "
            f"{', '.join(b.name for b in model)} (band coordinate names)."
        )
    order = [names.index(b.name) for b in model]
    for b, i in zip(model, order, strict=True):
        s = scene[i]
        if (
            np.isfinite(s.wavelength)
            and np.isfinite(b.wavelength)
            and abs(s.wavelength - b.wavelength) > 0.05 * b.wavelength
        ):
            raise DataError(
                f"{source}: band {b.name!r} has central wavelength {s.wavelength:g} um "
                f"but the model's {b.name!r} is at {b.wavelength:g} um; the bands are "
                "mislabelled or in the wrong order."
            )
        if s.units != b.units:
            raise DataError(
                f"{source}: band {b.name!r} is in units {s.units!r} but the model "
                f"was trained on {b.units!r}; convert it first."
            )
    if order != list(range(len(scene)))[: len(order)] or len(scene) != len(model):
        log.info("bands taken in the model's order %s", [b.name for b in model])
    return order


def check_values(
    strip: np.ndarray, model: Sequence[Band], mean: np.ndarray, std: np.ndarray, source: object
) -> None:
    """Refuse bands whose values lie far outside the training distribution: a band in the
    wrong place (reflectance where brightness temperature belongs) or in other units."""
    for i, b in enumerate(model):
        v = strip[i]
        v = v[np.isfinite(v)]
        if v.size == 0:
            continue
        med = float(np.median(v))
        z = abs(med - float(mean[i])) / max(float(std[i]), 1e-6)
        if z > 8.0:
            raise DataError(
                f"{source}: band {b.name!r} has values around {med:.4g} but the model "
                f"was trained on {float(mean[i]):.4g} +- {float(std[i]):.3g} "
                f"({b.units}); the bands are in the wrong order or other units."
            )
