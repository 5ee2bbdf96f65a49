"""The baseline to beat: a spectral-threshold cloud test in the spirit of Fmask.

Fmask (Zhu & Woodcock 2012, Remote Sens. Environ. 118:83) flags *potential cloud pixels* with a
chain of spectral tests (basic SWIR/thermal/NDSI/NDVI test, visible whiteness, haze-optimised
transform, NIR/SWIR ratio), then keeps those whose cloud probability - from temperature and
spectral variability over land, temperature and brightness over water, each relative to the
scene's own clear-sky pixels - exceeds a scene-adaptive threshold. Snow is NDSI > 0.15 with a
cold, bright NIR/green; shadows are dark NIR pits (a grey closing stands in for Fmask's flood
fill) lying where the clouds project along the sun direction. Tests whose bands a scene lacks
(no SWIR, no thermal: e.g. 38-Cloud's red/green/blue/NIR) are skipped.

Reflectances are TOA reflectance (0-1) and the thermal band is brightness temperature in K.
This is a compact re-implementation for comparison, not the reference Fmask code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage

from climdl.clouds.scene import NODATA, Band, find_bands


def _pick(image: np.ndarray, bands: Sequence[Band]) -> dict[str, np.ndarray]:
    found = find_bands([b.name for b in bands])
    return {key: image[i].astype(np.float32) for key, i in found.items()}


def _pct(values: np.ndarray, q: float, default: float) -> float:
    return float(np.percentile(values, q)) if values.size > 50 else default


def fmask_like(
    image: np.ndarray,
    bands: Sequence[Band],
    sun_zenith: float | None = None,
    sun_azimuth: float | None = None,
    pixel_size: float | None = None,
) -> dict[str, np.ndarray]:
    """Boolean ``cloud``, ``snow``, ``shadow`` and ``valid`` maps of a ``[band, y, x]`` image."""
    b = _pick(image, bands)
    missing = [k for k in ("blue", "green", "red", "nir") if k not in b]
    if missing:
        from climdl.errors import DataError

        raise DataError(
            f"the threshold test needs at least blue, green, red and nir bands; "
            f"missing {', '.join(missing)} among {[x.name for x in bands]}."
        )
    valid = np.all(np.isfinite(image), axis=0)
    blue, green, red, nir = (np.nan_to_num(b[k]) for k in ("blue", "green", "red", "nir"))
    swir1 = np.nan_to_num(b["swir16"]) if "swir16" in b else None
    swir2 = np.nan_to_num(b["swir22"]) if "swir22" in b else None
    bt = np.nan_to_num(b["tir"] - 273.15, nan=20.0) if "tir" in b else None  # degC
    eps = 1e-6
    ndvi = (nir - red) / (nir + red + eps)
    ndsi = (green - swir1) / (green + swir1 + eps) if swir1 is not None else np.zeros_like(nir)
    mean_vis = (blue + green + red) / 3.0
    whiteness = (np.abs(blue - mean_vis) + np.abs(green - mean_vis) + np.abs(red - mean_vis)) / (
        mean_vis + eps
    )
    basic = (ndsi < 0.8) & (ndvi < 0.8)
    if swir2 is not None:
        basic &= swir2 > 0.03
    if bt is not None:
        basic &= bt < 27.0
    pcp = basic & (whiteness < 0.7) & (blue - 0.5 * red - 0.08 > 0)
    if swir1 is not None:
        pcp &= nir / (swir1 + eps) > 0.75
    water = ((ndvi < 0.01) & (nir < 0.11)) | ((ndvi < 0.1) & (nir < 0.05))
    water &= valid

    # water: temperature and brightness probabilities against clear-sky water
    bright = np.clip((swir1 if swir1 is not None else nir) / 0.11, 0.0, 1.0)
    if bt is not None:
        clear_water = water & ~pcp & ((swir2 < 0.03) if swir2 is not None else True)
        t_water = _pct(bt[clear_water], 82.5, 20.0)
        w_prob = np.clip((t_water - bt) / 4.0, 0.0, None) * bright
    else:
        w_prob = bright
    # land: temperature and spectral-variability probabilities against clear land
    clear_land = valid & ~pcp & ~water
    variability = 1.0 - np.maximum(np.maximum(np.abs(ndsi), np.abs(ndvi)), whiteness)
    if bt is not None:
        t_low = _pct(bt[clear_land], 17.5, 10.0)
        t_high = _pct(bt[clear_land], 82.5, 25.0)
        t_prob = (t_high + 4.0 - bt) / (t_high + 4.0 - (t_low - 4.0))
        l_prob = t_prob * variability
    else:
        t_low = -np.inf
        l_prob = variability
    l_thr = _pct(l_prob[clear_land], 82.5, 0.5) + 0.2
    cloud = (pcp & water & (w_prob > 0.5)) | (pcp & ~water & (l_prob > l_thr))
    cloud |= (l_prob > 0.99) & ~water
    if bt is not None:
        cloud |= bt < t_low - 35.0
    cloud &= valid

    snow = (ndsi > 0.15) & (nir > 0.11) & (green > 0.1) & valid & ~cloud
    if bt is not None:
        snow &= bt < 3.8
    if swir1 is None:
        snow[:] = False

    # shadows: dark NIR pits where the clouds project along the sun direction
    pits = (ndimage.grey_closing(nir, size=(15, 15)) - nir > 0.02) & valid & ~cloud & ~water
    shadow = pits
    if sun_zenith is not None and sun_azimuth is not None and pixel_size and cloud.any():
        reach = np.zeros_like(cloud)
        tz = np.tan(np.radians(sun_zenith))
        for height in np.arange(500.0, 12001.0, 500.0):
            d = height * tz / pixel_size
            dr = round(np.cos(np.radians(sun_azimuth)) * d)
            dc = round(-np.sin(np.radians(sun_azimuth)) * d)
            reach |= _shift(cloud, dr, dc)
        shadow = pits & reach
    elif not cloud.any():
        shadow = np.zeros_like(pits)
    return {"cloud": cloud, "snow": snow & ~shadow, "shadow": shadow, "valid": valid}


def _shift(a: np.ndarray, dr: int, dc: int) -> np.ndarray:
    """``a`` moved by ``dr`` rows and ``dc`` columns, False where nothing moved in."""
    out = np.zeros_like(a)
    h, w = a.shape
    if abs(dr) >= h or abs(dc) >= w:
        return out
    src = a[max(0, -dr) : h - max(0, dr), max(0, -dc) : w - max(0, dc)]
    out[max(0, dr) : max(0, dr) + src.shape[0], max(0, dc) : max(0, dc) + src.shape[1]] = src
    return out


def threshold_labels(
    image: np.ndarray,
    bands: Sequence[Band],
    classes: Sequence[str],
    attrs: Mapping[str, object] | None = None,
) -> np.ndarray:
    """The baseline's label map in the scene's label set (``NODATA`` where there are no data).

    Cloud maps to ``cloud`` (Fmask does not tell thin from thick cloud), shadow to
    ``cloud_shadow`` and snow to ``snow`` when the label set has them. ``attrs`` may carry the
    scene's ``sun_zenith_angle``, ``sun_azimuth_angle`` and ``pixel_size_m`` for the shadows.
    """
    attrs = attrs or {}

    def num(key: str) -> float | None:
        v = attrs.get(key)
        return float(v) if isinstance(v, int | float | np.number) else None

    res = fmask_like(
        image, bands, num("sun_zenith_angle"), num("sun_azimuth_angle"), num("pixel_size_m")
    )
    out = np.full(image.shape[1:], classes.index("clear") if "clear" in classes else 0, np.uint8)
    for key, name in (("snow", "snow"), ("shadow", "cloud_shadow"), ("cloud", "cloud")):
        if name in classes:
            out[res[key]] = classes.index(name)
    out[~res["valid"]] = NODATA
    return out
