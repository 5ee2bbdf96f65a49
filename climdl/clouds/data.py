"""Labelled scenes for training: sources, crops, and the cloud-segmentation DataModule.

Scenes come from a folder of scene NetCDF files (:mod:`climdl.clouds.scene`), a 38-Cloud folder
(:mod:`climdl.clouds.layouts`), or - with no folder given - the embedded synthetic sample,
generated into the cache (``$CLIMDL_CACHE/clouds-sample``) on first use. The split into training
and validation is by scene, seeded. Batches are raw: ``{"x": float32 [B, C, H, W]`` (NaN where
there are no data), ``"y": int64 [B, H, W]}`` with :data:`~climdl.clouds.scene.NODATA` for
unlabelled pixels; normalisation and augmentation run on the device in the task. Training
batches are random crops (scenes drawn in proportion to their area, positions from a seeded
generator, so runs repeat); validation and test batches are whole scenes, padded.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from climdl.clouds.readers import open_scene
from climdl.clouds.scene import (
    MASK_VAR,
    NODATA,
    Band,
    bands_of,
    classes_of,
    read_image,
    read_mask,
    spatial_dims,
    validate_scene,
)
from climdl.clouds.spec import SegmenterSpec
from climdl.errors import ConfigError, DataError

__all__ = ["CloudDataModule", "SceneSource", "sample_root", "scene_sources"]

log = logging.getLogger(__name__)
Layout = Literal["netcdf", "38-cloud"]
_VIRTUAL = 2**31 - 1  # crops are indexed by a seed, drawn by a RandomSampler


@dataclass
class SceneSource:
    """One labelled scene: its shape, bands, classes and attributes, and a window reader.

    ``image``/``mask`` hold the data when loaded into memory; otherwise ``path`` (NetCDF) or
    ``patch`` (38-Cloud: ``(root, name, split)``) is read at each access.

    Attributes:
        name: the scene's name.
        shape: (rows, columns).
        bands: the bands, in the order read.
        classes: the class names, in label order.
        attrs: the scene's attributes.
        path: the scene NetCDF, read at each access.
        patch: a 38-Cloud patch ``(root, name, split)``, read at each access.
        order: band indices that bring the bands into the first scene's order.
        image: the bands in memory ``[C, H, W]``, or None.
        mask: the labels in memory ``[H, W]``, or None.
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

    def read(self, window: tuple[slice, slice] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``([C, h, w] float32, [h, w] uint8)`` of the window (the whole scene by default)."""
        win = window or (slice(None), slice(None))
        if self.image is not None and self.mask is not None:
            return self.image[:, win[0], win[1]], self.mask[win]
        if self.path is not None:
            with open_scene(self.path) as ds:
                return read_image(ds, win, self.order), read_mask(ds, win)
        assert self.patch is not None
        from climdl.clouds.layouts import read_38cloud_patch

        root, pname, split = self.patch
        ds = read_38cloud_patch(root, pname, split)  # type: ignore[arg-type]
        return read_image(ds, win, self.order), read_mask(ds, win)

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
        layout: ``netcdf`` (scene files) or ``38-cloud`` (the 38-Cloud training folder).
        files: scene NetCDF files, instead of ``root``.
        max_scenes: use at most this many scenes.

    Returns:
        One source per scene.

    Raises:
        ConfigError: layout ``38-cloud`` without ``root``.
        DataError: no scene, or scenes that disagree on bands or classes.
    """
    if layout == "38-cloud":
        if root is None:
            raise ConfigError("layout 38-cloud needs data.root: the 38-Cloud_training folder.")
        srcs = _38cloud_sources(Path(root), max_scenes)
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


# ---------------------------------------------------------------------------- datasets
class CropDataset(Dataset[dict[str, torch.Tensor]]):
    """Random ``crop x crop`` windows of the scenes; item ``i`` is the crop seeded by ``i``."""

    def __init__(self, sources: Sequence[SceneSource], crop: int, seed: int) -> None:
        self.sources = list(sources)
        self.crop = crop
        self.seed = seed
        area = np.array([s.shape[0] * s.shape[1] for s in self.sources], dtype=np.float64)
        self.p = area / area.sum()

    def __len__(self) -> int:
        return _VIRTUAL

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, int(i)])
        src = self.sources[int(rng.choice(len(self.sources), p=self.p))]
        h, w = src.shape
        y0 = int(rng.integers(0, max(h - self.crop, 0) + 1))
        x0 = int(rng.integers(0, max(w - self.crop, 0) + 1))
        x, y = src.read((slice(y0, y0 + self.crop), slice(x0, x0 + self.crop)))
        return _pad_item(x, y, self.crop, self.crop)


