"""Synthetic fine-scale orography for the embedded sample.

Ridges follow the real mountain ranges of each domain (crude polylines in lat/lon: the Alps arc,
Pyrenees, Apennines, Dinarides, Massif Central; the Drakensberg escarpment, the interior plateau
and the Cape Fold Belt) with fractal roughness on top. It is plausible, not real: the benchmark's
own ``Static_fields.nc`` holds the model's true orography. Deterministic per domain, independent
of the sample seed: a domain has one orography.
"""

from __future__ import annotations

import itertools

import numpy as np

# (height m, half-width km, [(lat, lon), ...])
_RIDGES: dict[str, list[tuple[float, float, list[tuple[float, float]]]]] = {
    "ALPS": [
        (
            2900.0,
            55.0,
            [
                (44.1, 7.2),
                (45.2, 6.7),
                (46.0, 7.4),
                (46.4, 8.6),
                (46.6, 10.0),
                (47.0, 11.6),
                (47.1, 13.2),
                (47.3, 14.8),
                (47.6, 16.0),
            ],
        ),
        (2300.0, 35.0, [(42.8, -0.6), (42.7, 0.9), (42.5, 2.4)]),
        (
            1700.0,
            35.0,
            [
                (44.3, 8.4),
                (44.2, 10.2),
                (43.4, 11.9),
                (42.3, 13.4),
                (41.0, 15.0),
                (39.8, 15.9),
                (38.6, 16.2),
            ],
        ),
        (
            1700.0,
            55.0,
            [(46.1, 14.4), (44.9, 15.6), (43.8, 17.0), (42.7, 18.9), (41.2, 20.4), (39.8, 21.2)],
        ),
        (1200.0, 80.0, [(44.6, 2.6), (45.6, 2.9)]),
        (1300.0, 60.0, [(48.0, 7.1), (48.9, 8.2)]),
        (1500.0, 70.0, [(47.9, 19.8), (48.8, 22.2), (49.5, 20.0)]),
    ],
    "SA": [
        (
            2600.0,
            45.0,
            [
                (-31.6, 26.8),
                (-30.4, 28.3),
                (-29.3, 29.4),
                (-28.0, 29.6),
                (-26.4, 30.3),
                (-24.8, 30.7),
                (-23.0, 30.4),
            ],
        ),
        (1500.0, 35.0, [(-33.9, 19.3), (-33.5, 20.9), (-33.5, 22.8), (-33.7, 24.6), (-33.4, 26.0)]),
        (1400.0, 60.0, [(-25.8, 27.6), (-24.3, 29.0)]),
    ],
}

_EARTH_RADIUS_KM = 6371.229


def _distance_to_polyline_km(
    lat: np.ndarray, lon: np.ndarray, line: list[tuple[float, float]]
) -> np.ndarray:
    """Distance (km, local equirectangular) from every point to a polyline of (lat, lon) vertices."""
    lat0 = np.deg2rad(np.mean([p[0] for p in line]))
    px = _EARTH_RADIUS_KM * np.cos(lat0) * np.deg2rad(lon)
    py = _EARTH_RADIUS_KM * np.deg2rad(lat)
    best = np.full(lat.shape, np.inf)
    for (la0, lo0), (la1, lo1) in itertools.pairwise(line):
        ax, ay = (
            _EARTH_RADIUS_KM * np.cos(lat0) * np.deg2rad(lo0),
            _EARTH_RADIUS_KM * np.deg2rad(la0),
        )
        bx, by = (
            _EARTH_RADIUS_KM * np.cos(lat0) * np.deg2rad(lo1),
            _EARTH_RADIUS_KM * np.deg2rad(la1),
        )
        dx, dy = bx - ax, by - ay
        t = np.clip(((px - ax) * dx + (py - ay) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
        best = np.minimum(best, np.hypot(px - (ax + t * dx), py - (ay + t * dy)))
    return best


def _fractal_noise(
    shape: tuple[int, int], rng: np.random.Generator, slope: float = 2.2
) -> np.ndarray:
    """Unit-variance Gaussian noise with a k^-slope power spectrum (rough terrain)."""
    ky = np.fft.fftfreq(shape[0])[:, None]
    kx = np.fft.rfftfreq(shape[1])[None, :]
    k = np.hypot(kx, ky)
    k[0, 0] = np.inf
    spec = (rng.standard_normal(k.shape) + 1j * rng.standard_normal(k.shape)) * k ** (-slope / 2)
    field = np.fft.irfft2(spec, s=shape)
    return (field - field.mean()) / field.std()


def synthetic_orography(domain: str, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Surface altitude (m, >= 0) on 2-D ``lat``/``lon`` arrays of a domain's target grid."""
    key = domain.upper()
    rng = np.random.default_rng(sum(map(ord, key)) + 20231751)
    height = np.zeros(lat.shape)
    for top, width, line in _RIDGES[key]:
        d = _distance_to_polyline_km(lat, lon, line)
        height = np.maximum(height, top * np.exp(-0.5 * (d / width) ** 2))
    if key == "SA":
        # the interior plateau west of the escarpment, falling to the coastal plain in the east
        plateau = 1250.0 / (1.0 + np.exp((lon - (29.8 + 0.25 * (lat + 28.0))) / 0.35))
        height = np.maximum(height, plateau * (lat > -33.0))
    else:
        height = height + 150.0  # continental base level
    rough = _fractal_noise(lat.shape, rng)
    height = height * (1.0 + 0.18 * rough) + 60.0 * rough
    return np.clip(height, 0.0, None).astype(np.float32)
