"""Maps and figures for the CLI, the evaluation report and the notebooks.

Fields are drawn on their native grids (Lambert, rotated pole, lat/lon) with cartopy, with
coastlines, lakes and borders from shapes shipped inside climdl (nothing is downloaded), colour
maps chosen from what a field is, and colour bars with units. Figures are built on the Agg
canvas without pyplot and saved atomically.
"""

from __future__ import annotations

from climdl.plot.coastlines import add_coastlines, select_lines
from climdl.plot.colours import colour_spec, infer_kind
from climdl.plot.figures import new_figure, save_figure
from climdl.plot.maps import panel_figure, plot_field
from climdl.plot.masks import mask_panels, plot_mask_over_rgb, rgb_composite
from climdl.plot.projection import MapFrame, crs_from_cf, grid_of, map_frame
from climdl.plot.spectra import plot_psd

__all__ = [
    "MapFrame",
    "add_coastlines",
    "colour_spec",
    "crs_from_cf",
    "grid_of",
    "infer_kind",
    "map_frame",
    "mask_panels",
    "new_figure",
    "panel_figure",
    "plot_field",
    "plot_mask_over_rgb",
    "plot_psd",
    "rgb_composite",
    "save_figure",
    "select_lines",
]
