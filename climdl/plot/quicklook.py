"""A map of one variable of a NetCDF file, or of two files and their difference (``climdl plot``).

The library side of the CLI: open a CF file (grid mapping as a coordinate, cftime dates of any
calendar), pick one time step by date or index or average over time, draw it with
:func:`climdl.plot.plot_field` (or three panels FILE / OTHER / FILE - OTHER with
:func:`climdl.plot.panel_figure`), and save the figure atomically. Every predictable mistake is
a :class:`climdl.errors.ClimdlError` with one sentence that says what to do.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from climdl.errors import ConfigError, DataError, OutputError
from climdl.plot.figures import figure_format, save_figure

if TYPE_CHECKING:
    import xarray as xr

    from climdl.plot.colours import Kind

PathLike = str | os.PathLike[str]
_DATE = re.compile(
    r"^\s*(-?\d{1,4})-(\d{1,2})-(\d{1,2})(?:[T ](\d{1,2})(?::(\d{1,2}))?(?::\d+)?)?"
    r"\s*$"
)
_INDEX = re.compile(r"^\s*[+-]?\d+\s*$")


@dataclass(frozen=True)
class TimeChoice:
    """How to reduce the time dimension: one step (``when``: date string or index) or a mean."""

    when: str | int | None = None
    mean: bool = False

    @staticmethod
    def parse(text: str | None, mean: bool = False) -> TimeChoice:
        """``--time`` text: an integer is an index (negative counts from the end), else a date."""
        if text is not None and mean:
            raise ConfigError("choose either --time or --mean, not both.")
        if text is None:
            return TimeChoice(None, mean)
        if _INDEX.match(text):
            return TimeChoice(int(text), False)
        if not _DATE.match(text):
            raise ConfigError(
                f"--time {text!r} is neither a date (YYYY-MM-DD[ HH:MM]) nor a time index."
            )
        return TimeChoice(text.strip(), False)


def open_field(path: PathLike, var: str | None = None) -> xr.DataArray:
    """One variable of a NetCDF file, lazily, with its grid mapping as a coordinate.

    Without ``var`` the file must hold exactly one data variable.
    """
    import xarray as xr

    p = Path(path)
    if p.is_dir():
        raise DataError(f"{p} is a folder, not a file; give the NetCDF file inside it.")
    if not p.is_file():
        raise DataError(f"{p} does not exist; check the path.")
    try:
        ds = xr.open_dataset(
            p, decode_coords="all", decode_times=xr.coders.CFDatetimeCoder(use_cftime=True)
        )
    except Exception as exc:  # netCDF4/h5py/xarray raise many types for unreadable files
        raise DataError(
            f"cannot read {p} as NetCDF ({type(exc).__name__}: {exc}); check that "
            "the file is complete."
        ) from None
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


def _is_dates(values: Any) -> bool:
    """Whether an array holds dates (datetime64 or cftime objects)."""
    v = np.asarray(values)
    if np.issubdtype(v.dtype, np.datetime64):
        return True
    return v.dtype == object and v.size > 0 and hasattr(v.flat[0], "calendar")


def _time_dim(da: xr.DataArray) -> str | None:
    if "time" in da.dims:
        return "time"
    for d in da.dims:
        c = da.coords.get(d)
        if c is not None and (
            c.attrs.get("axis") == "T"
            or c.attrs.get("standard_name") == "time"
            or _is_dates(c.values)
        ):
            return str(d)
    return None


def _scalar_time(da: xr.DataArray) -> Any:
    """The date of a field whose time is a scalar coordinate (one step saved without its
    dimension), or None."""
    for name, c in da.coords.items():
        if (
            c.ndim == 0
            and (str(name) == "time" or c.attrs.get("axis") == "T")
            and _is_dates(c.values.reshape(1))
        ):
            return c.values.reshape(1)[0]
    return None


def _date_of(times: Any, text: str) -> Any:
    """``text`` as a date of the calendar of ``times`` (cftime objects or datetime64)."""
    import cftime

    m = _DATE.match(text)
    assert m is not None
    y, mo, d = int(m[1]), int(m[2]), int(m[3])
    h, mi = int(m[4] or 0), int(m[5] or 0)
    first = times[0]
    calendar = getattr(first, "calendar", None) or "standard"
    try:
        return cftime.datetime(
            y, mo, d, h, mi, calendar=calendar, has_year_zero=getattr(first, "has_year_zero", None)
        )
    except ValueError:
        raise ConfigError(
            f"--time {text!r} is not a date of the {calendar!r} calendar of the file."
        ) from None


def _has_time_of_day(text: str) -> bool:
    m = _DATE.match(text)
    return m is not None and m[4] is not None


def _as_days(times: Any, calendar: str) -> np.ndarray:
    """Days since 1970-01-01 of datetime64 values or cftime dates of ``calendar``."""
    import cftime

    if np.issubdtype(np.asarray(times).dtype, np.datetime64):
        t = np.asarray(times, dtype="datetime64[s]").astype(np.int64)
        return t / 86400.0
    return np.asarray(
        cftime.date2num(list(times), "days since 1970-01-01", calendar=calendar), dtype=float
    )


def _ymd(t: Any) -> tuple[int, int, int]:
    """(year, month, day) of a cftime date or a datetime64 value, in its own calendar."""
    if hasattr(t, "calendar"):
        return int(t.year), int(t.month), int(t.day)
    y, m, d = str(np.datetime64(t, "D")).lstrip("+").rsplit("-", 2)
    return int(y), int(m), int(d)


def _fmt(t: Any, with_time: bool = False) -> str:
    """A date as YYYY-MM-DD, with HH:MM for sub-daily series."""
    pattern = "%Y-%m-%d %H:%M" if with_time else "%Y-%m-%d"
    try:
        return str(t.strftime(pattern))
    except AttributeError:
        value = np.datetime64(t, "m") if with_time else np.datetime64(t, "D")
        return str(np.datetime_as_string(value)).replace("T", " ")


def _is_subdaily(days: np.ndarray) -> bool:
    """Whether steps (in days) are mostly less than a day apart."""
    return days.size > 1 and float(np.median(np.diff(days))) < 0.99


def _step_on_day(times: Any, days: np.ndarray, text: str, target: Any, where: str) -> int:
    """The index of the step in the calendar day of ``target`` (a date without time of day).

    Daily data stamped at any hour give the step of that day (never the previous day's for a
    12:00 stamp); sub-daily data need a time of day; monthly (yearly) data give the step of
    that month (year), other coarser data the nearest step.
    """
    day = (int(target.year), int(target.month), int(target.day))
    on_day = [i for i, t in enumerate(times) if _ymd(t) == day]
    sub = _is_subdaily(days)
    if len(on_day) == 1:
        return on_day[0]
    if len(on_day) > 1:
        hours = ", ".join(_fmt(times[i], True)[-5:] for i in on_day[:6])
        more = ", ..." if len(on_day) > 6 else ""
        raise ConfigError(
            f"{where} has {len(on_day)} time steps on {text} ({hours}{more}); add the time "
            f"of day, e.g. --time '{text} {_fmt(times[on_day[0]], True)[-5:]}'."
        )
    t0 = float(np.asarray(_as_days([target], getattr(target, "calendar", "standard")))[0])
    gaps = np.diff(days)[np.diff(days) > 0]
    step = float(np.median(gaps)) if gaps.size and float(gaps.min()) > 1.01 else 0.0
    if step:  # coarser than daily: the step of that month or year, else the nearest
        for n, size in ((2, (27.0, 32.0)), (1, (359.0, 367.0))):
            same = [i for i, t in enumerate(times) if _ymd(t)[:n] == day[:n]]
            if size[0] <= step <= size[1] and len(same) == 1:
                return same[0]
        return int(np.argmin(np.abs(days - t0)))
    before = [i for i in range(len(times)) if days[i] < t0]
    after = [i for i in range(len(times)) if days[i] > t0]
    near = [_fmt(times[i], sub) for i in ([before[-1]] if before else []) + after[:1]]
    raise ConfigError(
        f"{where} has no time step on {text} (nearest: {' and '.join(near)}); choose a date "
        "of the file or an index."
    )


def select_time(da: xr.DataArray, choice: TimeChoice) -> tuple[xr.DataArray, str]:
    """Reduce the time dimension as chosen; return the field and a label for the title.

    A date without a time of day picks the step in that calendar day (any stamp hour, any
    calendar; sub-daily series need a time of day, monthly ones the step of that month); a
    date with a time of day picks the nearest step. Dates more than a day outside the file's
    period are refused. An index counts from 0 (negative from the end). Without a choice
    a series of more than one step is refused, so that nobody plots the first day by accident;
    a single step (a time dimension of one, or a scalar time coordinate) is labelled with its
    date.
    """
    where = da.encoding.get("source", "the file")
    tdim = _time_dim(da)
    name = da.name
    if tdim is None:
        if choice.when is not None or choice.mean:
            flag = "--mean" if choice.mean else "--time"
            raise DataError(f"{name} in {where} has no time dimension; drop {flag}.")
        t = _scalar_time(da)
        return da, _fmt(t) if t is not None else ""
    n = da.sizes[tdim]
    times = da[tdim].values if tdim in da.coords and _is_dates(da[tdim].values) else None
    calendar = (getattr(times[0], "calendar", None) or "standard") if times is not None else ""
    days = _as_days(times, calendar) if times is not None else np.zeros(0)
    sub = _is_subdaily(days)
    if choice.mean:
        out = da.mean(tdim, keep_attrs=True)
        methods = str(out.attrs.get("cell_methods", "")).strip()
        out.attrs["cell_methods"] = f"{methods} {tdim}: mean".strip()
        label = (
            f"mean {_fmt(times[0], sub)} to {_fmt(times[-1], sub)}" if times is not None else "mean"
        )
        return out, label
    if choice.when is None:
        if n == 1:
            return da.isel({tdim: 0}), _fmt(times[0]) if times is not None else ""
        raise DataError(
            f"{name} in {where} has {n} time steps; choose one with --time DATE|INDEX "
            "or average them with --mean."
        )
    if isinstance(choice.when, int):
        i = choice.when
        if not -n <= i < n:
            raise ConfigError(
                f"--time {i} is out of range: {where} has {n} time steps "
                f"(0 to {n - 1}, or negative from the end)."
            )
    else:
        if times is None:
            raise DataError(
                f"the time dimension of {name} in {where} has no dates; give --time as an index."
            )
        target = _date_of(times, choice.when)
        t0 = float(np.asarray(_as_days([target], calendar))[0])
        if t0 < days.min() - 1.0 or t0 > days.max() + 1.0:
            raise ConfigError(
                f"--time {choice.when} is outside the period of {where} "
                f"({_fmt(times[0], sub)} to {_fmt(times[-1], sub)})."
            )
        if _has_time_of_day(choice.when):
            i = int(np.argmin(np.abs(days - t0)))
        else:
            i = _step_on_day(times, days, choice.when, target, where)
    out = da.isel({tdim: i})
    return out, _fmt(times[i], sub) if times is not None else f"step {i}"


def _label(path: Path, other: Path) -> str:
    """A short panel label: the file name without suffix, with its folder if both are alike."""
    return path.stem if path.stem != other.stem else f"{path.parent.name}/{path.stem}"


def _to_units(da: xr.DataArray, units: str) -> xr.DataArray:
    """``da`` converted to ``units`` (pint, udunits spellings); DataError when impossible."""
    have = str(da.attrs.get("units", "")).strip()
    if have == units.strip():
        return da
    from climdl.data.units import UREG, parse_units

    try:
        values = (
            UREG.Quantity(np.asarray(da.values, float), parse_units(have))
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
    """True if ``path`` names a scene: a Landsat MTL file or its folder, a GeoTIFF, or a
    readable NetCDF file with an image variable (a ``band`` dimension)."""
    import xarray as xr

    from climdl.clouds.scene import BAND_DIM

    p = Path(path)
    if p.is_dir() or p.name.upper().endswith(("_MTL.TXT", "_MTL.JSON")):
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
    from climdl.clouds.scene import BAND_DIM, bands_of, image_name, open_scene, spatial_dims
    from climdl.plot.masks import RGB_BANDS, mask_panels, rgb_composite, rgb_indices

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
