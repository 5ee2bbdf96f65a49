"""The labelled scenes a training run reads: one source per scene, checked to agree.

A :class:`SceneSource` describes one labelled scene (shape, bands, classes) and reads a window
of it from a scene NetCDF (:mod:`climdl.clouds.scene`), a 38-Cloud or CloudSEN12 patch
(:mod:`climdl.clouds.layouts`) or memory. :func:`scene_sources` finds the scenes of a folder or
a list of files and checks that they share bands (reordered by name to the first scene's order)
and classes; :func:`ensure_sample` generates the embedded synthetic sample into the cache on
first use. Kept apart from the DataModule (:mod:`climdl.clouds.data`) so that the threshold
baseline (:mod:`climdl.tasks.threshold_scores`) reads the same scenes without it; like the
DataModule, it is training data, which the jobs never import (pyproject.toml's contract).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from climdl.clouds.context import read_context, thermal_band
from climdl.clouds.readers import open_scene
from climdl.clouds.scene import (
    MASK_VAR,
    Band,
    bands_of,
    classes_of,
    read_image,
    read_mask,
    spatial_dims,
    validate_scene,
)
from climdl.errors import ConfigError, DataError

__all__ = ["Layout", "SceneSource", "ensure_sample", "sample_root", "scene_sources"]

Layout = Literal["netcdf", "38-cloud", "cloudsen12"]


@dataclass
class SceneSource:
    """One labelled scene: its shape, bands, classes and attributes, and a window reader.

    ``image``/``mask`` hold the data when loaded into memory; otherwise ``path`` (NetCDF) or
    ``patch`` (38-Cloud or CloudSEN12, as ``layout`` says: ``(root, name, split)``) is read at
    each access.

    Attributes:
        name: the scene's name.
        shape: (rows, columns).
        bands: the bands, in the order read.
        classes: the class names, in label order.
        attrs: the scene's attributes.
        path: the scene NetCDF, read at each access.
        patch: a 38-Cloud or CloudSEN12 patch ``(root, name, split)``, read at each access.
        order: band indices that bring the bands into the first scene's order.
        image: the bands in memory ``[C, H, W]``, or None.
        mask: the labels in memory ``[H, W]``, or None.
        layout: the dataset layout of ``patch`` (``38-cloud`` or ``cloudsen12``).
        ctx: the scene's thermal context once computed (:meth:`context`), else None.
    """

    name: str
    shape: tuple[int, int]
    bands: list[Band]
    classes: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    patch: tuple[Path, str, str] | None = None
    order: list[int] | None = None
    image: np.ndarray | None = None
    mask: np.ndarray | None = None
    layout: Layout = "38-cloud"
    ctx: np.ndarray | None = None

    def read(self, window: tuple[slice, slice] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``([C, h, w] float32, [h, w] uint8)`` of the window (the whole scene by default)."""
        win = window or (slice(None), slice(None))
        if self.image is not None and self.mask is not None:
            return self.image[:, win[0], win[1]], self.mask[win]
        if self.path is not None:
            with open_scene(self.path) as ds:
                return read_image(ds, win, self.order), read_mask(ds, win)
        assert self.patch is not None
        from climdl.clouds.layouts import read_patch

        root, pname, split = self.patch
        ds = read_patch(self.layout, root, pname, split)  # type: ignore[arg-type]
        return read_image(ds, win, self.order), read_mask(ds, win)

    def context(self) -> np.ndarray:
        """The whole scene's thermal context (:mod:`climdl.clouds.context`), computed on first
        use and kept: the percentiles every crop of the scene carries; empty without a
        thermal band."""
        if self.ctx is None:
            t = thermal_band(self.bands)
            if t is None:
                self.ctx = np.zeros(0, np.float32)
            else:
                h, w = self.shape
                self.ctx = read_context(lambda r, c: self.read((r, c))[0], h, w, t)
        return self.ctx

    def load(self) -> None:
        """Keep the scene in memory."""
        if self.image is None:
            self.image, self.mask = self.read()
            self.path = None


def _netcdf_source(path: Path) -> SceneSource:
    with open_scene(path) as ds:
        validate_scene(ds, path, labelled=True)
        ydim, xdim = spatial_dims(ds, path)
        return SceneSource(
            name=path.stem,
            shape=(ds.sizes[ydim], ds.sizes[xdim]),
            bands=bands_of(ds, path),
            classes=classes_of(ds, path),
            attrs=dict(ds.attrs),
            path=path,
        )


