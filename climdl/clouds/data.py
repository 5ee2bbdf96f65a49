"""The cloud-segmentation DataModule: labelled scenes split, described and served for training.

Scenes come from a folder of scene NetCDF files (:mod:`climdl.clouds.scene`), a 38-Cloud or
CloudSEN12 folder (:mod:`climdl.clouds.layouts`), or - with no folder given - the embedded synthetic sample,
generated into the cache (``$CLIMDL_CACHE/clouds-sample``) on first use; their sources are
:mod:`climdl.clouds.training_scenes`. The split into training and validation is by scene, seeded.
Batches are raw: ``{"x": float32 [B, C, H, W]`` (NaN where there are no data),
``"y": int64 [B, H, W]}`` with :data:`~climdl.clouds.scene.NODATA` for unlabelled pixels;
normalisation and augmentation run on the device in the task. Training batches are random crops
(scenes drawn in proportion to their area, positions from a seeded generator, so runs repeat);
validation and test batches are whole scenes, padded (:mod:`climdl.clouds.batches`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from climdl.clouds.batches import CropDataset, CropSampler, PadCollate, SceneDataset
from climdl.clouds.scene import NODATA
from climdl.clouds.spec import SegmenterSpec
from climdl.clouds.training_scenes import (
    Layout,
    SceneSource,
    ensure_sample,
    sample_root,
    scene_sources,
)
from climdl.errors import ConfigError, DataError

# SceneSource, sample_root and scene_sources are public API here (tests/test_api_docs.py)
__all__ = ["CloudDataModule", "SceneSource", "sample_root", "scene_sources"]

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- data module
class CloudDataModule(L.LightningDataModule):
    """Labelled scenes for :class:`~climdl.tasks.segmentation.SegmentationTask`.

    Args:
        root: folder of scene NetCDF files, the ``38-Cloud_training`` folder with
            ``layout: 38-cloud``, or the CloudSEN12 folder (patch folders with ``S2L1C.tif``
            and ``labels/manual_hq.tif``) with ``layout: cloudsen12``; None: the embedded
            synthetic sample (cached).
        layout: ``netcdf`` (climdl scenes), ``38-cloud`` or ``cloudsen12``.
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
        self, ds: Dataset[dict[str, torch.Tensor]], batch: int, sampler: Sampler[int] | None = None
    ) -> DataLoader[dict[str, torch.Tensor]]:
        cuda = self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"
        return DataLoader(
            ds,
            batch_size=batch,
            sampler=sampler,
            shuffle=False,
            num_workers=self.num_workers,
            collate_fn=PadCollate(self.pad_multiple),
            persistent_workers=self.num_workers > 0,
            pin_memory=cuda,  # pinned: Lightning copies them to the GPU without blocking
        )

    def train_dataloader(self) -> DataLoader[dict[str, torch.Tensor]]:
        """Random crops of the training scenes, ``samples_per_epoch`` of them per epoch."""
        ds = CropDataset(self.train_sources, self.crop_size, self.split_seed)
        sampler = CropSampler(ds, self.samples_per_epoch)
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
