"""Predictors for inference: opened lazily, checked, and brought onto the emulator's grid.

Inputs are paths/globs or a catalog entry's test predictors, "perfect" (upscaled RCM) or
"imperfect" (GCM). The reader already gives canonical names and units, ascending latitude,
one longitude convention and any CF calendar. What remains is the grid: when the input's points
contain the training grid's points (the same grid, or a larger one on the same lattice) they are
selected as they are; otherwise the predictors are remapped onto the training grid,
conservatively (default) or bilinearly, with weights computed once and applied on the device as
one sparse matrix product per chunk.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import xarray as xr
from torch import Tensor

from climdl.data.spec import Grid
from climdl.errors import ConfigError, DataError
from climdl.preprocess import LatLonGrid, ProjectedGrid, RegridWeights, apply_regrid
from climdl.preprocess.regrid import bilinear_weights, conservative_weights

Regrid = Literal["conservative", "bilinear"]

_TOL_DEG = 1e-3


@dataclass
class InputSource:
    """Where the predictors come from (for provenance and the ML-Bench file name)."""

    files: list[Path]
    kind: str | None = None  # perfect | imperfect, when known
    gcm: str | None = None
    period: str | None = None  # test period name, when from a catalog
    domain: str | None = None
    attrs: dict[str, Any] = field(default_factory=dict)


def open_inputs(
    inputs: Sequence[str] | None,
    variables: Sequence[str],
    *,
    catalog: str | None = None,
    period: str | None = None,
    kind: Literal["perfect", "imperfect"] = "imperfect",
    gcm: str | None = None,
    experiment: str | None = None,
    start: str | None = None,
    end: str | None = None,
) -> tuple[xr.Dataset, InputSource]:
    """The predictors ``variables`` as a lazy canonical Dataset, and where they came from."""
    from climdl.data.reader import open_dataset

    if inputs and catalog:
        raise ConfigError("give --input files or --catalog, not both.")
    if inputs:
        ds = open_dataset(list(inputs), list(variables))
        from climdl.data.files import resolve_paths

        files = resolve_paths(list(inputs))
        source = InputSource(files, kind=ds.attrs.get("predictor_type"))
    elif catalog:
        from climdl.data.catalog import get_entry

        entry = get_entry(catalog)
        if period:
            ds = entry.open(
                "predictors", period=period, kind=kind, gcm=gcm, variables=list(variables)
            )
            files = entry.files("predictors", period=period, kind=kind, gcm=gcm)
        else:
            ds = entry.open("predictors", experiment=experiment, variables=list(variables))
            files = entry.files("predictors", experiment=experiment)
        source = InputSource(
            list(files),
            kind=kind if period else "perfect",
            period=period,
            gcm=gcm or getattr(entry, "gcm_train", None),
            domain=entry.domain,
        )
    else:
        raise ConfigError(
            "give the predictors: --input FILE_OR_GLOB ... or --catalog ENTRY --period P."
        )
    if "time" not in ds.dims:
        raise DataError("the predictors have no time axis.")
    if start or end:
        try:
            ds = ds.sel(time=slice(start, end))
        except (ValueError, KeyError, TypeError) as exc:  # not a date of the files' calendar
            given = ", ".join(f"--{k} {v}" for k, v in (("start", start), ("end", end)) if v)
            raise ConfigError(
                f"{given}: not a date of the predictors' calendar ({exc}); give YYYY-MM-DD "
                "(or YYYY, YYYY-MM)."
            ) from None
        if ds.sizes["time"] == 0:
            raise DataError(
                f"no predictor day between {start or 'the start'} and {end or 'the end'}."
            )
    source.attrs = {k: v for k, v in ds.attrs.items() if isinstance(v, (str, int, float))}
    source.gcm = source.gcm or _guess_gcm(source)
    source.kind = source.kind or ds.attrs.get("predictor_type")
    return ds, source


def _guess_gcm(source: InputSource) -> str | None:
    for key in ("driving_model_id", "driving_source_id", "source_id", "model_id", "gcm"):
        if key in source.attrs:
            return str(source.attrs[key])
    stem = source.files[0].stem if source.files else ""
    return stem.split("_")[0] or None


def _spec_axes(grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    if "lat" not in grid.coords or "lon" not in grid.coords:
        raise DataError("the checkpoint's coarse grid has no latitude/longitude axes.")
    lat = grid.coords["lat"].values.numpy()
    lon = grid.coords["lon"].values.numpy()
    if lat.ndim != 1 or lon.ndim != 1:
        raise DataError("the checkpoint's coarse grid is not a regular latitude/longitude grid.")
    return lat, lon


def _match_lon_frame(src_lon: np.ndarray, dst_lon: np.ndarray) -> np.ndarray:
    """Source longitudes shifted by whole turns to the frame of the destination's centre."""
    centre = 0.5 * (dst_lon.min() + dst_lon.max())
    return centre - 180.0 + np.mod(src_lon - (centre - 180.0), 360.0)


