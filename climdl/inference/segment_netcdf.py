"""The CF NetCDF output of ``climdl segment`` (:class:`NetCDFMaskWriter`).

``cloud_mask`` (uint8 flag variable: ``flag_values``, ``flag_meanings``, ``_FillValue`` 255
where the input has no data) and, with ``probabilities=True``, ``probability`` (``class, y, x``);
the input's spatial coordinates, auxiliary coordinates (e.g. 2-D lat/lon, copied a strip at a
time) and grid mapping, written from the opened scene Dataset (so any input
:func:`~climdl.clouds.readers.open_scene` reads works: scene NetCDF, Landsat product, GeoTIFF) in
the input's stored form (dtype, packing, fill value); the provenance the caller passes in the
global attributes.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from climdl.clouds.scene import NODATA, label_attrs


def _stored(var: xr.Variable, name: str) -> xr.Variable:
    """``var`` CF-encoded as the input stores it (dtype, scale/offset packing, ``_FillValue``);
    a fill value only where the input has one (xarray would add NaN to any float)."""
    v = var.to_base_variable()
    v.encoding = {**var.encoding}
    v.encoding.setdefault("_FillValue", None)
    return xr.conventions.encode_cf_variable(v, name=name)


def _copy_var(var: xr.Variable, dst: Any, name: str, ydim: str) -> None:
    """Write a header variable of the input scene to ``dst`` as stored (packed values,
    attributes); ones with the row dimension and two or more dimensions a strip at a time, so
    that 2-D lat/lon of a large scene never sit in memory whole."""
    for _ in _copy_strips(var, dst, name, ydim):
        pass


def _copy_strips(var: xr.Variable, dst: Any, name: str, ydim: str) -> Iterator[None]:
    """:func:`_copy_var`, a step per strip written, so that variables go strip by strip
    together."""
    dims = tuple(str(d) for d in var.dims)
    out: Any = None

    def create(enc: xr.Variable) -> Any:
        attrs = dict(enc.attrs)
        fill = attrs.pop("_FillValue", None)
        dtype = str if enc.dtype.kind in "OUS" else enc.dtype
        v = dst.createVariable(name, dtype, dims, fill_value=fill, zlib=var.ndim >= 2, complevel=4)
        v.set_auto_maskandscale(False)
        v.setncatts(attrs)
        return v

    if ydim in dims and var.ndim >= 2:
        n = var.sizes[ydim]
        for r0 in range(0, n, 512):
            enc = _stored(var.isel({ydim: slice(r0, r0 + 512)}), name)
            if out is None:
                out = create(enc)
            idx = tuple(slice(r0, r0 + 512) if d == ydim else slice(None) for d in dims)
            out[idx] = np.asarray(enc.values)
            yield
    else:
        enc = _stored(var, name)
        out = create(enc)
        if var.ndim == 0:
            out.assignValue(np.asarray(enc.values))
        else:
            out[:] = np.asarray(enc.values)


class NetCDFMaskWriter:
    """The CF NetCDF output: ``cloud_mask``, optional ``probability``, the scene's coordinates
    and grid mapping (:func:`_write_header`) and provenance in the global attributes."""

    def __init__(
        self,
        path: Path,
        ds: xr.Dataset,
        iname: str,
        ydim: str,
        xdim: str,
        height: int,
        width: int,
        classes: list[str],
        probabilities: bool,
        attrs: dict[str, Any],
    ) -> None:
        import netCDF4

        self._dst = netCDF4.Dataset(path, "w", format="NETCDF4")
        try:
            _write_header(self._dst, ds, iname, ydim, xdim, height, width, classes, probabilities)
            self._dst.setncatts(attrs)
            self._mask = self._dst.variables["cloud_mask"]
            self._prob = self._dst.variables.get("probability")
            self._mask.set_auto_maskandscale(False)
        except BaseException:
            self._dst.close()
            raise

    @property
    def dataset(self) -> Any:
        """The open ``netCDF4.Dataset``, for callers that add variables of their own on the
        scene's grid beside the mask (``climdl sensitivity``)."""
        return self._dst

    def write_rows(self, y0: int, labels: np.ndarray, probs: np.ndarray | None) -> None:
        """See :meth:`~climdl.inference.segment.MaskWriter.write_rows`."""
        rows = labels.shape[0]
        self._mask[y0 : y0 + rows, :] = labels
        if self._prob is not None and probs is not None:
            self._prob[:, y0 : y0 + rows, :] = probs

    def close(self) -> None:
        """See :meth:`~climdl.inference.segment.MaskWriter.close`."""
        if self._dst.isopen():
            self._dst.close()


