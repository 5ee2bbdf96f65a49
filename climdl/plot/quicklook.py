"""A map of one variable of a NetCDF file, or of two files and their difference (``climdl plot``).

The library side of the CLI: open a CF file (grid mapping as a coordinate, cftime dates of any
calendar), pick one time step by date or index or average over time, draw it with
:func:`climdl.plot.plot_field` (or three panels FILE / OTHER / FILE - OTHER with
:func:`climdl.plot.panel_figure`), and save the figure atomically. Every predictable mistake is
a :class:`climdl.errors.ClimdlError` with one sentence that says what to do.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from climdl.errors import ConfigError, DataError, OutputError
from climdl.plot.figures import MAX_DPI, figure_format, save_figure
from climdl.plot.timesel import TimeChoice, select_time

if TYPE_CHECKING:
    import xarray as xr

    from climdl.plot.colours import Kind

PathLike = str | os.PathLike[str]

_log = logging.getLogger(__name__)

_BOUNDS_WARNING = "Variable(s) referenced in bounds not in variables"


def check_plot_options(
    dpi: float | None = None, vmin: float | None = None, vmax: float | None = None
) -> None:
    """Refuse, before any file is read, a resolution or colour limits that cannot make a figure.

    Args:
        dpi: the resolution of raster output (None: the default).
        vmin: the lower colour limit (None: from the data).
        vmax: the upper colour limit (None: from the data).

    Raises:
        ConfigError: a dpi outside 1 to :data:`MAX_DPI`, a limit that is not a finite number,
            or ``vmin`` not below ``vmax``.
    """
    if dpi is not None and not (math.isfinite(dpi) and 1 <= dpi <= MAX_DPI):
        raise ConfigError(f"--dpi must be a number from 1 to {MAX_DPI}, got {dpi:g}.")
    for flag, value in (("--vmin", vmin), ("--vmax", vmax)):
        if value is not None and not math.isfinite(value):
            raise ConfigError(f"{flag} must be a finite number, got {value:g}.")
    if vmin is not None and vmax is not None and not vmin < vmax:
        raise ConfigError(f"--vmin {vmin:g} must be below --vmax {vmax:g}.")


def _open_netcdf(p: Path) -> xr.Dataset:
    """``p`` opened lazily with its grid mapping and bounds as coordinates, cftime dates.

    Failures to open are the data readers' sentence (a truncated or corrupt file), not
    xarray's advice on IO engines. A file whose ``bounds`` attributes name variables it lacks
    (bounds dropped by a tool) is drawn all the same: xarray's warning about it is logged at
    debug level instead of reaching the user as a raw Python warning.
    """
    import xarray as xr

    from climdl.data.files import open_netcdf

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = open_netcdf(
            p, decode_coords="all", decode_times=xr.coders.CFDatetimeCoder(use_cftime=True)
        )
    for w in caught:
        if _BOUNDS_WARNING in str(w.message):
            _log.debug("%s: %s; drawn without those cell bounds", p, w.message)
        else:  # anything else is passed on as it came
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
    return ds


def open_field(path: PathLike, var: str | None = None) -> xr.DataArray:
    """One variable of a NetCDF file or Zarr store, lazily, with its grid mapping as a coordinate.

    Without ``var`` the file must hold exactly one data variable.
    """
    p = Path(path)
    if p.suffix.lower() == ".zarr" and p.is_dir():  # a Zarr store, read as the data layer does
        from climdl.data.files import open_file

        ds = open_file(p)  # a folder that is not a store: one sentence
        ds = ds.set_coords([n for n, v in ds.data_vars.items() if "grid_mapping_name" in v.attrs])
    elif p.is_dir():
        raise DataError(f"{p} is a folder, not a file; give the NetCDF file inside it.")
    elif not p.is_file():
        raise DataError(f"{p} does not exist; check the path.")
    else:
        ds = _open_netcdf(p)
    names = [
        str(n)
        for n, v in ds.data_vars.items()
        if "grid_mapping_name" not in v.attrs and v.ndim >= 2
    ]
    if var is None:
        if len(names) != 1:
            listed = ", ".join(names) or "none"
            raise ConfigError(
                f"{p} has {len(names)} plottable variables ({listed}); choose one with --var."
            )
        var = names[0]
    if var not in ds.data_vars:
        raise DataError(
            f"variable {var!r} is not in {p}; variables there: {', '.join(names) or 'none'}."
        )
    da = ds[var]
    da.encoding["source"] = str(p)
    return da


def _label(path: Path, other: Path) -> str:
    """A short panel label: the file name without suffix, with its folder if both are alike."""
    return path.stem if path.stem != other.stem else f"{path.parent.name}/{path.stem}"


def _to_units(da: xr.DataArray, units: str) -> xr.DataArray:
    """``da`` converted to ``units`` (pint, udunits spellings); DataError when impossible."""
    have = str(da.attrs.get("units", "")).strip()
    if have == units.strip():
        return da
    from climdl.data.units import parse_units, registry

    try:
        values = (
            registry()
            .Quantity(np.asarray(da.values, float), parse_units(have))
            .to(parse_units(units))
            .magnitude
        )
    except Exception:  # pint raises DimensionalityError, UndefinedUnitError, ValueError...
        raise DataError(
            f"cannot compare {da.name} in {have!r} with {units!r}; --vs needs convertible units."
        ) from None
    return da.copy(data=values).assign_attrs(units=units)


def _same_grid(a: xr.DataArray, b: xr.DataArray, pa: Path, pb: Path) -> xr.DataArray:
    """``b`` on the coordinates of ``a``, after checking that both grids are the same."""
    if set(a.dims) != set(b.dims) or any(a.sizes[d] != b.sizes[d] for d in a.dims):
        raise DataError(
            f"{pa} {dict(a.sizes)} and {pb} {dict(b.sizes)} are not on the same grid;"
            " --vs needs both files on one grid."
        )
    b = b.transpose(*a.dims)
    for d in a.dims:
        if (
            d in a.coords
            and d in b.coords
            and not np.allclose(
                np.asarray(a[d].values, float),
                np.asarray(b[d].values, float),
                rtol=1e-6,
                atol=1e-6,
            )
        ):
            raise DataError(
                f"{pa} and {pb} have different {d} coordinates; --vs needs both files on one grid."
            )
    return a.copy(data=np.asarray(b.values))


def plot_file(
    path: PathLike,
    out: PathLike,
    *,
    var: str | None = None,
    time: str | None = None,
    mean: bool = False,
    vs: PathLike | None = None,
    kind: Kind = "auto",
    vmin: float | None = None,
    vmax: float | None = None,
    title: str | None = None,
    dpi: float | None = None,
    overwrite: bool = False,
    mask: PathLike | None = None,
) -> Path:
    """Map ``var`` of ``path`` (one step or the time mean) to the figure ``out``; return its path.

    With ``vs``, three panels: ``path``, ``vs`` (same variable, time choice and grid; units
    converted) and their difference on a diverging scale. ``out`` ends in .png, .pdf or .svg and
    is not replaced unless ``overwrite``. A multispectral scene (an image with a ``band``
    dimension) is drawn by :func:`plot_scene_file` instead, with the cloud mask file ``mask``.
    """
    from climdl.plot.colours import KINDS
    from climdl.plot.maps import as_2d, default_title, panel_figure, plot_field

    figure_format(out)
    check_plot_options(dpi, vmin, vmax)
    if Path(out).exists() and not overwrite:
        raise OutputError(f"{out} already exists; pass --overwrite to replace it.")
    if _is_scene(path) and var is None:
        if time is not None or mean or vs is not None:
            raise ConfigError(
                f"{path} is a multispectral scene (no time axis, no --vs): "
                "draw it alone or with --mask MASK.nc."
            )
        return plot_scene_file(path, out, mask=mask, title=title, dpi=dpi, overwrite=overwrite)
    if mask is not None:
        raise ConfigError(
            f"--mask draws a cloud mask over a scene's RGB composite, but {path} "
            "is not a scene (an image with a 'band' dimension)."
        )
    if kind not in KINDS:
        raise ConfigError(f"unknown --kind {kind!r}; choose one of {', '.join(KINDS)}.")
    choice = TimeChoice.parse(time, mean)
    p = Path(path)
    a = open_field(p, var)
    a, when = select_time(a, choice)
    a = as_2d(a.load())
    if vs is None:
        heading = title or ", ".join(
            s for s in (default_title(a.drop_vars("time", errors="ignore")), when) if s
        )
        ax = plot_field(a, kind=kind, vmin=vmin, vmax=vmax, title=heading)
        fig = ax.get_figure()
    else:
        q = Path(vs)
        b = open_field(q, str(a.name))
        b, when_b = select_time(b, choice)
        b = as_2d(_to_units(b.load(), str(a.attrs.get("units", ""))))
        b_on_a = _same_grid(a, b, p, q)
        diff = (a - b_on_a).assign_attrs(
            long_name=f"{a.name}: difference",
            units=a.attrs.get("units", ""),
            climdl_kind="diverging",
        )
        diff.name = f"{a.name}_difference"
        name = a.attrs.get("long_name") or a.name
        fields = [
            (f"{_label(p, q)}{chr(10) + when if when else ''}", a),
            (f"{_label(q, p)}{chr(10) + when_b if when_b else ''}", b),
            ("difference\n(left minus middle)", diff),
        ]
        fig = panel_figure(
            fields,
            kinds=[kind, kind, "diverging"],
            ncols=3,
            shared=["field", "field", "difference"],
            suptitle=title or str(name),
            limits=[(vmin, vmax), (vmin, vmax), None],
        )
    assert fig is not None
    return save_figure(fig, out, dpi=dpi, overwrite=overwrite)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- scenes
#: the longest side drawn; larger scenes are read every n-th pixel (a figure shows no more)
MAX_SCENE_SIDE = 2048


def _is_scene(path: PathLike) -> bool:
    """True if ``path`` names a scene: a Landsat MTL file or its folder, a Sentinel-2 product
    (``.SAFE`` folder or ``MTD_MSIL1C.xml``), a GeoTIFF, or a readable NetCDF file with an image
    variable (a ``band`` dimension)."""
    import xarray as xr

    from climdl.clouds.scene import BAND_DIM

    p = Path(path)
    if p.is_dir() or p.name.upper().endswith(("_MTL.TXT", "_MTL.JSON", "MTD_MSIL1C.XML")):
        return True
    if p.suffix.lower() in (".tif", ".tiff"):
        return p.is_file()
    if not p.is_file():
        return False
    try:
        with xr.open_dataset(p, decode_times=False) as ds:
            return any(BAND_DIM in v.dims and v.ndim == 3 for v in ds.data_vars.values())
    except Exception:  # unreadable files get their error from open_field
        return False


def _flag_variable(ds: xr.Dataset, p: Path) -> str:
    """The mask variable of a file: ``cloud_mask`` (climdl segment), ``mask``, or the one flag
    variable (one with ``flag_meanings``)."""
    for name in ("cloud_mask", "mask"):
        if name in ds.data_vars and "flag_meanings" in ds[name].attrs:
            return name
    flags = [str(n) for n, v in ds.data_vars.items() if "flag_meanings" in v.attrs]
    if len(flags) != 1:
        raise DataError(
            f"{p} has {len(flags)} flag variables with flag_meanings "
            f"({', '.join(flags) or 'none'}); a mask file needs exactly one."
        )
    return flags[0]


def _checked_mask(
    values: Any, meanings: list[str], p: Path, shape: tuple[int, ...], step: int = 1
) -> tuple[np.ndarray, list[str]]:
    """``values`` (the full mask, or a lazy array of it) checked against the scene's ``shape``,
    read every ``step``-th pixel, fill values as :data:`NODATA`."""
    from climdl.clouds.scene import NODATA

    if tuple(values.shape) != tuple(shape):
        raise DataError(
            f"the mask in {p} is {tuple(values.shape)}, the scene {tuple(shape)}; --mask needs "
            "the mask of this scene (climdl segment -i SCENE)."
        )
    out = np.asarray(values[::step, ::step])
    if out.dtype.kind == "f":
        out = np.where(np.isfinite(out), out, NODATA)
    return out.astype(np.int16), meanings


def _mask_of(
    ds: xr.Dataset, name: str, p: Path, shape: tuple[int, ...], step: int = 1
) -> tuple[np.ndarray, list[str]]:
    da = ds[name]
    meanings = str(da.attrs["flag_meanings"]).split()
    return _checked_mask(da.variable, meanings, p, shape, step)


def _read_mask_file(
    q: Path, shape: tuple[int, ...], step: int = 1, flip: tuple[bool, bool] = (False, False)
) -> tuple[np.ndarray, list[str]]:
    """The class mask (every ``step``-th pixel) and class names of a mask file: CF NetCDF (read
    lazily: only the mask variable, only the pixels drawn) or a ``climdl segment`` GeoTIFF (band 1,
    classes in its ``flag_meanings`` tag). A GeoTIFF is stored north-up and west-left; ``flip``
    (rows, columns) puts it back in the scene's order where the scene's y ascends or its x
    descends."""
    import xarray as xr

    if q.is_dir():
        raise DataError(f"--mask {q} is a folder, not a file; give the mask file inside it.")
    if not q.is_file():
        raise DataError(f"{q} does not exist; check the --mask path.")
    if q.suffix.lower() in (".tif", ".tiff"):
        import rasterio

        try:
            with rasterio.open(q) as src:
                values = src.read(1)  # uint8: a full Landsat scene's mask is ~60 MB
                meanings = str(src.tags(1).get("flag_meanings", "")).split()
        except rasterio.errors.RasterioError as exc:
            raise DataError(f"cannot read {q} as GeoTIFF ({exc}).") from None
        if not meanings:
            raise DataError(
                f"{q} has no flag_meanings tag on band 1; a GeoTIFF mask needs its classes "
                "(climdl segment -o MASK.tif writes them)."
            )
        values = values[:: -1 if flip[0] else 1, :: -1 if flip[1] else 1]
        return _checked_mask(values, meanings, q, shape, step)
    try:
        with xr.open_dataset(q, decode_times=False, mask_and_scale=False) as other:
            return _mask_of(other, _flag_variable(other, q), q, shape, step)
    except (DataError, ConfigError):
        raise
    except Exception as exc:
        raise DataError(
            f"cannot read {q} as NetCDF ({type(exc).__name__}); check that the file is complete."
        ) from None


def plot_scene_file(
    path: PathLike,
    out: PathLike,
    *,
    mask: PathLike | None = None,
    title: str | None = None,
    dpi: float | None = None,
    overwrite: bool = False,
) -> Path:
    """The RGB composite of a scene, its own label (if it has one) and the mask file ``mask``
    (e.g. ``climdl segment`` output, NetCDF or GeoTIFF) over it, side by side with one legend.

    The scene may be anything ``climdl segment`` reads (NetCDF, a Landsat MTL product, a
    GeoTIFF). Only the red, green and blue bands and the label are read, and scenes larger than
    :data:`MAX_SCENE_SIDE` pixels every n-th pixel, so a full Landsat scene plots in bounded
    memory.
    """
    from climdl.clouds.readers import open_scene
    from climdl.clouds.scene import BAND_DIM, bands_of, image_name, spatial_dims
    from climdl.plot.masks import RGB_BANDS, mask_panels, rgb_composite, rgb_indices

    check_plot_options(dpi)
    p = Path(path)
    with open_scene(p) as lazy:
        ydim, xdim = spatial_dims(lazy, p)
        shape = (lazy.sizes[ydim], lazy.sizes[xdim])
        step = max(1, -(-max(shape) // MAX_SCENE_SIDE))

        def rising(d: str) -> bool:
            return d in lazy.coords and lazy[d].size > 1 and bool(lazy[d][-1] > lazy[d][0])

        flip = (rising(ydim), xdim in lazy.coords and lazy[xdim].size > 1 and not rising(xdim))
        wanted = [image_name(lazy, p)] + (["mask"] if "mask" in lazy.data_vars else [])
        every: dict[str, Any] = {ydim: slice(None, None, step), xdim: slice(None, None, step)}
        every[BAND_DIM] = rgb_indices(bands_of(lazy, p), RGB_BANDS)
        scene = lazy[wanted].isel(every).load()
    rgb = rgb_composite(scene)
    panels: list[tuple[str, np.ndarray]] = []
    meanings: list[str] | None = None
    if "mask" in scene.data_vars and "flag_meanings" in scene["mask"].attrs:
        label, meanings = _mask_of(scene, "mask", p, rgb.shape[:2])
        panels.append(("label", label))
    if mask is not None:
        q = Path(mask)
        pred, names = _read_mask_file(q, shape, step, flip)
        if meanings is not None and names != meanings:
            raise DataError(
                f"{q} has the classes {' '.join(names)}, the scene's label "
                f"{' '.join(meanings)}; they cannot share one legend."
            )
        meanings = names
        panels.append((q.stem, pred))
    if meanings is None:
        meanings = []
    suffix = f" (1 pixel in {step} along each axis)" if step > 1 else ""
    fig = mask_panels(rgb, panels, flag_meanings=meanings, suptitle=(title or p.name) + suffix)
    return save_figure(fig, out, dpi=dpi, overwrite=overwrite)