class GridAdapter:
    """Brings predictor maps [..., h_in, w_in] onto the training grid [..., h, w] on the device.

    ``mode`` is ``select`` (the training points are input points: index selection, no
    interpolation) or the regridding method.
    """

    def __init__(
        self,
        ds: xr.Dataset,
        coarse_grid: Grid,
        method: Regrid = "conservative",
        min_coverage: float = 0.999,
    ) -> None:
        self.dst_lat, self.dst_lon = _spec_axes(coarse_grid)
        self.weights: RegridWeights | None = None
        self.rows: np.ndarray | None = None
        self.cols: np.ndarray | None = None
        self.space_dims: tuple[str, str]
        if "lat" in ds.dims and "lon" in ds.dims:
            self.space_dims = ("lat", "lon")
            src_lat = np.asarray(ds["lat"].values, np.float64)
            src_lon = _match_lon_frame(np.asarray(ds["lon"].values, np.float64), self.dst_lon)
            order = np.argsort(src_lon, kind="stable")
            self.lon_order = order if np.any(np.diff(order) != 1) else None
            src_lon = src_lon[order]
            rows, cols = _nearest(src_lat, self.dst_lat), _nearest(src_lon, self.dst_lon)
            if rows is not None and cols is not None:
                self.mode: str = "select"
                # the training grid itself: nothing to gather (a 1-year chunk's copy saved)
                self.rows = None if _all_in_order(rows, src_lat.size) else rows
                self.cols = None if _all_in_order(cols, src_lon.size) else cols
                return
            self.mode = method
            if method == "conservative":
                src = LatLonGrid.from_centres(src_lat, src_lon)
                dst = LatLonGrid.from_centres(self.dst_lat, self.dst_lon)
                self.weights = conservative_weights(src, dst, min_coverage=min_coverage)
            elif method == "bilinear":
                self.weights = bilinear_weights(
                    src_lat, src_lon, self.dst_lat[:, None], self.dst_lon[None, :]
                )
                if not bool(self.weights.coverage.bool().all()):
                    bad = int((~self.weights.coverage.bool()).sum())
                    raise DataError(
                        f"The input grid does not cover the training domain: {bad} of "
                        f"{self.weights.coverage.numel()} training grid points lie outside it."
                    )
            else:
                raise ConfigError(
                    f"unknown regridding method {method!r}; choose conservative or bilinear."
                )
        elif "x" in ds.dims and "y" in ds.dims:
            self.space_dims = ("y", "x")
            self.lon_order = None
            if method != "conservative":
                raise ConfigError(
                    "predictors on a projected grid can only be regridded conservatively."
                )
            self.mode = "conservative"
            src_p = ProjectedGrid.from_dataset(ds)
            self.weights = conservative_weights(
                src_p,
                LatLonGrid.from_centres(self.dst_lat, self.dst_lon),
                min_coverage=min_coverage,
            )
        else:
            raise DataError(
                "the predictors have neither lat/lon axes nor projection x/y axes with a "
                "grid mapping; regrid them to a regular grid first."
            )

    @property
    def shape(self) -> tuple[int, int]:
        """Rows and columns of the training grid the inputs are brought onto."""
        return (self.dst_lat.size, self.dst_lon.size)

    def describe(self) -> str:
        """One line for the log: selection or the regridding method and its shapes."""
        if self.mode == "select":
            return "input grid holds the training grid's points (selected, not interpolated)"
        assert self.weights is not None
        return f"{self.mode} regridding {self.weights.src_shape} -> {self.weights.dst_shape}"

    def __call__(self, x: Tensor) -> Tensor:
        """Bring predictors ``x[..., lat, lon]`` (or ``y, x``) onto the training grid, on x's device."""
        if self.lon_order is not None:
            x = x[..., torch.as_tensor(self.lon_order, device=x.device)]
        if self.mode == "select":
            if self.rows is not None:
                x = x.index_select(-2, torch.as_tensor(self.rows, device=x.device))
            if self.cols is not None:
                x = x.index_select(-1, torch.as_tensor(self.cols, device=x.device))
            return x
        assert self.weights is not None
        return apply_regrid(self.weights, x)


