"""Maps of fields on their native grids, alone or side by side.

:func:`plot_field` draws one 2-D field in its own projection (the Lambert rectangle of the ALPS
grid, an equirectangular box for lat/lon grids) with the shipped coastlines, lake shores and
borders, a colour map chosen from what the field is, and a colour bar with units.
:func:`panel_figure` puts several fields in one figure on a common map frame (a 2-degree
predictor next to the 12.5 km truth it is downscaled to) and shares colour scales between
panels of the same kind.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from climdl.errors import ConfigError
from climdl.plot.coastlines import add_coastlines
from climdl.plot.colours import (
    KINDS,
    Kind,
    ResolvedKind,
    colour_spec,
    colourbar_label,
    infer_kind,
    is_precipitation,
    robust_limits,
)
from climdl.plot.figures import drawable_text, new_figure
from climdl.plot.projection import Grid, MapFrame, grid_of, map_frame

if TYPE_CHECKING:
    import cartopy.crs as ccrs
    import xarray as xr
    from cartopy.mpl.geoaxes import GeoAxes
    from matplotlib.axes import Axes
    from matplotlib.colors import Colormap
    from matplotlib.figure import Figure


def as_2d(da: xr.DataArray) -> xr.DataArray:
    """``da`` without its length-1 dimensions (kept as scalar coordinates, e.g. the time)."""
    single = [d for d in da.dims if da.sizes[d] == 1]
    return da.squeeze(single) if single and da.ndim - len(single) >= 2 else da


def _time_label(da: xr.DataArray) -> str:
    if "time" not in da.coords or da.coords["time"].ndim != 0:
        return ""
    t = da.coords["time"].values.item() if hasattr(da.coords["time"].values, "item") else None
    if t is None:
        return ""
    if isinstance(t, int):  # numpy datetime64[ns] .item() gives nanoseconds
        t = np.datetime64(t, "ns").astype("datetime64[s]").item()
    try:
        return str(t.strftime("%Y-%m-%d"))
    except (AttributeError, ValueError):
        return str(t)


def default_title(da: xr.DataArray) -> str:
    """``long_name`` (or name) and, for one time step, its date."""
    name = str(da.attrs.get("long_name") or da.name or "")
    when = _time_label(da)
    return f"{name}, {when}" if name and when else name or when


def _figsize(frame: MapFrame, cbar_below: bool) -> tuple[float, float]:
    """6 inches wide, tall enough for the map's aspect plus title and colour bar."""
    if frame.extent is None:
        x0, x1 = frame.projection.x_limits
        y0, y1 = frame.projection.y_limits
    else:
        x0, x1, y0, y1 = frame.extent
    aspect = (y1 - y0) / max(x1 - x0, 1e-9)
    map_width = 4.6 if not cbar_below else 5.6
    extra = 1.4 if cbar_below else 0.7
    return 6.0, float(np.clip(map_width * aspect + extra, 2.5, 9.0))


def _is_time_mean(da: xr.DataArray) -> bool:
    """Whether cell_methods say the field is a time mean (no wet-day colour for climatologies)."""
    return "time: mean" in str(da.attrs.get("cell_methods", ""))


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ConfigError(f"unknown colour kind {kind!r}; choose one of {', '.join(KINDS)}.")


def _resolve(da: xr.DataArray, kind: str, values: np.ndarray) -> ResolvedKind:
    _check_kind(kind)
    return infer_kind(da, values) if kind == "auto" else kind  # type: ignore[return-value]


def _frame_for(grid: Grid, ax: GeoAxes, frame: MapFrame | None) -> MapFrame:
    """``frame`` if it matches the projection of ``ax``, else the grid's frame in that projection."""
    if frame is not None and frame.projection == ax.projection:
        return frame
    return map_frame(grid, ax.projection)


