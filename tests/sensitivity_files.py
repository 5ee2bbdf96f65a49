"""Small ``climdl sensitivity`` files of both kinds, built from the plan's schema for the tests of
the report and its figures (independent of the writers in climdl.sensitivity)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr

EMULATOR_ATTACKS = ("fgsm", "pgd", "pgd_rms", "random", "random_max")
SEGMENTER_ATTACKS = ("fgsm", "pgd", "random", "random_max")
PREDICTORS = ("t_500", "t_850", "q_500", "q_850")
BOUNDS = {"t_500": "0.5 K", "t_850": "0.5 K", "q_500": "5 %", "q_850": "5 %"}
UNITS = {"tasmax": "K", "pr": "mm day-1"}


def emulator_dataset(
    targets: Sequence[str] = ("tasmax", "pr"),
    predictors: Sequence[str] = PREDICTORS,
    days: int = 6,
    seed: int = 0,
) -> xr.Dataset:
    """An emulator sensitivity Dataset on the ALPS coarse grid (lat/lon, 16 x 16)."""
    from climdl.data.grids import coarse_grid
    from climdl.data.spec import Grid
    from climdl.inference.output import grid_coords, space_dims

    rng = np.random.default_rng(seed)
    grid = Grid.from_dataset(coarse_grid("ALPS"))
    coords: dict[str, object] = dict(grid_coords(grid))
    ydim, xdim = space_dims(grid)
    shape = (coords[ydim].size, coords[xdim].size)  # type: ignore[attr-defined]
    time = xr.date_range("2090-01-01", periods=days, freq="7D", calendar="noleap", use_cftime=True)
    coords |= {
        "time": ("time", time, {"standard_name": "time", "axis": "T"}),
        "attack": ("attack", np.array(EMULATOR_ATTACKS, dtype=object)),
        "predictor": ("predictor", np.array(predictors, dtype=object)),
    }
    data: dict[str, tuple[tuple[str, ...], np.ndarray, dict[str, str]]] = {
        "predictor_bound": (
            ("predictor",),
            np.array([BOUNDS.get(p, "0 (fixed)") for p in predictors], dtype=object),
            {"long_name": "bound of each predictor's perturbation"},
        )
    }
    scale = np.array([0.6, 0.8, 0.3, 0.05, 0.1])  # fgsm, pgd, pgd_rms, random, random_max
    for t in targets:
        units = UNITS.get(t, "1")
        base = rng.gamma(2.0, 0.1, (days, len(EMULATOR_ATTACKS))) + 0.01
        for m, factor in (("mean_change", 1.0), ("max_abs_change", 4.0), ("rms_change", 1.5)):
            v = base * scale * factor * (1.0 + 0.2 * rng.random(base.shape))
            if m == "mean_change":
                v = v * rng.choice([-1.0, 1.0], v.shape)
            data[f"{t}_{m}"] = (("time", "attack"), v, {"long_name": f"{t} {m}", "units": units})
        if t == "pr":
            wet = rng.normal(0, 0.02, (days, len(EMULATOR_ATTACKS)))
            data["pr_wet_fraction_change"] = (
                ("time", "attack"),
                wet,
                {"long_name": "change of the wet-point fraction", "units": "1"},
            )
        sal = rng.normal(0, 0.05, (len(predictors), *shape))
        data[f"{t}_saliency"] = (
            ("predictor", ydim, xdim),
            sal,
            {"long_name": f"saliency of the domain-mean {t}", "units": units},
        )
        data[f"{t}_bound_sensitivity"] = (
            ("predictor", ydim, xdim),
            np.abs(sal) * 0.3,
            {"long_name": f"bound sensitivity of the domain-mean {t}", "units": units},
        )
    attrs = {
        "Conventions": "CF-1.10",
        "title": "climdl sensitivity of a test emulator",
        "climdl_sensitivity": "emulator",
        "climdl_sensitivity_version": np.int32(1),
        "bounds": "; ".join(f"{p}={BOUNDS.get(p, '0 (fixed)')}" for p in predictors),
        "pgd_steps": np.int32(5),
        "random_draws": np.int32(8),
        "ig_steps": np.int32(16),
        "seed": np.int32(0),
        "checkpoints": "model.ckpt (sha256 0123abcd)",
    }
    if "pr" in targets:
        attrs["wet_day_threshold"] = "1 mm day-1"
    return xr.Dataset(data, coords=coords, attrs=attrs)  # type: ignore[arg-type]


def segmenter_dataset(size: int = 48, seed: int = 0) -> xr.Dataset:
    """A segmenter sensitivity Dataset on a small UTM scene (y/x in metres + grid mapping)."""
    import pyproj

    rng = np.random.default_rng(seed)
    classes = ["clear", "cloud", "shadow"]
    bands = ["blue", "green", "red", "nir", "tirs1"]
    gm = pyproj.CRS.from_epsg(32632).to_cf()
    x = 500_000.0 + 30.0 * np.arange(size)
    y = 5_200_000.0 - 30.0 * np.arange(size)
    trans = rng.integers(0, 50, (len(SEGMENTER_ATTACKS), 3, 3)).astype(np.int64)
    for a in range(len(SEGMENTER_ATTACKS)):
        np.fill_diagonal(trans[a], size * size // 3)
    flag = (rng.random((size, size)) < 0.05).astype(np.uint8)
    coords = {
        "attack": ("attack", np.array(SEGMENTER_ATTACKS, dtype=object)),
        "band": ("band", np.array(bands, dtype=object)),
        "class_from": ("class_from", np.array(classes, dtype=object)),
        "class_to": ("class_to", np.array(classes, dtype=object)),
        "x": ("x", x, {"standard_name": "projection_x_coordinate", "units": "m", "axis": "X"}),
        "y": ("y", y, {"standard_name": "projection_y_coordinate", "units": "m", "axis": "Y"}),
        "crs": ((), np.int32(0), gm),
    }
    space = {"grid_mapping": "crs"}
    data = {
        "changed_fraction": (
            ("attack",),
            np.array([0.02, 0.05, 0.001, 0.003]),
            {"long_name": "fraction of valid pixels whose class changes", "units": "1"},
        ),
        "transitions": (
            ("attack", "class_from", "class_to"),
            trans,
            {"long_name": "pixels by class before and after the perturbation", "units": "1"},
        ),
        "changed_pgd": (
            ("y", "x"),
            flag,
            {"long_name": "class changed by PGD", "units": "1", **space},
        ),
        "band_saliency": (
            ("band", "y", "x"),
            rng.normal(0, 1, (len(bands), size, size)),
            {"long_name": "saliency of each band", "units": "1", **space},
        ),
        "band_bound_sensitivity": (
            ("band", "y", "x"),
            rng.gamma(2.0, 0.1, (len(bands), size, size)),
            {"long_name": "first-order change of the cross-entropy", "units": "1", **space},
        ),
        "band_bound": (
            ("band",),
            np.array(["0.01 1"] * 4 + ["0.5 K"], dtype=object),
            {"long_name": "bound of each band's perturbation"},
        ),
    }
    attrs = {
        "Conventions": "CF-1.10",
        "title": "climdl sensitivity of a test segmenter",
        "climdl_sensitivity": "segmenter",
        "climdl_sensitivity_version": np.int32(1),
        "bounds": "blue=0.01 1; green=0.01 1; red=0.01 1; nir=0.01 1; tirs1=0.5 K",
        "classes": " ".join(classes),
        "pgd_steps": np.int32(5),
        "random_draws": np.int32(8),
        "seed": np.int32(0),
    }
    return xr.Dataset(data, coords=coords, attrs=attrs)  # type: ignore[arg-type]


def write(ds: xr.Dataset, path: Path) -> Path:
    """Write ``ds`` as NetCDF and return the path."""
    ds.to_netcdf(path)
    return path
