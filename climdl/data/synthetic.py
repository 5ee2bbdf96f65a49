"""A small synthetic regional climate with the physics a downscaling emulator must learn.

The large-scale atmosphere is a sum of travelling-wave modes whose amplitudes follow AR(1)
processes day to day: temperature, a geopotential pattern with geostrophic winds, and relative
humidity, on three pressure levels, over a seasonal cycle and a warming trend. Because every
field is an analytic function of (lat, lon, day), it can be evaluated on a fine 0.5-degree
lat/lon grid (the "fine atmospheric state", whose area-conservative block means are the coarse
"perfect" predictors) and at the RCM's own target points, where the surface fields add what
the coarse grid cannot see:

* tasmax = T850 + lapse rate x (height of 850 hPa - orography) + a clear-sky diurnal term
  + stronger warming at altitude (snow-albedo) + small-scale weather noise;
* pr = wet-day occurrence and a heavy-tailed (log-normal) intensity, driven by mid-level
  humidity, Clausius-Clapeyron moisture and orographic uplift (wind . grad(orography)), so
  windward slopes are wetter than lee slopes.

Each calendar year is generated from its own random stream with a one-year spin-up, so any
year is reproducible on its own and overlapping files (ESD and hist+future training, end
century test) hold identical days, as they would from one RCM run.

Rotated pole. ``EUR12-ROT`` is a 128 x 128 window around the Alps of the EURO-CORDEX EUR-11
rotated-pole grid (:func:`~climdl.data.grids.rotated_target_grid`); its climate is ALPS's (same
orography, climatology and 2-degree predictor box), evaluated at the rotated grid's true lat/lon.

Sizes. The default target grid is the benchmark's own 128 x 128 grid. For domain parallelism,
``size`` 256 or 512 widens the ALPS domain (:func:`~climdl.data.sample_grids.wide_target_grid`): the same 12.5 km EUR-11
Lambert projection and spacing, centred where the benchmark grid is, 3200 km or 6400 km a side
(512 spans 13-72 N, and 52 W-74 E at its northern corners).
Its coarse predictor grid (:func:`~climdl.data.sample_grids.covering_coarse_grid`) is the 2-degree lat/lon box that covers
the Lambert domain with one cell to spare (18 x 29 cells for 256, 32 x 67 for 512). The physics
is the same everywhere: every field is an analytic function of position and day, so it stays
smooth and plausible on the wider domain, but nothing there is realistic far from the Alps: the
orography only has the ridges of the benchmark domain's neighbourhood (the rest is a rough
continental plain, no sea), the temperature climatology keeps its linear meridional gradient
(about 293 K at 850 hPa at 13 N and 258 K at 72 N), and the Coriolis parameter is the centre's.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from functools import cached_property

import cftime
import numpy as np
import torch
import torch.nn.functional as F
from scipy.signal import lfilter

from climdl.data.grids import DomainSpec, coarse_grid, domain_spec, target_grid
from climdl.data.orography import synthetic_orography
from climdl.data.sample_grids import (
    BENCHMARK_SIZE,
    covering_coarse_grid,
    sample_domain,
    sample_domain_name,
    wide_target_grid,
)

LEVELS = (500, 700, 850)
G0 = 9.80665
OMEGA = 7.2921e-5
R_KM = 6371.229
FINE_FACTOR = 4  # fine atmospheric cells per coarse cell, per direction (2 deg / 4 = 0.5 deg)

# per level: base height (m), wave amplitude (m), mean meridional height gradient (m/deg),
# temperature offset from 850 hPa (K), anomaly scale, warming scale, relative-humidity scale
_LEVEL = {
    850: (1460.0, 35.0, 8.0, 0.0, 1.0, 1.0, 1.0),
    700: (3010.0, 45.0, 12.0, -10.5, 1.0, 1.1, 0.9),
    500: (5570.0, 70.0, 18.0, -24.0, 1.1, 1.25, 0.75),
}
_FAMILIES = ("psi", "temp", "t850", "t700", "t500", "rh")
#: cells per side of the target grid: 128 is the benchmark's own grid, 256 and 512 widen it
NOISE_LATTICE = 34
#: values per array in one block of days of the surface fields on grids above 128 x 128 (memory)
_BLOCK_VALUES = 2**23
_PHI = {"psi": 0.80, "temp": 0.90, "t850": 0.75, "t700": 0.75, "t500": 0.75, "rh": 0.70}
N_MODES = 24


@dataclass(frozen=True)
class Run:
    """One GCM -> RCM simulation chain: its weather stream, calendar and climate sensitivity."""

    gcm: str
    calendar: str
    stream: int
    sensitivity: float = 1.0


def warming(year: np.ndarray | float) -> np.ndarray:
    """Global warming (K at 850 hPa) of a high-emission scenario relative to 1961-1970."""
    y = np.clip((np.asarray(year, dtype=float) - 1970.0) / 130.0, 0.0, None)
    return 4.5 * y**1.6


def qsat(t: np.ndarray, p_hpa: float) -> np.ndarray:
    """Saturation specific humidity (kg/kg) over water, Magnus formula."""
    es = 6.112 * np.exp(np.float32(17.67) * (t - np.float32(273.15)) / (t - np.float32(29.65)))
    return 0.622 * es / (p_hpa - 0.378 * es)


def noon_dates(calendar: str, years: list[int]) -> np.ndarray:
    """Daily noon dates of whole calendar years in ``calendar`` (cftime objects)."""
    out: list[cftime.datetime] = []
    for y in years:
        start = cftime.datetime(y, 1, 1, 12, calendar=calendar)
        n = (cftime.datetime(y + 1, 1, 1, 12, calendar=calendar) - start).days
        out.extend(start + datetime.timedelta(days=d) for d in range(n))
    return np.array(out, dtype=object)


class SyntheticClimate:
    """Deterministic synthetic atmosphere and surface climate for one domain and seed.

    Args:
        domain: ``ALPS``, ``SA``, ``EUR12-ROT`` (or a sized name such as ``ALPS512``).
        seed: the random seed.
        size: cells per side of the target grid: 128 (default, the benchmark grid), or 256 and
            512 for the widened ALPS domain (see the module's docstring).

    Attributes:
        name: the sample domain's name, e.g. ``ALPS`` or ``ALPS512`` (its folder and label).
    """

    def __init__(self, domain: str, seed: int = 0, size: int | None = None) -> None:
        base, self.size = sample_domain(domain, size)
        self.spec: DomainSpec = domain_spec(base)
        self.name = sample_domain_name(base, self.size)
        self.seed = int(seed)
        if self.size == BENCHMARK_SIZE:
            self.coarse = coarse_grid(self.spec.name)
            self.target = target_grid(self.spec.name)
        else:
            self.target = wide_target_grid(self.spec.name, self.size)
            self.coarse = covering_coarse_grid(self.target, self.spec.coarse_step)
        lat_c = float(self.coarse.lat.mean())
        lon_c = float(self.coarse.lon.mean())
        self.lat_c, self.lon_c = lat_c, lon_c
        self.f = 2 * OMEGA * np.sin(np.deg2rad(lat_c))
        self.hemi = 1.0 if self.spec.hemisphere == "N" else -1.0
        rng = np.random.default_rng([self.seed, 0])
        # travelling-wave modes: wavelength 1200-5000 km, random direction and phase
        self.k: dict[str, np.ndarray] = {}
        self.phase: dict[str, np.ndarray] = {}
        self.sigma: dict[str, np.ndarray] = {}
        for fam in _FAMILIES:
            lam = np.exp(rng.uniform(np.log(1200.0), np.log(5000.0), N_MODES))
            ang = rng.uniform(0, np.pi, N_MODES)
            kk = 2 * np.pi / lam
            self.k[fam] = np.stack([kk * np.cos(ang), kk * np.sin(ang)], axis=1)
            self.phase[fam] = rng.uniform(0, 2 * np.pi, N_MODES)
            w = lam**1.5
            self.sigma[fam] = np.sqrt(w / w.sum())
        self._cache: dict[tuple[str, str, str], np.ndarray] = {}

    # ----------------------------------------------------------------- grids
    @cached_property
    def fine_lat(self) -> np.ndarray:
        """Cell centres of the fine 0.5-degree atmospheric grid (ascending)."""
        b = self.coarse.lat_bnds.values
        step = (b[0, 1] - b[0, 0]) / FINE_FACTOR
        return b[0, 0] + step * (np.arange(len(self.coarse.lat) * FINE_FACTOR) + 0.5)

    @cached_property
    def fine_lon(self) -> np.ndarray:
        """Cell centres of the fine 0.5-degree atmospheric grid (ascending)."""
        b = self.coarse.lon_bnds.values
        step = (b[0, 1] - b[0, 0]) / FINE_FACTOR
        return b[0, 0] + step * (np.arange(len(self.coarse.lon) * FINE_FACTOR) + 0.5)

    @cached_property
    def orography(self) -> np.ndarray:
        """Surface altitude (m) on the target grid."""
        return synthetic_orography(
            self.spec.physics, self.target.lat.values * np.ones_like(self._tlon), self._tlon
        )

    @cached_property
    def _tlon(self) -> np.ndarray:
        lat, lon = self.target.lat.values, self.target.lon.values
        if lat.ndim == 1:
            return np.broadcast_to(lon[None, :], (lat.size, lon.size)).copy()
        return lon

    @cached_property
    def _tlat(self) -> np.ndarray:
        lat, lon = self.target.lat.values, self.target.lon.values
        if lat.ndim == 1:
            return np.broadcast_to(lat[:, None], (lat.size, lon.size)).copy()
        return lat

    def _xy(self, lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Local east/north coordinates (km) around the domain centre."""
        x = R_KM * np.cos(np.deg2rad(self.lat_c)) * np.deg2rad(lon - self.lon_c)
        y = R_KM * np.deg2rad(lat - self.lat_c)
        return x, y

    def _points(self, where: str) -> tuple[np.ndarray, np.ndarray]:
        """2-D lat/lon of the fine atmospheric grid (``"fine"``) or the target grid (``"target"``)."""
        if where == "fine":
            lat2, lon2 = np.meshgrid(self.fine_lat, self.fine_lon, indexing="ij")
            return lat2, lon2
        return self._tlat, self._tlon

    def _basis(self, where: str, fam: str, deriv: str = "") -> np.ndarray:
        """[2K, points] cos/sin basis of a mode family (or its d/dx, d/dy in 1/km), cached."""
        key = (where, fam, deriv)
        if key not in self._cache:
            self._cache[key] = (
                self._make_basis(*self._points(where), fam, deriv).T.astype(np.float32).copy()
            )
        return self._cache[key]

    def _make_basis(
        self, lat: np.ndarray, lon: np.ndarray, fam: str, deriv: str = ""
    ) -> np.ndarray:
        x, y = self._xy(lat.ravel(), lon.ravel())
        k, ph = self.k[fam], self.phase[fam]
        theta = x[:, None] * k[None, :, 0] + y[:, None] * k[None, :, 1] + ph[None, :]
        c, s = np.cos(theta), np.sin(theta)
        if not deriv:
            return np.concatenate([c, s], axis=1)
        kd = k[:, 0] if deriv == "x" else k[:, 1]
        return np.concatenate([-s * kd, c * kd], axis=1)

    # ----------------------------------------------------------------- time
    def _coefficients(self, run: Run, fam: str, year: int, n_days: int) -> np.ndarray:
        """AR(1) mode amplitudes [n_days, 2K] of one year, after a one-year spin-up."""
        phi = _PHI[fam]
        fam_id = _FAMILIES.index(fam)
        rng_prev = np.random.default_rng([self.seed, run.stream, fam_id, year - 1])
        rng_this = np.random.default_rng([self.seed, run.stream, fam_id, year])
        eps = np.concatenate(
            [
                rng_prev.standard_normal((366, 2 * N_MODES)),
                rng_this.standard_normal((n_days, 2 * N_MODES)),
            ]
        )
        scale = np.concatenate([self.sigma[fam], self.sigma[fam]])
        init = eps[0] * scale
        drive = eps[1:] * scale * np.sqrt(1 - phi**2)
        series = lfilter([1.0], [1.0, -phi], drive, axis=0, zi=(phi * init)[None, :])[0]
        return series[-n_days:]

    def _daily(
        self, run: Run, years: list[int]
    ) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray, np.ndarray]:
        """Dates, mode amplitudes per family, fractional day-of-year and year of each day."""
        dates = noon_dates(run.calendar, years)
        coefs: dict[str, list[np.ndarray]] = {f: [] for f in _FAMILIES}
        doy, yr = [], []
        for y in years:
            n = sum(1 for d in dates if d.year == y)
            for fam in _FAMILIES:
                coefs[fam].append(self._coefficients(run, fam, y, n))
            doy.append(np.arange(n) / n)
            yr.append(np.full(n, y, dtype=float) + np.arange(n) / n)
        return (
            dates,
            {f: np.concatenate(v) for f, v in coefs.items()},
            np.concatenate(doy),
            np.concatenate(yr),
        )

    # ----------------------------------------------------------------- physics
    def _season(self, doy: np.ndarray) -> np.ndarray:
        """+1 at the peak of summer, -1 in winter."""
        peak = 200.0 / 365.0 if self.spec.hemisphere == "N" else 15.0 / 365.0
        return np.cos(2 * np.pi * (doy - peak))

    def atmosphere(
        self,
        run: Run,
        years: list[int],
        where: str = "fine",
        daily: tuple | None = None,
        levels: tuple[int, ...] = (850, 700, 500),
    ) -> dict[str, np.ndarray]:
        """All 15 predictors (+ rh, dT) on the fine grid or at the target points, for each day.

        Returns arrays of shape [days, ny, nx] in SI units (z m2 s-2, t K, u/v m s-1, q kg/kg).
        """
        dates, A, doy, yr = daily if daily is not None else self._daily(run, years)
        A = {k: v.astype(np.float32) for k, v in A.items()}
        lat, _ = self._points(where)
        shape = (len(dates), *lat.shape)
        season = self._season(doy)[:, None].astype(np.float32)
        dT = (warming(yr) * run.sensitivity)[:, None].astype(np.float32)
        latf = lat.ravel()[None, :].astype(np.float32)
        cfg = {"ALPS": (276.0, -0.6, 9.0), "SA": (285.0, 0.45, 5.0)}[self.spec.physics]
        t850_clim = cfg[0] + cfg[1] * (latf - self.lat_c) + cfg[2] * season
        t_shared = A["temp"] @ self._basis(where, "temp") * 3.0
        psi = A["psi"] @ self._basis(where, "psi")
        psi_dx = A["psi"] @ self._basis(where, "psi", "x")
        psi_dy = A["psi"] @ self._basis(where, "psi", "y")
        rh_anom = A["rh"] @ self._basis(where, "rh")
        moist_season = {"ALPS": -0.25, "SA": 0.45}[self.spec.physics] * season
        rh = 0.12 + 0.83 / (1.0 + np.exp(-(1.2 * rh_anom - 0.8 * psi + moist_season + 0.2)))
        out: dict[str, np.ndarray] = {
            "rh": rh.reshape(shape),
            "dT": np.broadcast_to(dT, rh.shape).reshape(shape),
        }
        t850_anom = None
        for lev in levels:
            zb, zamp, zgrad, toff, tsc, wsc, rhsc = _LEVEL[lev]
            own = A[f"t{lev}"] @ self._basis(where, f"t{lev}") * 1.2
            t_anom = tsc * (t_shared + own)
            t = t850_clim + toff + t_anom + wsc * dT
            if lev == 850:
                t850_anom = t_anom + dT
            thick = 29.3 * np.log(850.0 / lev) * (t850_anom if t850_anom is not None else 0.0)
            zgrad_h = -self.hemi * zgrad
            z_m = zb + zgrad_h * (latf - self.lat_c) + zamp * psi + thick + 15.0 * season
            dzdy = zgrad_h / 111.2 + zamp * psi_dy  # m per km
            dzdx = zamp * psi_dx
            u = -(G0 / self.f) * dzdy * 1e-3
            v = (G0 / self.f) * dzdx * 1e-3
            q = np.clip(rh * rhsc, 0.01, 1.0) * qsat(t, float(lev))
            out[f"z_{lev}"] = (G0 * z_m).reshape(shape)
            out[f"t_{lev}"] = t.reshape(shape)
            out[f"u_{lev}"] = u.reshape(shape)
            out[f"v_{lev}"] = v.reshape(shape)
            out[f"q_{lev}"] = q.reshape(shape)
        return out

    def fine_state(self, run: Run, years: list[int]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The fine 0.5-degree atmospheric state [days, 128, 128] and its dates."""
        daily = self._daily(run, years)
        return daily[0], self.atmosphere(run, years, "fine", daily)

    def coarse_predictors(
        self, run: Run, years: list[int]
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Perfect predictors: the area-conservative 2-degree means of the fine state."""
        dates, fine = self.fine_state(run, years)
        w = np.cos(np.deg2rad(self.fine_lat))[:, None] * np.ones((1, self.fine_lon.size))
        ny, nx = self.coarse.lat.size, self.coarse.lon.size
        wb = w.reshape(ny, FINE_FACTOR, nx, FINE_FACTOR)
        out = {}
        for name, val in fine.items():
            if name in ("rh", "dT"):
                continue
            vb = val.reshape(val.shape[0], ny, FINE_FACTOR, nx, FINE_FACTOR)
            out[name] = ((vb * wb).sum(axis=(2, 4)) / wb.sum(axis=(1, 3))).astype(np.float32)
        return dates, out

    def gcm_bias(
        self, run: Run, dates: np.ndarray, fields: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """Imperfect predictors: the driving GCM's fields, i.e. perfect ones plus smooth GCM biases."""
        rng = np.random.default_rng([self.seed, run.stream, 99])
        ny, nx = self.coarse.lat.size, self.coarse.lon.size
        yy, xx = np.meshgrid(np.linspace(-1, 1, ny), np.linspace(-1, 1, nx), indexing="ij")
        doy = np.array([d.dayofyr for d in dates]) / 365.0
        seas = np.cos(2 * np.pi * (doy - rng.uniform()))[:, None, None]
        out = {}
        for name, val in fields.items():
            var = name.split("_")[0]
            a, b, c = rng.normal(size=3)
            pattern = a * yy + b * xx + c * np.exp(-((yy - 0.3) ** 2 + (xx + 0.2) ** 2) / 0.3)
            noise = rng.standard_normal(val.shape) * 0.25
            if var == "t":
                biased = val + 1.2 * pattern + 0.8 * seas + noise
            elif var == "z":
                biased = val + G0 * (12.0 * pattern + 5.0 * noise)
            elif var in ("u", "v"):
                biased = 0.9 * val + 0.6 * pattern + noise
            else:
                biased = val * np.exp(0.08 + 0.05 * pattern + 0.05 * noise)
            out[name] = biased.astype(np.float32)
        return out

    def _noise(
        self, run: Run, days_per_year: list[tuple[int, int]], tag: int, phi: float
    ) -> np.ndarray:
        """Spatially correlated (~50 km), AR(1)-in-time unit Gaussian noise on the target grid.

        Drawn on a 34 x 34 lattice (on the 128 x 128 benchmark grid; the lattice grows with the
        grid, so the correlation length stays ~50 km) and interpolated bicubically, year by year
        from per-year random streams with a spin-up of the previous year's last 30 days, like the
        modes. Returns the lattice noise ``[days, ly, lx]``; :meth:`_upsample` brings any block of
        its days to the target grid.
        """
        ny, nx = self._tlat.shape
        ly = round(NOISE_LATTICE * ny / BENCHMARK_SIZE)
        lx = round(NOISE_LATTICE * nx / BENCHMARK_SIZE)
        parts = []
        for year, n in days_per_year:
            prev = np.random.default_rng([self.seed, run.stream, 500 + tag, year - 1])
            this = np.random.default_rng([self.seed, run.stream, 500 + tag, year])
            white = np.concatenate(
                [prev.standard_normal((30, ly, lx)), this.standard_normal((n, ly, lx))]
            )
            red = lfilter([np.sqrt(1 - phi**2)], [1.0, -phi], white, axis=0)[30:]
            parts.append(red.astype(np.float32))
        return np.concatenate(parts)

    def _upsample(self, lattice: np.ndarray) -> np.ndarray:
        """Bicubic interpolation of lattice noise ``[days, ly, lx]`` to the target grid."""
        ny, nx = self._tlat.shape
        t = torch.from_numpy(lattice)[:, None]
        up = F.interpolate(t, size=(ny + 8, nx + 8), mode="bicubic", align_corners=False)
        up = up[:, 0, 4 : ny + 4, 4 : nx + 4]
        return (up / 0.75).numpy()

    def surface(self, run: Run, years: list[int]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """RCM surface fields on the target grid: tasmax (K) and pr (mm/day), [days, ny, nx].

        Grids larger than the benchmark's are computed in blocks of days (each day's fields
        depend on that day only once the noise is drawn), so the memory stays that of a few
        hundred MB of arrays at 512 x 512; the benchmark grid is computed in one block.
        """
        daily = self._daily(run, years)
        dates = daily[0]
        per_year = [(y, sum(1 for d in dates if d.year == y)) for y in years]
        noise = [
            self._noise(run, per_year, 1, 0.5),
            self._noise(run, per_year, 2, 0.3),
            self._noise(run, per_year, 3, 0.2),
        ]
        n_days, points = len(dates), self._tlat.size
        block = n_days if points <= BENCHMARK_SIZE**2 else max(1, _BLOCK_VALUES // points)
        if block >= n_days:
            return dates, self._surface_block(run, years, daily, noise)
        out = {n: np.empty((n_days, *self._tlat.shape), np.float32) for n in ("tasmax", "pr")}
        for a in range(0, n_days, block):
            part = slice(a, min(a + block, n_days))
            sub = (
                dates[part],
                {k: v[part] for k, v in daily[1].items()},
                daily[2][part],
                daily[3][part],
            )
            fields = self._surface_block(run, years, sub, [z[part] for z in noise])
            for n, v in fields.items():
                out[n][part] = v
        return dates, out

    def _surface_block(
        self, run: Run, years: list[int], daily: tuple, noise: list[np.ndarray]
    ) -> dict[str, np.ndarray]:
        """tasmax and pr of the days of ``daily`` from their lattice ``noise`` (temperature,
        wet-day occurrence, intensity)."""
        # float64 terrain arithmetic on the benchmark grid (its files stay as they were); float32
        # on the widened grids, twice as fast and far below the files' 0.1 K / 0.1 mm precision
        dt: type[np.floating] = np.float64 if self.size == BENCHMARK_SIZE else np.float32
        atm = self.atmosphere(run, years, "target", daily, levels=(850,))
        h: np.ndarray = self.orography.astype(dt)
        season: np.ndarray = self._season(daily[2])[:, None, None].astype(dt)
        rh = atm["rh"]
        z850_m = atm["z_850"] / G0
        eps_t = self._upsample(noise[0])
        tasmax = (
            atm["t_850"]
            + 0.0065 * (z850_m - h[None])
            + 3.0
            + 5.0 * (1 - rh) * (1 + 0.3 * season)
            + 0.3 * atm["dT"] * np.clip(h[None] / 2000.0, 0.0, 1.5)
            + 1.0 * eps_t
        )
        # orographic uplift: wind at 850 hPa . gradient of the orography (east/north, m per km)
        dh_dn, dh_de = (g.astype(dt) for g in self._terrain_gradient(self._tlat, self._tlon, h))
        uplift = (atm["u_850"] * dh_de[None] + atm["v_850"] * dh_dn[None]) * 1e-3  # m/s
        oro = np.exp(1.2 * np.clip(uplift, -0.6, 0.8))
        rh700 = atm["rh"] * 0.9
        potential = np.clip((rh700 - 0.45) / 0.45, 0.0, None)
        occ = self._upsample(noise[1])
        wet = potential * oro + 0.3 * occ > 0.45
        inten_noise = self._upsample(noise[2])
        q_ref = (qsat(np.array(278.0), 850.0) * 0.6).astype(dt)
        cc = atm["q_850"] / q_ref
        intensity = 4.0 * (0.2 + potential * oro) * cc**0.8 * np.exp(0.6 * inten_noise - 0.18)
        pr = np.where(wet, 0.1 + intensity, 0.0)
        return {"tasmax": tasmax.astype(np.float32), "pr": pr.astype(np.float32)}

    def _terrain_gradient(
        self, lat: np.ndarray, lon: np.ndarray, h: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """d(h)/d(north) and d(h)/d(east) in m per km on a (possibly projected) 2-D grid."""
        x, y = self._xy(lat, lon)
        dx_j, dx_i = np.gradient(x)  # along rows (axis 0) and columns (axis 1)
        dy_j, dy_i = np.gradient(y)
        dh_j, dh_i = np.gradient(h)
        det = dx_i * dy_j - dx_j * dy_i
        dh_de = (dh_i * dy_j - dh_j * dy_i) / det
        dh_dn = (dh_j * dx_i - dh_i * dx_j) / det
        return dh_dn, dh_de
