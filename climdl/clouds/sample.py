"""``climdl sample-clouds``: write labelled synthetic scenes as CF NetCDF files.

``OUT_DIR/scene_000.nc, scene_001.nc, ...``: each follows :mod:`climdl.clouds.scene` (image,
CF flag ``mask``, band names and wavelengths, projected ``y``/``x`` on an azimuthal-equidistant
grid mapping, 2-D ``lat``/``lon``) and is made by :func:`climdl.clouds.synthetic.make_scene`
from ``SeedSequence([seed, index])``: the same seed and size give the same files, and scene
``i`` does not depend on how many scenes are written. ``sensor="sentinel2"`` writes the same
scenes (same labels) through Sentinel-2 MSI bands
(:data:`~climdl.clouds.scene.SENTINEL2_SAMPLE_BANDS`, no thermal band) instead of Landsat's,
so that a Sentinel-2 segmenter can be trained and demonstrated offline.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from climdl import __version__
from climdl.clouds.scene import CLASSES, IMAGE_VAR, MASK_VAR, make_scene, write_scene
from climdl.clouds.synthetic import SENSORS, Sensor, SyntheticScene, sensor_bands
from climdl.clouds.synthetic import make_scene as synthesise
from climdl.errors import ConfigError
from climdl.io.provenance import CF_CONVENTIONS, stamped


@dataclass(frozen=True)
class CloudSample:
    """What :func:`write_cloud_sample` wrote."""

    root: Path
    files: list[Path]
    seconds: float

    @property
    def nbytes(self) -> int:
        """Total size of the files."""
        return sum(p.stat().st_size for p in self.files)


def scene_dataset(
    scene: SyntheticScene, seed: int, index: int, sensor: Sensor = "landsat"
) -> xr.Dataset:
    """The CF Dataset of a synthetic scene whose bands are those of ``sensor``."""
    cf = scene.crs.to_cf()
    crs_var = xr.DataArray(
        np.int32(0),
        attrs={k: v for k, v in cf.items() if k != "crs_wkt"}
        | {"crs_wkt": cf.get("crs_wkt", scene.crs.to_wkt())},
    )
    coords = {
        "y": (
            "y",
            scene.y,
            {
                "standard_name": "projection_y_coordinate",
                "units": "m",
                "long_name": "y coordinate of projection",
                "axis": "Y",
            },
        ),
        "x": (
            "x",
            scene.x,
            {
                "standard_name": "projection_x_coordinate",
                "units": "m",
                "long_name": "x coordinate of projection",
                "axis": "X",
            },
        ),
        "lat": (
            ("y", "x"),
            scene.lat.astype(np.float32),
            {"standard_name": "latitude", "units": "degrees_north"},
        ),
        "lon": (
            ("y", "x"),
            scene.lon.astype(np.float32),
            {"standard_name": "longitude", "units": "degrees_east"},
        ),
    }
    how = f"seed {seed}, scene {index}" + (f", sensor {sensor}" if sensor != "landsat" else "")
    attrs = dict(scene.attrs) | {
        "Conventions": CF_CONVENTIONS,
        "history": stamped(f"climdl sample-clouds (climdl {__version__}, {how})"),
        "climdl_version": __version__,
        "seed": seed,
        "scene_index": index,
    }
    ds = make_scene(
        scene.image, sensor_bands(sensor), coords, mask=scene.mask, classes=CLASSES, attrs=attrs
    )
    ds["crs"] = crs_var
    for name in (IMAGE_VAR, MASK_VAR):
        ds[name].attrs["grid_mapping"] = "crs"
    return ds


def write_cloud_sample(
    out_dir: str | Path,
    n_scenes: int = 16,
    size: tuple[int, int] = (256, 256),
    seed: int = 0,
    *,
    overwrite: bool = False,
    skip_existing: bool = False,
    progress: Callable[[int, int], None] | None = None,
    sensor: Sensor = "landsat",
) -> CloudSample:
    """Write ``n_scenes`` labelled scenes of ``size`` (rows, columns) into ``out_dir``.

    ``skip_existing`` keeps files already there (a cache being filled); otherwise an existing
    file is an :class:`~climdl.errors.OutputError` unless ``overwrite``. ``sensor``: whose
    bands the scenes have (``landsat`` or ``sentinel2``).
    """
    if sensor not in SENSORS:
        raise ConfigError(f"--sensor must be one of {', '.join(SENSORS)}, got {sensor!r}.")
    if n_scenes < 1:
        raise ConfigError(f"--n-scenes must be at least 1, got {n_scenes}.")
    if min(size) < 16 or max(size) > 8192:
        raise ConfigError(f"--size must be between 16 and 8192 pixels per side, got {size}.")
    t0 = time.perf_counter()
    root = Path(out_dir)
    files: list[Path] = []
    for i in range(n_scenes):
        path = root / f"scene_{i:03d}.nc"
        if not (skip_existing and path.is_file()):
            scene = synthesise(np.random.SeedSequence([seed, i]), size, sensor=sensor)
            write_scene(scene_dataset(scene, seed, i, sensor), path, overwrite=overwrite)
        files.append(path)
        if progress is not None:
            progress(i + 1, n_scenes)
    return CloudSample(root=root, files=files, seconds=time.perf_counter() - t0)