def _write_header(
    dst: Any,
    ds: xr.Dataset,
    iname: str,
    ydim: str,
    xdim: str,
    height: int,
    width: int,
    classes: list[str],
    probabilities: bool,
) -> list[str]:
    """Dimensions, the scene's spatial and auxiliary coordinates and grid mapping (from the
    Dataset, so every input format works), and the (empty) output variables."""
    dst.createDimension(ydim, height)
    dst.createDimension(xdim, width)
    for d in (ydim, xdim):
        if d in ds.variables and ds.variables[d].dims == (d,):
            _copy_var(ds.variables[d], dst, d, ydim)
    aux: list[str] = []
    img = ds[iname]
    wanted = str(img.encoding.get("coordinates", img.attrs.get("coordinates", ""))).split()
    wanted += [str(n) for n, c in ds.coords.items() if set(c.dims) <= {ydim, xdim} and c.ndim]
    writers: list[Iterator[None]] = []
    for name in dict.fromkeys(wanted):
        if name in (ydim, xdim) or name not in ds.variables:
            continue
        v = ds.variables[name]
        if v.ndim >= 1 and set(v.dims) <= {ydim, xdim}:
            writers.append(_copy_strips(v, dst, name, ydim))
            aux.append(name)
    # lat and lon a strip at a time together: a lazy scene that computes both of a strip at
    # once (climdl.clouds.landsat) then computes each strip once
    for _ in itertools.zip_longest(*writers):
        pass
    gm = img.attrs.get("grid_mapping", img.encoding.get("grid_mapping"))
    gm_name = str(gm).split(":")[0].strip() if gm else None
    if gm_name and gm_name in ds.variables and ds.variables[gm_name].ndim == 0:
        _copy_var(ds.variables[gm_name], dst, gm_name, ydim)
    chunks = (min(height, 512), min(width, 512))
    fl = label_attrs(classes)
    mask = dst.createVariable(
        "cloud_mask",
        "u1",
        (ydim, xdim),
        fill_value=np.uint8(NODATA),
        zlib=True,
        complevel=4,
        chunksizes=chunks,
    )
    mask.setncatts(
        {
            "long_name": "cloud mask (most probable class)",
            "flag_values": fl["flag_values"],
            "flag_meanings": fl["flag_meanings"],
            "comment": fl["comment"],
        }
    )
    if aux:
        mask.setncattr("coordinates", " ".join(aux))
    if gm_name and gm_name in dst.variables:
        mask.setncattr("grid_mapping", str(gm))
    if probabilities:
        dst.createDimension("class", len(classes))
        cls = dst.createVariable("class", str, ("class",))
        for i, c in enumerate(classes):
            cls[i] = c
        cls.setncattr("long_name", "class name")
        prob = dst.createVariable(
            "probability",
            "f4",
            ("class", ydim, xdim),
            fill_value=np.float32(np.nan),
            zlib=True,
            complevel=4,
            least_significant_digit=3,
            chunksizes=(1, *chunks),
        )
        prob.setncatts(
            {
                "long_name": "class probability",
                "units": "1",
                "valid_min": np.float32(0.0),
                "valid_max": np.float32(1.0),
            }
        )
        if aux:
            prob.setncattr("coordinates", " ".join(aux))
        if gm_name and gm_name in dst.variables:
            prob.setncattr("grid_mapping", str(gm))
    return aux