def _all_in_order(idx: np.ndarray, n: int) -> bool:
    """Whether the indices ``idx`` are ``0, 1, ..., n - 1``: every source point, in order."""
    return idx.size == n and bool(np.all(idx == np.arange(n)))


def _nearest(src: np.ndarray, dst: np.ndarray) -> np.ndarray | None:
    """Indices of ``dst`` values among ``src`` values, or None when some are not there."""
    if src.size == 0:
        return None
    idx = np.abs(src[None, :] - dst[:, None]).argmin(axis=1)
    return idx if np.all(np.abs(src[idx] - dst) < _TOL_DEG) else None


def check_finite(x: Tensor, names: Sequence[str], times: Sequence[Any]) -> None:
    """A clear error when predictors hold NaN or infinity after regridding."""
    bad = ~torch.isfinite(x)
    if not bool(bad.any()):
        return
    per_var = bad.flatten(2).any(-1)  # [T, C]
    t, c = (int(i) for i in torch.nonzero(per_var)[0])
    n = int(bad[:, c].sum())
    raise DataError(
        f"the predictors hold {n} missing or non-finite value(s) in {names[c]} "
        f"(first on {times[t]}); the emulator cannot take missing values. Fill them "
        "(e.g. cdo fillmiss) or choose a period without them."
    )


def check_ranges(
    x: Tensor,
    names: Sequence[str],
    times: Sequence[Any],
    *,
    attrs: Mapping[str, Mapping[str, Any]] | None = None,
    where: str | None = None,
) -> None:
    """A clear error when predictors ``x[T, C, h, w]`` leave their plausible ranges.

    Smallest and largest value per variable (NaN ignored), compared in canonical units with
    :data:`climdl.data.variables.PLAUSIBLE_RANGES`: a units attribute that says degC over
    values in K stops the run here instead of feeding the emulator 550 K.
    """
    from climdl.data.units import check_plausible

    nan = torch.isnan(x)
    empty = nan.flatten(2).all(-1).all(0)  # a variable with no value: nothing to judge
    lo = torch.where(empty, torch.nan, torch.where(nan, torch.inf, x).amin(dim=(0, 2, 3)))
    hi = torch.where(empty, torch.nan, torch.where(nan, -torch.inf, x).amax(dim=(0, 2, 3)))
    low, high = lo.double().cpu().numpy(), hi.double().cpu().numpy()
    when = None
    if len(times):
        when = f"on {times[0]}" if len(times) == 1 else f"days {times[0]} to {times[-1]}"
    check_plausible(names, low, high, attrs=attrs, where=where, when=when)