def plot_field(
    da: xr.DataArray,
    *,
    ax: Axes | None = None,
    kind: Kind = "auto",
    title: str | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    cmap: str | Colormap | None = None,
    cbar: bool = True,
    crs: ccrs.CRS | Mapping[str, Any] | None = None,
    coastlines: bool = True,
    borders: bool = True,
    lakes: bool | None = None,
    gridlines: bool = True,
    frame: MapFrame | None = None,
    projection: ccrs.Projection | None = None,
    cbar_orientation: Literal["vertical", "horizontal"] = "vertical",
    figsize: tuple[float, float] | None = None,
) -> Axes:
    """Draw a 2-D field (dims y/x or lat/lon; length-1 dims are dropped) on a map; return the axes.

    The projection comes from ``crs`` (cartopy CRS or CF grid-mapping dict), the DataArray's
    grid-mapping coordinate, or its lat/lon coordinates (see :mod:`climdl.plot.projection`);
    ``frame`` or ``projection`` force another map (panels of one figure share a frame). ``kind``
    picks the colours (:mod:`climdl.plot.colours`; "auto" infers it). Coastlines, lake shores
    (``lakes`` follows ``coastlines`` by default) and borders come from shapes shipped with
    climdl, never downloaded. A new figure (Agg canvas, ``figsize`` or 6 inches wide with the
    height following the map's aspect) is made when ``ax`` is None;
    a plain matplotlib axes gets the field in its native x/y coordinates without a map.

    Args:
        da: the 2-D field.
        ax: the axes to draw on; None: a new figure.
        kind: colour kind: ``auto``, ``sequential``, ``diverging``, ``precip`` or ``temperature``.
        title: the panel's title (default: the field's name and units).
        vmin: lower colour limit; None: robust limit.
        vmax: upper colour limit; None: robust limit.
        cmap: a colour map replacing the kind's default.
        cbar: draw a colour bar.
        crs: the field's CRS (cartopy CRS or CF grid-mapping attributes); None: found from ``da``.
        coastlines: draw coastlines.
        borders: draw country borders.
        lakes: draw lake shores; None: with the coastlines.
        gridlines: draw lat/lon grid lines.
        frame: the map to draw on (shared by the panels of one figure).
        projection: a map projection to use instead of the field's own.
        cbar_orientation: ``vertical`` or ``horizontal`` colour bar.
        figsize: size of the new figure (inches); None: 6 inches wide.

    Returns:
        The axes drawn on.

    Raises:
        ConfigError: an unknown ``kind``.
        DataError: a field that cannot be placed on a map.
    """
    from cartopy.mpl.geoaxes import GeoAxes

    field = as_2d(da)
    grid = grid_of(field, crs)
    resolved = _resolve(field, kind, grid.values)
    spec = colour_spec(
        grid.values,
        resolved,
        units=str(field.attrs.get("units", "")),
        vmin=vmin,
        vmax=vmax,
        cmap=cmap,
        precip_difference=resolved == "diverging" and is_precipitation(field),
        dry=0.0 if _is_time_mean(field) else None,
    )
    if ax is None:
        fr = frame if frame is not None else map_frame(grid, projection)
        size = figsize or _figsize(fr, cbar and cbar_orientation == "horizontal")
        ax = new_figure(size).add_subplot(1, 1, 1, projection=fr.projection)
        frame = fr
    if isinstance(ax, GeoAxes):
        fr = _frame_for(grid, ax, frame)
        mesh = ax.pcolormesh(
            grid.x,
            grid.y,
            grid.values,
            transform=grid.crs,
            cmap=spec.cmap,
            norm=spec.norm,
            shading="auto",
            rasterized=True,
        )
        if fr.extent is None:
            ax.set_global()
        else:
            ax.set_extent(fr.extent, crs=fr.projection)
        add_coastlines(
            ax,
            fr.lonlat_extent,
            coast=coastlines,
            lakes=coastlines if lakes is None else lakes,
            borders=borders,
        )
        if gridlines:
            ax.gridlines(linewidth=0.3, color="0.4", alpha=0.6, linestyle=":")
    else:
        scale = 1.0 if grid.geographic else 1e-3
        mesh = ax.pcolormesh(
            grid.x * scale,
            grid.y * scale,
            grid.values,
            cmap=spec.cmap,
            norm=spec.norm,
            shading="auto",
            rasterized=True,
        )
        unit = "degrees" if grid.geographic else "km"
        ax.set_xlabel(f"x [{unit}]")
        ax.set_ylabel(f"y [{unit}]")
        ax.set_aspect("equal")
    mesh.set_gid("field")
    if cbar:
        fig = ax.get_figure()
        assert fig is not None
        fig.colorbar(
            mesh,
            ax=ax,
            orientation=cbar_orientation,
            extend=spec.extend,
            label=drawable_text(colourbar_label(field)),
            shrink=0.9,
            pad=0.03 if cbar_orientation == "vertical" else 0.05,
        )
    # a title from the user or the file's attributes: math where it parses, else as typed
    ax.set_title(drawable_text(default_title(field) if title is None else title), fontsize="medium")
    return ax


def _reference(grids: Sequence[Grid]) -> Grid:
    """The grid whose frame a multi-panel figure uses: the finest projected one, else the finest."""
    import cartopy.crs as ccrs

    projected = [g for g in grids if not isinstance(g.crs, ccrs.PlateCarree)]
    pool = projected or list(grids)
    return max(pool, key=lambda g: g.values.size)


def _quantity(da: xr.DataArray, kind: ResolvedKind) -> tuple[str, ...]:
    """What panels must have in common to share a colour scale: kind, units and quantity.

    A bias shares with other biases of the same units; a map shares with maps of the same
    variable (standard_name or name, and cell_methods: tasmax is not the 850 hPa temperature).
    """
    units = str(da.attrs.get("units", ""))
    if kind == "diverging":
        return (kind, units)
    what = str(da.attrs.get("standard_name") or da.name or "")
    return (kind, units, what, str(da.attrs.get("cell_methods", "")))


