"""Calibration of stored band values (digital numbers) to scene values, window by window.

Landsat 8/9 Collection 2 Level-1 conversions follow the USGS Landsat 8 Data Users Handbook
(LSDS-1574), section 5: top-of-atmosphere reflectance
``(REFLECTANCE_MULT_BAND_n * DN + REFLECTANCE_ADD_BAND_n) / sin(SUN_ELEVATION)``
(:class:`Reflectance`; the scene-centre sun elevation, as the handbook's scene-wide form), and
for the thermal band the radiance ``L = RADIANCE_MULT_BAND_10 * DN + RADIANCE_ADD_BAND_10`` and
brightness temperature ``K2 / ln(K1 / L + 1)`` (:class:`BrightnessTemperature`); DN 0 is the fill
value and becomes NaN. Sentinel-2 Level-1C digital numbers are already TOA reflectance, scaled:
``(DN + RADIO_ADD_OFFSET) / QUANTIFICATION_VALUE`` (:class:`Sentinel2Reflectance`; the offset is
-1000 from processing baseline 04.00, 0 before), DN 0 being no data. :class:`Scaled` applies a GeoTIFF's GDAL scale/offset and nodata value.
Each is a :data:`~climdl.clouds.raster.Converter`: a frozen dataclass, not a closure, so that
scenes pickle (copies, Dask).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Reflectance:
    """DN -> TOA reflectance corrected for the sun elevation (handbook eq. 5-1/5-2)."""

    mult: float
    add: float
    sin_elev: float

    def __call__(self, dn: np.ndarray) -> np.ndarray:
        """Reflectance (float32) of a window of digital numbers ``dn``."""
        rho = (self.mult * dn.astype(np.float64) + self.add) / self.sin_elev
        return np.where(dn == 0, np.nan, rho).astype(np.float32)


@dataclass(frozen=True)
class BrightnessTemperature:
    """DN -> radiance -> brightness temperature in K (handbook eq. 5-1/5-3); NaN for DN 0 and
    for non-positive radiance, where the logarithm is undefined."""

    mult: float
    add: float
    k1: float
    k2: float

    def __call__(self, dn: np.ndarray) -> np.ndarray:
        """Brightness temperature (K, float32) of a window of digital numbers ``dn``."""
        radiance = self.mult * dn.astype(np.float64) + self.add
        ok = (dn != 0) & (radiance > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            bt = self.k2 / np.log(self.k1 / np.where(ok, radiance, 1.0) + 1.0)
        return np.where(ok, bt, np.nan).astype(np.float32)


@dataclass(frozen=True)
class Scaled:
    """Stored GeoTIFF values -> float32 after the GDAL scale/offset, the nodata value -> NaN."""

    scale: float
    offset: float
    nodata: float | None

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        """Scene values (float32) of a window of stored values ``raw``."""
        v = raw.astype(np.float64) * self.scale + self.offset
        if self.nodata is not None and not math.isnan(self.nodata):
            v = np.where(raw == self.nodata, np.nan, v)
        return v.astype(np.float32)


@dataclass(frozen=True)
class Sentinel2Reflectance:
    """Sentinel-2 L1C DN -> TOA reflectance ``(DN + offset) / quantification``; DN 0 -> NaN.

    ``offset`` is the band's ``RADIO_ADD_OFFSET`` (-1000 from processing baseline 04.00, 0
    before), ``quantification`` the product's ``QUANTIFICATION_VALUE`` (10000). L1C values are
    already corrected for the sun angle (ESA's Level-1C algorithm), so no cosine is applied.
    """

    offset: float
    quantification: float

    def __call__(self, dn: np.ndarray) -> np.ndarray:
        """Reflectance (float32) of a window of digital numbers ``dn``."""
        rho = (dn.astype(np.float64) + self.offset) / self.quantification
        return np.where(dn == 0, np.nan, rho).astype(np.float32)
