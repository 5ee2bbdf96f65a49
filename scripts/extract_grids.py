"""Build climdl/data/grids/{ALPS,SA}.nc from the CORDEX ML-Bench prediction templates.

Run once by the developers (the outputs are committed); kept for provenance. The templates are
MIT-licensed (WCRP-CORDEX/ml-benchmark, format_predictions/templates). Only the grids are kept:
the placeholder data are dropped. ALPS gains the Lambert_Conformal grid-mapping variable that the
template names but lacks; its parameters were fitted to the template's 2-D lat/lon (residual
< 1e-11 km): lat_1 = lat_2 = lat_0 = 49.5, lon_0 = 10.5, sphere R = 6371229 m, false
easting/northing 2825 km, x/y in km.

    python scripts/extract_grids.py ../shared/data/cordex-ml-bench-templates climdl/data/grids
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import xarray as xr


def main(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    alps = xr.open_dataset(src / "tasmax_ALPS.nc", decode_times=False)
    out = xr.Dataset(
        coords={
            "x": alps["x"].astype("f8"),
            "y": alps["y"].astype("f8"),
            "lat": alps["lat"].astype("f8"),
            "lon": alps["lon"].astype("f8"),
        }
    )
    for c in ("lat", "lon"):
        out[c].attrs.pop("bounds", None)
    out["Lambert_Conformal"] = xr.DataArray(
        np.int32(0),
        attrs={
            "grid_mapping_name": "lambert_conformal_conic",
            "standard_parallel": [49.5, 49.5],
            "longitude_of_central_meridian": 10.5,
            "latitude_of_projection_origin": 49.5,
            "false_easting": 2825000.0,
            "false_northing": 2825000.0,
            "earth_radius": 6371229.0,
        },
    )
    out.attrs = {
        "title": "CORDEX ML-Bench ALPS target grid (ALADIN63 EUR-11 Lambert, 12.5 km)",
        "source": "WCRP-CORDEX/ml-benchmark format_predictions/templates/tasmax_ALPS.nc (MIT)",
    }
    enc = {v: {"_FillValue": None} for v in list(out.variables)}
    out.to_netcdf(dst / "ALPS.nc", encoding=enc)

    sa = xr.open_dataset(src / "tasmax_SA.nc", decode_times=False)
    out = xr.Dataset(
        coords={"lat": sa["lat"].astype("f8").round(4), "lon": sa["lon"].astype("f8").round(4)}
    )
    for c in ("lat", "lon"):
        out[c].attrs = {k: v for k, v in sa[c].attrs.items() if k != "bounds"}
    out["crs"] = xr.DataArray(np.int32(0), attrs={"grid_mapping_name": "latitude_longitude"})
    out.attrs = {
        "title": "CORDEX ML-Bench SA target grid (regular 0.1 deg)",
        "source": "WCRP-CORDEX/ml-benchmark format_predictions/templates/tasmax_SA.nc (MIT)",
    }
    enc = {v: {"_FillValue": None} for v in list(out.variables)}
    out.to_netcdf(dst / "SA.nc", encoding=enc)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