class SceneDataset(Dataset[dict[str, torch.Tensor]]):
    """Whole scenes (validation, test)."""

    def __init__(self, sources: Sequence[SceneSource]) -> None:
        self.sources = list(sources)

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        x, y = self.sources[i].read()
        return {
            "x": torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
            "y": torch.from_numpy(y.astype(np.int64)),
        }


def _pad_item(x: np.ndarray, y: np.ndarray, h: int, w: int) -> dict[str, torch.Tensor]:
    """Pad to ``h x w`` with no data (NaN, ``NODATA``)."""
    xt = torch.full((x.shape[0], h, w), float("nan"), dtype=torch.float32)
    yt = torch.full((h, w), NODATA, dtype=torch.int64)
    xt[:, : x.shape[1], : x.shape[2]] = torch.from_numpy(np.ascontiguousarray(x, np.float32))
    yt[: y.shape[0], : y.shape[1]] = torch.from_numpy(y.astype(np.int64))
    return {"x": xt, "y": yt}


class PadCollate:
    """Stack items padded to the batch's largest size rounded up to ``multiple``."""

    def __init__(self, multiple: int) -> None:
        self.multiple = multiple

    def __call__(self, items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Pad every item's image and mask to one batch size and stack them."""
        m = self.multiple
        h = max(int(it["x"].shape[1]) for it in items)
        w = max(int(it["x"].shape[2]) for it in items)
        h, w = -(-h // m) * m, -(-w // m) * m
        padded = [_pad_item(it["x"].numpy(), it["y"].numpy(), h, w) for it in items]
        return {k: torch.stack([p[k] for p in padded]) for k in ("x", "y")}


# ---------------------------------------------------------------------------- data module
class CloudDataModule(L.LightningDataModule):
    """Labelled scenes for :class:`~climdl.tasks.segmentation.SegmentationTask`.

    Args:
        root: folder of scene NetCDF files, or the ``38-Cloud_training`` folder with
            ``layout: 38-cloud``; None: the embedded synthetic sample (cached).
        layout: ``netcdf`` (climdl scenes) or ``38-cloud``.
        files: explicit scene files instead of ``root``.
        sample_scenes: scenes of the embedded sample (``root: null``).
        sample_size: their size (rows, columns).
        sample_seed: their seed.
        val_fraction: share of the scenes held out for validation (at least one).
        split_seed: seed of the scene split and of the crops.
        test_root: held-out scenes scored after training (folder of NetCDF scenes).
        test_sample_scenes: with ``test_root: null``, this many sample scenes of seed
            ``sample_seed + 1`` are the test set (0: no test set).
        crop_size: side of the training crops (a multiple of the network's ``2**depth``).
        samples_per_epoch: training crops per epoch.
        batch_size: training crops per batch.
        val_batch_size: whole scenes per validation batch.
        pad_multiple: validation scenes are padded to a multiple of this (``>= 2**depth``).
        max_scenes: use at most this many scenes of ``root``.
        num_workers: loader worker processes.
        memory_budget_gb: NetCDF scenes are loaded into memory when they fit in this.
        stats_scenes: normalisation statistics from at most this many training scenes.
    """

    def __init__(
        self,
        root: str | None = None,
        layout: Layout = "netcdf",
        files: list[str] | None = None,
        sample_scenes: int = 24,
        sample_size: tuple[int, int] = (128, 128),
        sample_seed: int = 0,
        val_fraction: float = 0.2,
        split_seed: int = 0,
        test_root: str | None = None,
        test_sample_scenes: int = 0,
        crop_size: int = 96,
        samples_per_epoch: int = 512,
        batch_size: int = 16,
        val_batch_size: int = 1,
        pad_multiple: int = 32,
        max_scenes: int | None = None,
        num_workers: int = 0,
        memory_budget_gb: float = 4.0,
        stats_scenes: int = 64,
    ) -> None:
        super().__init__()
        if not 0.0 < val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction must be between 0 and 1, got {val_fraction}.")
        if crop_size < 8 or samples_per_epoch < 1 or batch_size < 1:
            raise ConfigError(
                "data.crop_size (>= 8), samples_per_epoch and batch_size must be positive."
            )
        self.save_hyperparameters()
        self.root = root
        self.layout: Layout = layout
        self.files = files
        self.sample_scenes = sample_scenes
        self.sample_size = (int(sample_size[0]), int(sample_size[1]))
        self.sample_seed = sample_seed
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self.test_root = test_root
        self.test_sample_scenes = test_sample_scenes
        self.crop_size = crop_size
        self.samples_per_epoch = samples_per_epoch
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size
        self.pad_multiple = pad_multiple
        self.max_scenes = max_scenes
        self.num_workers = num_workers
        self.memory_budget_gb = memory_budget_gb
        self.stats_scenes = stats_scenes
        self.train_sources: list[SceneSource] = []
        self.val_sources: list[SceneSource] = []
        self.test_sources: list[SceneSource] = []
        self._spec: SegmenterSpec | None = None

    # ------------------------------------------------------------------ setup
    def setup(self, stage: str | None = None) -> None:
        """Split the labelled scenes into training and validation, find test scenes, compute the spec.

        Args:
            stage: Lightning's stage (``fit``, ``test``, ...); every stage needs the same spec.
        """
        if self._spec is not None:
            return
        files = self.files
        if self.root is None and not files and self.layout == "netcdf":
            files = ensure_sample(self.sample_scenes, self.sample_size, self.sample_seed)
        srcs = scene_sources(self.root, self.layout, files, self.max_scenes)
        if len(srcs) < 2:
            raise DataError(
                f"{len(srcs)} labelled scene(s): at least 2 are needed (one for "
                "validation); add scenes or generate more with sample-clouds."
            )
        rng = np.random.default_rng(self.split_seed)
        perm = rng.permutation(len(srcs))
        n_val = max(1, round(self.val_fraction * len(srcs)))
        self.val_sources = [srcs[i] for i in sorted(perm[:n_val])]
        self.train_sources = [srcs[i] for i in sorted(perm[n_val:])]
        test_files: list[str] | None = None
        if self.test_root is not None:
            test_files = [str(p) for p in sorted(Path(self.test_root).glob("*.nc"))]
            if not test_files:
                raise DataError(f"no scene NetCDF files (*.nc) in data.test_root {self.test_root}.")
        elif self.test_sample_scenes > 0:
            test_files = ensure_sample(
                self.test_sample_scenes, self.sample_size, self.sample_seed + 1
            )
        if test_files:
            self.test_sources = scene_sources(None, "netcdf", test_files)
            self._check_same(self.test_sources[0], srcs[0], "test")
        self._maybe_load(srcs + self.test_sources)
        self._spec = self._make_spec()

    @staticmethod
    def _check_same(a: SceneSource, ref: SceneSource, what: str) -> None:
        if a.classes != ref.classes or {b.name for b in a.bands} != {b.name for b in ref.bands}:
            raise DataError(
                f"the {what} scenes ({a.name}: bands {[b.name for b in a.bands]}, "
                f"classes {a.classes}) do not match the training scenes ({ref.name}: "
                f"{[b.name for b in ref.bands]}, {ref.classes})."
            )
        names = [b.name for b in ref.bands]
        theirs = [b.name for b in a.bands]
        if theirs != names:
            a.order = [theirs.index(n) for n in names]
            a.bands = list(ref.bands)

    def _maybe_load(self, srcs: list[SceneSource]) -> None:
        if self.layout != "netcdf":
            return
        nbytes = sum(s.shape[0] * s.shape[1] * (4 * len(s.bands) + 1) for s in srcs)
        if nbytes <= self.memory_budget_gb * 1e9:
            for s in srcs:
                s.load()

    def _make_spec(self) -> SegmenterSpec:
        """Bands, classes and training statistics: what the task and its checkpoint need."""
        ref = self.train_sources[0]
        n_b, n_k = len(ref.bands), len(ref.classes)
        s1 = np.zeros(n_b)
        s2 = np.zeros(n_b)
        cnt = np.zeros(n_b)
        counts = np.zeros(n_k)
        step = max(1, len(self.train_sources) // max(self.stats_scenes, 1))
        for src in self.train_sources[::step]:
            x, y = src.read()
            x64 = x.reshape(n_b, -1).astype(np.float64)
            ok = np.isfinite(x64)
            s1 += np.where(ok, x64, 0.0).sum(1)
            s2 += np.where(ok, x64**2, 0.0).sum(1)
            cnt += ok.sum(1)
            lab = y[y != NODATA]
            counts += np.bincount(lab.astype(np.int64), minlength=n_k)[:n_k]
        if (cnt == 0).any():
            raise DataError(
                "a band has no valid value in the training scenes: "
                f"{[b.name for b, c in zip(ref.bands, cnt, strict=True) if c == 0]}."
            )
        mean = s1 / cnt
        std = np.sqrt(np.maximum(s2 / cnt - mean**2, 0.0))
        return SegmenterSpec(
            bands=tuple(b.name for b in ref.bands),
            wavelengths=tuple(float(b.wavelength) for b in ref.bands),
            band_units=tuple(b.units for b in ref.bands),
            classes=tuple(ref.classes),
            mean=torch.tensor(mean, dtype=torch.float32),
            std=torch.tensor(np.maximum(std, 1e-6), dtype=torch.float32),
            class_counts=torch.tensor(counts, dtype=torch.float64),
            ignore_index=NODATA,
            train_scenes=tuple(s.name for s in self.train_sources),
            val_scenes=tuple(s.name for s in self.val_sources),
        )

    def spec(self) -> SegmenterSpec:
        """The data spec (after :meth:`setup`): bands, wavelengths, units, classes, statistics."""
        if self._spec is None:
            self.setup()
        assert self._spec is not None
        return self._spec

    # ------------------------------------------------------------------ loaders
    def _loader(
        self, ds: Dataset[dict[str, torch.Tensor]], batch: int, sampler: RandomSampler | None = None
    ) -> DataLoader[dict[str, torch.Tensor]]:
        return DataLoader(
            ds,
            batch_size=batch,
            sampler=sampler,
            shuffle=False,
            num_workers=self.num_workers,
            collate_fn=PadCollate(self.pad_multiple),
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader[dict[str, torch.Tensor]]:
        """Random crops of the training scenes, ``samples_per_epoch`` of them per epoch."""
        ds = CropDataset(self.train_sources, self.crop_size, self.split_seed)
        sampler = RandomSampler(ds, replacement=True, num_samples=self.samples_per_epoch)
        return self._loader(ds, self.batch_size, sampler)

    def val_dataloader(self) -> DataLoader[dict[str, torch.Tensor]]:
        """Whole validation scenes, padded to a common size per batch."""
        return self._loader(SceneDataset(self.val_sources), self.val_batch_size)

    def test_dataloader(self) -> DataLoader[dict[str, torch.Tensor]]:
        """Whole test scenes; ConfigError when no test scenes were named."""
        if not self.test_sources:
            raise ConfigError(
                "no test scenes: set data.test_root (or data.test_sample_scenes "
                "for the embedded sample)."
            )
        return self._loader(SceneDataset(self.test_sources), self.val_batch_size)