def _38cloud_sources(root: Path, max_scenes: int | None) -> list[SceneSource]:
    from climdl.clouds.layouts import CLOUD38_BANDS, list_38cloud_patches, read_38cloud_patch

    names = list_38cloud_patches(root, "train")[: max_scenes or None]
    first = read_38cloud_patch(root, names[0], "train")
    if MASK_VAR not in first:
        raise DataError(f"{root}: 38-Cloud patches without ground truth (train_gt/) cannot train.")
    shape = (first.sizes["y"], first.sizes["x"])
    return [
        SceneSource(
            name=n,
            shape=shape,
            bands=list(CLOUD38_BANDS),
            classes=classes_of(first),
            patch=(root, n, "train"),
        )
        for n in names
    ]


def _cloudsen12_sources(root: Path, max_scenes: int | None) -> list[SceneSource]:
    from climdl.clouds.layouts import list_cloudsen12_patches, read_cloudsen12_patch

    names = list_cloudsen12_patches(root)[: max_scenes or None]
    first = read_cloudsen12_patch(root, names[0])
    shape = (first.sizes["y"], first.sizes["x"])
    bands, classes = bands_of(first), classes_of(first)
    return [
        SceneSource(name=n, shape=shape, bands=list(bands), classes=list(classes),
                    patch=(root, n, "train"), layout="cloudsen12")
        for n in names
    ]  # fmt: skip


def scene_sources(
    root: str | Path | None,
    layout: Layout = "netcdf",
    files: Sequence[str] | None = None,
    max_scenes: int | None = None,
) -> list[SceneSource]:
    """Sources of the labelled scenes in ``root`` (``*.nc``) or of ``files``, checked to agree
    on bands (reordered by name to the first scene's order) and classes.

    Args:
        root: folder of the scenes (or of the 38-Cloud tree); None: use ``files``.
        layout: ``netcdf`` (scene files), ``38-cloud`` (the 38-Cloud training folder) or
            ``cloudsen12`` (the CloudSEN12 folder of patch folders).
        files: scene NetCDF files, instead of ``root``.
        max_scenes: use at most this many scenes.

    Returns:
        One source per scene.

    Raises:
        ConfigError: layout ``38-cloud`` or ``cloudsen12`` without ``root``.
        DataError: no scene, or scenes that disagree on bands or classes.
    """
    if layout == "38-cloud":
        if root is None:
            raise ConfigError("layout 38-cloud needs data.root: the 38-Cloud_training folder.")
        srcs = _38cloud_sources(Path(root), max_scenes)
    elif layout == "cloudsen12":
        if root is None:
            raise ConfigError("layout cloudsen12 needs data.root: the CloudSEN12 folder.")
        srcs = _cloudsen12_sources(Path(root), max_scenes)
    else:
        paths: list[Path] = []
        if files:
            paths = [Path(f) for f in files]
        elif root is not None:
            r = Path(root)
            if not r.is_dir():
                raise DataError(
                    f"scene folder {r} does not exist; make one with "
                    "`climdl sample-clouds DIR` or point data.root at your scenes."
                )
            paths = sorted(r.glob("*.nc"))
            if not paths:
                raise DataError(f"no scene NetCDF files (*.nc) in {r}.")
        srcs = [_netcdf_source(p) for p in paths[: max_scenes or None]]
    if not srcs:
        raise DataError("no labelled scenes were given.")
    ref = srcs[0]
    names = [b.name for b in ref.bands]
    for s in srcs[1:]:
        if s.classes != ref.classes:
            raise DataError(
                f"scene {s.name} has classes {s.classes} but {ref.name} has "
                f"{ref.classes}; all training scenes need the same label set."
            )
        theirs = [b.name for b in s.bands]
        if set(theirs) != set(names):
            raise DataError(
                f"scene {s.name} has bands {theirs} but {ref.name} has {names}; all "
                "training scenes need the same bands."
            )
        if theirs != names:
            s.order = [theirs.index(n) for n in names]
            s.bands = list(ref.bands)
    return srcs


def sample_root(size: tuple[int, int], seed: int) -> Path:
    """Cache folder of the embedded synthetic sample of this size and seed.

    Args:
        size: the scenes' (rows, columns).
        seed: the random seed.

    Returns:
        A folder under the climdl cache.
    """
    from climdl.data.catalog import cache_dir

    return cache_dir() / "clouds-sample" / f"{size[0]}x{size[1]}-seed{seed}"


def ensure_sample(n_scenes: int, size: tuple[int, int], seed: int) -> list[str]:
    """The first ``n_scenes`` sample scenes of this size and seed, generated on first use."""
    from climdl.clouds.sample import write_cloud_sample

    res = write_cloud_sample(sample_root(size, seed), n_scenes, size, seed, skip_existing=True)
    return [str(p) for p in res.files]
