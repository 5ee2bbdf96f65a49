"""Labelled multispectral scenes with procedural clouds, cloud shadows and bright confusers.

One scene (:func:`make_scene`) is built in four steps, all from one random generator, so the
same seed gives the same scene:

1. **Surface.** A location is drawn for a theme (ocean, vegetation, desert, arid, snow, coast);
   the Blue Marble mosaic around it (:mod:`climdl.clouds.surface`) is unmixed into surface-type
   fractions, textured with fractal noise, and sometimes given seasonal snow. Surface spectra
   give the reflectance of six reflective bands (Landsat 8 OLI: blue .. swir22); a skin
   temperature from latitude and surface type gives the thermal band (TIRS 10.9 um).
2. **Clouds** as optical-depth fields on a canvas larger than the scene (so shadows of clouds
   outside the scene can fall inside): *convective* (rough fractal noise, small sharp cells,
   optical depth 20-80, cold tops 210-250 K, 6-12 km high), *stratiform* (smooth sheets, depth
   5-30, tops 4-15 K colder than the surface, 0.8-3 km) and *thin cirrus* (streaky anisotropic
   noise, depth 0.5-4, ice tops 205-235 K, 8-13 km, absorbing in the SWIR).
3. **Radiative transfer**, simple but physical: two-stream cloud reflectance
   ``R = (1-g)tau / (2 + (1-g)tau)`` with band-dependent absorption (water and ice clouds are
   darker in the SWIR), adding of layers over the surface, a Rayleigh path term; emissivity
   ``1 - exp(-tau/2)`` mixes cloud-top and surface temperatures in the thermal band.
   **Shadows**: each layer's optical depth shifted by ``height * tan(sun zenith)`` away from the
   sun dims the direct beam on the surface, leaving the band's diffuse-sky fraction.
4. **Labels**, exact by construction from the fields: *cloud* where the total optical depth is at
   least :data:`TAU_CLOUD`, *thin_cloud* from :data:`TAU_THIN`, *cloud_shadow* where the direct
   beam falls below :data:`SHADOW_LIGHT` (and no cloud is above), *snow* where snow covers at
   least half the pixel, *clear* elsewhere; :data:`~climdl.clouds.scene.NODATA` in the no-data
   margin some scenes have (like Landsat's black borders).

**Sensors.** ``sensor="landsat"`` (the default) gives the Landsat 8 bands above;
``sensor="sentinel2"`` the same scene (same surface, clouds, shadows and labels from the same
seed) seen by Sentinel-2 MSI (:data:`~climdl.clouds.scene.SENTINEL2_SAMPLE_BANDS`: blue, green,
red, nir at 490, 560, 665, 842 nm, cirrus 1375 nm, swir16 1610 nm, swir22 2190 nm; no thermal
band). The per-band tables (surface spectra, cloud absorption, Rayleigh path, diffuse sky) are
given at the Landsat wavelengths and evaluated at the MSI ones by linear interpolation in
wavelength (:func:`at_wavelengths`); the cirrus band sees through the water vapour only from
high up: every contribution from height ``z`` is weighted by the two-way water-vapour
transmittance ``exp(-WV_DEPTH exp(-z / WV_SCALE_HEIGHT))`` (:func:`water_vapour_transmittance`:
~2 % from the ground, ~20-40 % from a stratiform top, > 90 % from cirrus), which is why real
cirrus masks use it. The Sentinel-2 noise comes from a generator spawned from the scene's, so
the Landsat scenes of a seed are exactly those climdl made before the sensor existed.

Bright deserts and snow are as bright as clouds in the visible, stratiform tops are nearly as
warm as the ground, and cirrus barely brightens it: brightness thresholds fail and the spectral
shape (NDSI, SWIR, thermal) and texture are needed. The physics is plausible, not calibrated;
no claim about real imagery rests on these scenes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pyproj import CRS, Transformer

from climdl.clouds import surface as S
from climdl.clouds.scene import CLASSES, LANDSAT_BANDS, NODATA, SENTINEL2_SAMPLE_BANDS, Band

TAU_CLOUD = 4.0
"""Total optical depth from which a pixel is labelled (thick) cloud."""
TAU_THIN = 0.4
"""Total optical depth from which a pixel is labelled thin cloud."""
SHADOW_LIGHT = 0.5
"""Direct-beam fraction below which a cloud-free pixel is labelled cloud shadow."""
G_ASYM = 0.85  # cloud droplet asymmetry parameter
# Band factors of cloud reflectance (blue .. swir22): liquid water and ice absorb in the SWIR.
WATER_CLOUD = np.array([1.0, 1.0, 1.0, 0.98, 0.80, 0.55], dtype=np.float32)
ICE_CLOUD = np.array([1.0, 1.0, 1.0, 0.97, 0.50, 0.38], dtype=np.float32)
RAYLEIGH = np.array([0.05, 0.025, 0.012, 0.004, 0.001, 0.0], dtype=np.float32)
DIFFUSE_SKY = np.array([0.30, 0.22, 0.17, 0.10, 0.06, 0.05], dtype=np.float32)
WV_DEPTH = 4.0
"""Water-vapour optical depth (two-way) of the whole column in the 1.375 um cirrus band."""
WV_SCALE_HEIGHT = 2000.0
"""Scale height (m) of atmospheric water vapour."""

Sensor = Literal["landsat", "sentinel2"]
SENSORS: tuple[Sensor, ...] = ("landsat", "sentinel2")
"""The sensors whose bands the generator makes."""
CIRRUS_UM = (1.3, 1.45)
"""Wavelengths (um) of the water-vapour absorption band that the cirrus channel sits in."""


def sensor_bands(sensor: Sensor) -> tuple[Band, ...]:
    """The bands of the synthetic scenes of ``sensor``, in order."""
    if sensor == "landsat":
        return LANDSAT_BANDS
    if sensor == "sentinel2":
        return SENTINEL2_SAMPLE_BANDS
    raise ValueError(f"unknown sensor {sensor!r}; one of {', '.join(SENSORS)}")


def at_wavelengths(table: np.ndarray, wavelengths: np.ndarray) -> np.ndarray:
    """A per-band table ``[..., 6]`` given at the Landsat reflective wavelengths (blue ..
    swir22), linearly interpolated in wavelength (um) to ``wavelengths`` (held constant beyond
    the ends): the spectra are smooth between the Landsat bands at the scale of the MSI shifts."""
    ref = np.array([b.wavelength for b in LANDSAT_BANDS if not b.thermal])
    flat = table.reshape(-1, table.shape[-1])
    out = np.stack([np.interp(wavelengths, ref, row) for row in flat])
    return out.reshape(*table.shape[:-1], len(wavelengths)).astype(np.float32)


def water_vapour_transmittance(height: np.ndarray | float) -> np.ndarray:
    """Two-way transmittance of the water vapour above ``height`` (m) in the cirrus band."""
    return np.asarray(np.exp(-WV_DEPTH * np.exp(-np.asarray(height) / WV_SCALE_HEIGHT)))


@dataclass
class SyntheticScene:
    """The arrays of one scene: image ``[band, y, x]``, label ``[y, x]``, coordinates, attrs."""

    image: np.ndarray
    mask: np.ndarray
    x: np.ndarray
    y: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    crs: CRS
    attrs: dict[str, Any] = field(default_factory=dict)


def fractal(
    shape: tuple[int, int],
    beta: float,
    rng: np.random.Generator,
    aniso: float = 1.0,
    angle: float = 0.0,
) -> np.ndarray:
    """Standardised Gaussian noise with a ``k**-beta`` power spectrum (``aniso > 1``: streaks
    along ``angle``); the texture of clouds and surfaces."""
    h, w = shape
    ky = np.fft.fftfreq(h)[:, None]
    kx = np.fft.rfftfreq(w)[None, :]
    u = kx * np.cos(angle) + ky * np.sin(angle)
    v = -kx * np.sin(angle) + ky * np.cos(angle)
    k = np.sqrt(u**2 + (aniso * v) ** 2) + 1.0 / max(h, w)
    spec = np.fft.rfft2(rng.standard_normal((h, w))) * k ** (-beta / 2.0)
    f = np.fft.irfft2(spec, s=(h, w))
    return ((f - f.mean()) / (f.std() + 1e-12)).astype(np.float32)


def two_stream(tau: np.ndarray) -> np.ndarray:
    """Reflectance of a non-absorbing cloud layer of optical depth ``tau`` (two-stream)."""
    t = (1.0 - G_ASYM) * tau
    out: np.ndarray = t / (2.0 + t)
    return out


def _layer(noise: np.ndarray, cover: float, tau_max: float, edge: float) -> np.ndarray:
    """Optical depth: 0 outside the ``cover`` fraction of ``noise``, rising to ``tau_max``."""
    thr = np.quantile(noise, 1.0 - cover)
    t = np.clip((noise - thr) / edge, 0.0, None)
    out: np.ndarray = (tau_max * (1.0 - np.exp(-t))).astype(np.float32)
    return out


def _add_layer(r_below: np.ndarray, r_cloud: np.ndarray) -> np.ndarray:
    """Reflectance of a cloud layer over a Lambertian background (adding method)."""
    t = 1.0 - r_cloud
    out: np.ndarray = r_cloud + t * t * r_below / (1.0 - r_cloud * r_below)
    return out


def make_scene(
    seed: int | np.random.SeedSequence,
    size: tuple[int, int] = (256, 256),
    pixel_size: float | None = None,
    theme: S.Theme | None = None,
    sensor: Sensor = "landsat",
) -> SyntheticScene:
    """One labelled scene (see the module docstring); ``pixel_size`` in metres; ``sensor``:
    whose bands (:func:`sensor_bands`) the image holds."""
    bands = sensor_bands(sensor)
    rng = np.random.default_rng(seed)
    sensor_rng = rng.spawn(1)[0] if sensor != "landsat" else None  # leaves rng's stream as is
    h, w = size
    theme = theme or S.THEMES[int(rng.choice(len(S.THEMES), p=S.THEME_WEIGHTS))]
    px = float(pixel_size if pixel_size is not None else rng.uniform(400.0, 1200.0))
    lat0, lon0 = S.pick_location(theme, rng)
    sza = float(rng.uniform(25.0, 65.0))
    saa = float(rng.uniform(0.0, 360.0))
    mu0 = float(np.cos(np.radians(sza)))

    # ------------------------------------------------------------------ grid
    crs = CRS.from_proj4(f"+proj=aeqd +lat_0={lat0:.5f} +lon_0={lon0:.5f} +datum=WGS84 +units=m")
    x = ((np.arange(w) - (w - 1) / 2.0) * px).astype(np.float64)
    y = (((h - 1) / 2.0 - np.arange(h)) * px).astype(np.float64)
    xx, yy = np.meshgrid(x, y)
    lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(xx, yy)
    lon = ((np.asarray(lon) + 180.0) % 360.0) - 180.0
    lat = np.asarray(lat)

    # ------------------------------------------------------------------ surface
    texture = fractal((h, w), 2.6, rng)
    if S.blue_marble() is not None:
        frac = S.unmix(S.sample_colours(lat, lon))
    else:
        frac = S.procedural_fractions(theme, (h, w), rng, texture)
    land = 1.0 - frac[..., 0]
    # sub-mosaic texture: fractal reweighting of the land types below the 7 km mosaic pixels
    weights = np.exp(0.35 * np.stack([fractal((h, w), 2.4, rng) for _ in range(5)], -1))
    land_frac = frac[..., 1:] * weights
    land_frac *= (land / np.maximum(land_frac.sum(-1), 1e-6))[..., None]
    frac = np.concatenate([frac[..., :1], land_frac], -1)
    snowy_lat = abs(lat0) > 40.0
    seasonal = theme == "snow" or (snowy_lat and theme != "ocean" and rng.random() < 0.45)
    if seasonal:  # patchy seasonal snow over land (mountains, plains)
        snow_noise = fractal((h, w), 3.0, rng)
        snow_cover = np.clip(
            (snow_noise - np.quantile(snow_noise, rng.uniform(0.2, 0.7))) * 2.0, 0.0, 1.0
        )
        add = snow_cover * frac[..., 1:5].sum(-1)
        frac[..., 1:5] *= (1.0 - snow_cover)[..., None]
        frac[..., 5] += add
    refl_s = np.einsum("yxk,kb->byx", frac, S.SURFACE_SPECTRA)
    refl_s *= 1.0 + 0.06 * texture[None]
    t_ref = 302.0 - 0.5 * max(abs(lat0) - 12.0, 0.0) + rng.normal(0.0, 3.0)
    t_k = t_ref + S.SURFACE_DT
    t_k[0] = max(t_ref - 3.0, 271.5)  # open water does not freeze over below -1.5 degC here
    t_k[5] = min(t_ref - 6.0, 270.0)  # snow stays below freezing
    t_s = np.einsum("yxk,k->yx", frac, t_k) + 1.2 * fractal((h, w), 2.2, rng)

    # ------------------------------------------------------------------ clouds
    heights = {
        "convective": rng.uniform(6e3, 12e3),
        "stratiform": rng.uniform(0.8e3, 3e3),
        "cirrus": rng.uniform(8e3, 13e3),
    }
    pad = int(np.ceil(max(heights.values()) * np.tan(np.radians(sza)) / px)) + 2
    big = (h + 2 * pad, w + 2 * pad)
    clear_scene = rng.random() < 0.12
    tau: dict[str, np.ndarray] = {}
    t_top: dict[str, np.ndarray | float] = {}
    zero = np.zeros(big, dtype=np.float32)
    if not clear_scene and rng.random() < 0.5:
        tau_max = rng.uniform(20.0, 80.0)
        tau["convective"] = _layer(fractal(big, 3.0, rng), rng.uniform(0.05, 0.4), tau_max, 0.25)
        base = min(t_ref - 30.0, 250.0) - rng.uniform(0.0, 25.0)
        t_top["convective"] = base - 12.0 * tau["convective"] / tau_max
    if not clear_scene and rng.random() < 0.45:
        tau["stratiform"] = _layer(
            fractal(big, 3.6, rng), rng.uniform(0.1, 0.6), rng.uniform(5.0, 30.0), 0.6
        )
        t_top["stratiform"] = t_ref - rng.uniform(4.0, 15.0)
    if not clear_scene and rng.random() < 0.45:
        streaks = fractal(
            big, 3.0, rng, aniso=float(rng.uniform(4.0, 10.0)), angle=float(rng.uniform(0, np.pi))
        )
        tau["cirrus"] = _layer(streaks, rng.uniform(0.1, 0.5), rng.uniform(0.5, 4.0), 0.8)
        t_top["cirrus"] = rng.uniform(205.0, 235.0)
    if not clear_scene and not tau:  # at least one layer in a cloudy scene
        tau["stratiform"] = _layer(fractal(big, 3.6, rng), rng.uniform(0.1, 0.5), 15.0, 0.6)
        t_top["stratiform"] = t_ref - rng.uniform(4.0, 15.0)

    # shadows: each layer's optical depth shifted away from the sun, cropped to the scene
    drow = np.cos(np.radians(saa)) * np.tan(np.radians(sza)) / px
    dcol = -np.sin(np.radians(saa)) * np.tan(np.radians(sza)) / px
    tau_shadow = np.zeros((h, w), dtype=np.float32)
    for name, field_ in tau.items():
        dr, dc = round(drow * heights[name]), round(dcol * heights[name])
        tau_shadow += field_[pad - dr : pad - dr + h, pad - dc : pad - dc + w]
    crop = (slice(pad, pad + h), slice(pad, pad + w))
    tau_w = (tau.get("convective", zero) + tau.get("stratiform", zero))[crop]
    tau_i = tau.get("cirrus", zero)[crop]
    direct = np.exp(-(1.0 - G_ASYM) * tau_shadow / mu0)

    # ------------------------------------------------------------------ radiative transfer
    illum = DIFFUSE_SKY[:, None, None] + (1.0 - DIFFUSE_SKY[:, None, None]) * direct[None]
    refl = refl_s * illum
    refl = _add_layer(refl, WATER_CLOUD[:, None, None] * two_stream(tau_w)[None])
    refl = _add_layer(refl, ICE_CLOUD[:, None, None] * two_stream(tau_i)[None])
    refl = refl + RAYLEIGH[:, None, None] * (0.5 + 0.5 / mu0)
    refl = refl * (1.0 + 0.01 * rng.standard_normal(refl.shape)) + 0.003 * rng.standard_normal(
        refl.shape
    )
    bt = t_s - 4.0 * (1.0 - direct)
    if tau_w.any():
        conv = tau.get("convective", zero)[crop]
        strat = tau.get("stratiform", zero)[crop]
        tc = np.asarray(t_top.get("convective", 0.0))
        tc = tc[crop] if tc.ndim == 2 else tc
        tw = (conv * tc + strat * float(np.asarray(t_top.get("stratiform", 0.0)))) / np.maximum(
            conv + strat, 1e-6
        )
        eps_w = 1.0 - np.exp(-tau_w / 2.0)
        bt = eps_w * tw + (1.0 - eps_w) * bt
    if tau_i.any():
        eps_i = 1.0 - np.exp(-tau_i / 2.0)
        bt = eps_i * float(np.asarray(t_top["cirrus"])) + (1.0 - eps_i) * bt
    bt = bt + 0.3 * rng.standard_normal(bt.shape)
    image = np.concatenate([refl, bt[None]], axis=0).astype(np.float32)
    if sensor_rng is not None:  # the same scene through another sensor's bands
        image = _other_sensor(
            bands, sensor_rng, frac, texture, direct, tau, heights, crop, mu0
        ).astype(np.float32)

    # ------------------------------------------------------------------ labels
    tau_tot = tau_w + tau_i
    mask = np.zeros((h, w), dtype=np.uint8)
    mask[frac[..., 5] >= 0.5] = CLASSES.index("snow")
    light = DIFFUSE_SKY[2] + (1.0 - DIFFUSE_SKY[2]) * direct
    mask[light < SHADOW_LIGHT] = CLASSES.index("cloud_shadow")
    mask[tau_tot >= TAU_THIN] = CLASSES.index("thin_cloud")
    mask[tau_tot >= TAU_CLOUD] = CLASSES.index("cloud")
    if rng.random() < 0.25:  # a no-data margin with a slanted edge, as in Landsat scenes
        ang = rng.uniform(0, 2 * np.pi)
        rr, cc = np.mgrid[0:h, 0:w]
        proj = (rr - h / 2) * np.sin(ang) + (cc - w / 2) * np.cos(ang)
        out = proj > np.quantile(proj, 1.0 - rng.uniform(0.05, 0.2))
        image[:, out] = np.nan
        mask[out] = NODATA

    valid = mask != NODATA
    attrs: dict[str, Any] = {
        "title": "climdl synthetic multispectral scene with labelled clouds",
        "source": "climdl.clouds.synthetic: procedural clouds over a real global surface mosaic",
        "surface_source": S.surface_source(),
        "theme": theme,
        "latitude_of_centre": round(lat0, 4),
        "longitude_of_centre": round(lon0, 4),
        "pixel_size_m": round(px, 2),
        "sun_zenith_angle": round(sza, 3),
        "sun_azimuth_angle": round(saa, 3),
        "cloud_layers": " ".join(tau) or "none",
        "cloud_fraction": round(
            float(np.isin(mask[valid], (1, 2)).mean()) if valid.any() else 0.0, 4
        ),
        "comment": "Plausible physics, not calibrated: no claim about real imagery rests on it.",
    }
    if sensor != "landsat":
        attrs["sensor"] = "Sentinel-2 MSI (synthetic)"
    return SyntheticScene(image=image, mask=mask, x=x, y=y, lat=lat, lon=lon, crs=crs, attrs=attrs)


def _other_sensor(
    bands: tuple[Band, ...],
    rng: np.random.Generator,
    frac: np.ndarray,
    texture: np.ndarray,
    direct: np.ndarray,
    tau: dict[str, np.ndarray],
    heights: dict[str, float],
    crop: tuple[slice, slice],
    mu0: float,
) -> np.ndarray:
    """TOA reflectance ``[band, y, x]`` of the scene's fields in ``bands`` (no thermal band):
    the Landsat radiative transfer with each per-band table evaluated at the bands'
    wavelengths, and in the cirrus band each layer and the surface dimmed by the water vapour
    above them (:func:`water_vapour_transmittance`); the layers are added top-down by height."""
    wl = np.array([b.wavelength for b in bands])
    cirrus = ((wl >= CIRRUS_UM[0]) & (wl <= CIRRUS_UM[1]))[:, None, None]
    spectra = at_wavelengths(S.SURFACE_SPECTRA, wl)
    diffuse = at_wavelengths(DIFFUSE_SKY, wl)[:, None, None]
    water, ice = (at_wavelengths(t, wl)[:, None, None] for t in (WATER_CLOUD, ICE_CLOUD))
    rayleigh = at_wavelengths(RAYLEIGH, wl)[:, None, None]
    refl_s = np.einsum("yxk,kb->byx", frac, spectra) * (1.0 + 0.06 * texture[None])
    refl = refl_s * (diffuse + (1.0 - diffuse) * direct[None])
    refl = np.where(cirrus, refl * water_vapour_transmittance(0.0), refl)
    for name in sorted(tau, key=lambda n: heights[n]):  # bottom-up: each layer over what is below
        r_cloud = (ice if name == "cirrus" else water) * two_stream(tau[name][crop])[None]
        t_wv = water_vapour_transmittance(heights[name])
        r_cloud = np.where(cirrus, r_cloud * t_wv, r_cloud)
        refl = _add_layer(refl, r_cloud)
    refl = refl + np.where(cirrus, 0.0, rayleigh * (0.5 + 0.5 / mu0))
    noise = 1.0 + 0.01 * rng.standard_normal(refl.shape)
    out: np.ndarray = refl * noise + 0.003 * rng.standard_normal(refl.shape)
    return out


def band_names(sensor: Sensor = "landsat") -> list[str]:
    """Names of the synthetic scenes' bands of ``sensor``, in order."""
    return [b.name for b in sensor_bands(sensor)]