def _kind_of(key: tuple[str, ...]) -> ResolvedKind:
    return key[0]  # type: ignore[return-value]


def panel_figure(
    fields: Sequence[tuple[str, xr.DataArray]] | Mapping[str, xr.DataArray],
    *,
    kinds: Sequence[str] | None = None,
    ncols: int | None = None,
    shared: bool | Sequence[Hashable] = True,
    suptitle: str | None = None,
    frame: MapFrame | None = None,
    coastlines: bool = True,
    borders: bool = True,
    gridlines: bool = False,
    panel_size: tuple[float, float] = (3.6, 3.6),
    limits: Sequence[tuple[float | None, float | None] | None] | None = None,
) -> Figure:
    """Side-by-side maps of ``(label, field)`` pairs, e.g. coarse input / truth / emulator / bias.

    Every panel is drawn on one frame: that of the finest projected grid among the fields (so a
    coarse lat/lon predictor appears in the Lambert rectangle of the target), or ``frame``.
    ``kinds`` gives each panel's colour kind ("auto" by default). With ``shared``, panels of the
    same kind showing the same quantity in the same units (all biases of one unit count as one)
    get one colour scale, limits taken over all of them; each panel keeps its own horizontal
    colour bar. ``shared`` may also be one group label per panel (panels of equal label and
    kind share a scale). ``limits`` gives per panel ``(vmin, vmax)`` (either may be None) or
    None, overriding the shared scale. Small panels have no lat/lon ``gridlines`` by default.
    ``ncols`` defaults to all panels in one row up to 4.

    Args:
        fields: ``(label, field)`` pairs, or a mapping label -> field.
        kinds: each panel's colour kind; None: ``auto`` for all.
        ncols: panels per row.
        shared: share colour scales between panels (True), or one group label per panel.
        suptitle: the figure's title.
        frame: the map every panel is drawn on; None: the finest projected grid's.
        coastlines: draw coastlines and lake shores.
        borders: draw country borders.
        gridlines: draw lat/lon grid lines.
        panel_size: width and height of a panel (inches).
        limits: per panel ``(vmin, vmax)`` or None.

    Returns:
        The figure (Agg canvas).

    Raises:
        ConfigError: no field, or ``kinds``/``shared``/``limits`` not one per field.
        DataError: a field that cannot be placed on a map.
    """
    items = list(fields.items()) if isinstance(fields, Mapping) else list(fields)
    if not items:
        raise ConfigError("panel_figure needs at least one (label, field) pair.")
    kinds = list(kinds) if kinds is not None else ["auto"] * len(items)
    if len(kinds) != len(items):
        raise ConfigError(f"panel_figure got {len(kinds)} kinds for {len(items)} fields.")
    arrays = [as_2d(da) for _, da in items]
    grids = [grid_of(da) for da in arrays]
    resolved = [_resolve(da, k, g.values) for da, k, g in zip(arrays, kinds, grids, strict=True)]
    fr = frame if frame is not None else map_frame(_reference(grids))
    if isinstance(shared, bool):
        keys = [_quantity(da, k) for da, k in zip(arrays, resolved, strict=True)]
    else:
        groups_given = list(shared)
        if len(groups_given) != len(items):
            raise ConfigError(
                f"panel_figure got {len(groups_given)} groups for {len(items)} fields."
            )
        keys = [(k, str(g)) for k, g in zip(resolved, groups_given, strict=True)]
    if limits is not None and len(limits) != len(items):
        raise ConfigError(f"panel_figure got {len(limits)} limits for {len(items)} fields.")
    scales: dict[tuple[str, ...], tuple[float, float]] = {}
    if shared is not False:
        groups: dict[tuple[str, ...], list[np.ndarray]] = {}
        for key, g in zip(keys, grids, strict=True):
            groups.setdefault(key, []).append(g.values)
        scales = {key: robust_limits(vals, _kind_of(key)) for key, vals in groups.items()}
    n = len(items)
    ncols = max(1, min(ncols or min(n, 4), n))
    nrows = math.ceil(n / ncols)
    fig = new_figure((panel_size[0] * ncols, panel_size[1] * nrows))
    for i, ((label, _), da, k, key) in enumerate(zip(items, arrays, resolved, keys, strict=True)):
        ax = fig.add_subplot(nrows, ncols, i + 1, projection=fr.projection)
        lo, hi = scales.get(key, (None, None))
        if limits is not None and limits[i] is not None:
            given = limits[i]
            assert given is not None
            lo = given[0] if given[0] is not None else lo
            hi = given[1] if given[1] is not None else hi
        plot_field(
            da,
            ax=ax,
            kind=k,
            title=label,
            vmin=lo,
            vmax=hi,
            frame=fr,
            coastlines=coastlines,
            borders=borders,
            gridlines=gridlines,
            cbar_orientation="horizontal",
        )
    if suptitle:
        fig.suptitle(drawable_text(suptitle))
    return fig
