"""Emulator training data: predictors, 1-D inputs and targets as raw float32 tensors.

The :class:`EmulatorDataModule` opens a catalog entry (or explicit paths) lazily, aligns
predictors and targets in time, splits days into training and validation sets (Doury's seeded
random 80/20, or held-out years), computes normalisation statistics over the training days only,
and serves batches as ``dict[str, Tensor]``:

``x`` [B, C, h, w] raw predictors; ``aux`` [B, A] raw 1-D inputs (day-of-year sine/cosine and
optional forcing series); ``y`` [B, V, H, W] raw targets (NaN where masked; only rows
``start:stop`` when :attr:`EmulatorDataModule.target_rows` is set); ``index`` [B].

Normalisation happens later on the device (the task's ``on_after_batch_transfer``) with the
statistics that :meth:`EmulatorDataModule.spec` hands over and the checkpoint keeps. Data are
loaded into memory when they fit ``memory_budget_gb``; otherwise each worker process opens
its own file handles lazily and reads whole batches (sorted time indices) at once.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
import xarray as xr
from torch.utils.data import DataLoader, Dataset

from climdl.data.emulator_source import Source, check_rows
from climdl.data.forcing import day_of_year_features, forcing_features, read_forcing_table
from climdl.data.spec import EmulatorSpec, EmulatorStats, Grid
from climdl.data.variables import ML_BENCH_PREDICTORS
from climdl.errors import ConfigError, DataError

__all__ = ["EmulatorDataModule", "EmulatorDataset"]

log = logging.getLogger(__name__)


class EmulatorDataset(Dataset[dict[str, torch.Tensor]]):
    """Days of (predictors, 1-D inputs, targets); ``__getitems__`` reads a whole batch at once.

    The targets are the source's row block when it has one (:meth:`Source.restrict`).

    Args:
        source: the predictor and target arrays (in memory or lazy).
        aux: the 1-D inputs of every day ``[T, A]``.
        indices: the days (time indices) this dataset serves.
    """

    def __init__(self, source: Source, aux: np.ndarray, indices: np.ndarray) -> None:
        self.source, self.aux, self.indices = source, aux, np.asarray(indices)

    def __len__(self) -> int:
        return int(self.indices.size)

    def __getitems__(self, items: Sequence[int]) -> dict[str, torch.Tensor]:
        idx = self.indices[np.asarray(items)]
        x, y = self.source.read_rows(idx)
        return {
            "x": torch.from_numpy(x),
            "y": torch.from_numpy(y),
            "aux": torch.from_numpy(self.aux[idx]),
            "index": torch.from_numpy(idx),
        }

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        batch = self.__getitems__([item])
        return {k: v[0] for k, v in batch.items()}


def _identity(batch: Any) -> Any:
    return batch


class EmulatorDataModule(L.LightningDataModule):
    """Predictors -> targets for one training experiment, split by time.

    Args:
        catalog: catalog entry name (``climdl catalog list``); ignored when paths are given.
        experiment: training experiment of the entry (``ESD_pseudo_reality``, ``Emulator_hist_future``).
        predictors: explicit predictor files/globs (instead of a catalog entry).
        target: explicit target files/globs.
        static: explicit static-fields file (orography).
        variables: predictor names (default: the 15 ML-Bench predictors).
        targets: target names, e.g. ``[tasmax]``, ``[pr]`` or both (trained jointly).
        orography: hand the fine orography to the model as a static covariate.
        forcing_csv: optional CSV of yearly forcing series (``year`` column + series).
        time_range: optional inclusive (start, end) dates restricting the training data.
        split: ``random`` (Doury: seeded random days) or ``years`` (held-out ``val_years``).
        val_fraction: fraction of days for validation with ``split=random``.
        val_years: years held out for validation with ``split=years``.
        split_seed: seed of the random split (Doury used 123).
        batch_size: samples per batch (per process under DDP).
        num_workers: loader worker processes (spawned; each opens its own file handles).
        memory_budget_gb: load everything into memory when it fits this budget.
        test_period: catalog test period (``historical``, ``mid_century``, ``end_century``) for
            ``trainer.test``: held-out years with their truth (the embedded sample has it).
        test_kind: ``perfect`` (upscaled RCM) or ``imperfect`` (GCM) test predictors.
        test_gcm: GCM of the test period (default: the entry's training GCM).
        test_predictors: explicit test predictor files/globs (instead of ``test_period``).
        test_target: explicit test target files/globs.

    Attributes:
        target_rows: None (default): batches hold the whole target grid. ``(start, stop)``:
            the train, validation and test loaders' ``y`` holds target rows ``start:stop`` only
            (``[B, V, stop - start, W]``, rows along the grid's ``y`` dimension, the first of
            the two spatial ones), as a domain-parallel rank needs; predictors stay whole.
            Settable after construction and after :meth:`setup` (the domain-parallel task sets
            it in ``configure_model``, before the loaders are built): an in-memory source then
            keeps only that block, a lazy one reads only that block from disk.
            :meth:`training_sample` and :meth:`spec` keep the whole grid.
    """

    def __init__(
        self,
        catalog: str | None = "sample-alps",
        experiment: str = "ESD_pseudo_reality",
        predictors: list[str] | None = None,
        target: list[str] | None = None,
        static: str | None = None,
        variables: list[str] | None = None,
        targets: list[str] | None = None,
        orography: bool = True,
        forcing_csv: str | None = None,
        time_range: tuple[str, str] | None = None,
        split: Literal["random", "years"] = "random",
        val_fraction: float = 0.2,
        val_years: list[int] | None = None,
        split_seed: int = 123,
        batch_size: int = 32,
        num_workers: int = 0,
        memory_budget_gb: float = 4.0,
        test_period: str | None = None,
        test_kind: Literal["perfect", "imperfect"] = "perfect",
        test_gcm: str | None = None,
        test_predictors: list[str] | None = None,
        test_target: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.catalog, self.experiment = catalog, experiment
        self.predictor_paths, self.target_paths, self.static_path = predictors, target, static
        self.variables = list(variables or ML_BENCH_PREDICTORS)
        self.targets = list(targets or ["tasmax"])
        self.use_orography, self.forcing_csv, self.time_range = orography, forcing_csv, time_range
        if split not in ("random", "years"):
            raise ConfigError(f"split must be 'random' or 'years', not {split!r}.")
        if split == "years" and not val_years:
            raise ConfigError("split: years needs val_years (the years held out for validation).")
        if not 0.0 < val_fraction < 1.0:
            raise ConfigError("val_fraction must be between 0 and 1.")
        self.split, self.val_fraction, self.val_years, self.split_seed = (
            split,
            val_fraction,
            val_years,
            split_seed,
        )
        self.batch_size, self.num_workers, self.memory_budget_gb = (
            batch_size,
            num_workers,
            memory_budget_gb,
        )
        self.test_period, self.test_kind, self.test_gcm = test_period, test_kind, test_gcm
        self.test_predictors, self.test_target = test_predictors, test_target
        self._spec: EmulatorSpec | None = None
        self._test: tuple[Source, np.ndarray] | None = None
        self._target_rows: tuple[int, int] | None = None

    @property
    def target_rows(self) -> tuple[int, int] | None:
        """The target rows ``(start, stop)`` the loaders serve; None: the whole grid."""
        return self._target_rows

    @target_rows.setter
    def target_rows(self, rows: tuple[int, int] | None) -> None:
        source: Source | None = getattr(self, "source", None)
        self._target_rows = check_rows(rows, source.n_rows if source is not None else None)

    # ------------------------------------------------------------------ opening
    def _open(self) -> tuple[xr.Dataset, xr.Dataset, xr.Dataset | None]:
        from climdl.data.reader import open_dataset

        want_static = self.use_orography
        if self.predictor_paths or self.target_paths:
            if not (self.predictor_paths and self.target_paths):
                raise ConfigError("give both predictors and target paths, or a catalog entry.")
            x = open_dataset(self.predictor_paths, self.variables, time_range=self.time_range)
            y = open_dataset(self.target_paths, self.targets, time_range=self.time_range)
            s = (
                open_dataset(self.static_path, ["orog"])
                if (want_static and self.static_path)
                else None
            )
            if want_static and s is None:
                raise ConfigError("orography: true needs a static file (static: path) with orog.")
        else:
            from climdl.data.catalog import get_entry

            if not self.catalog:
                raise ConfigError(
                    "give a catalog entry (catalog: NAME) or predictors and target paths."
                )
            entry = get_entry(self.catalog)
            x = entry.open("predictors", experiment=self.experiment, variables=self.variables)
            y = entry.open("target", experiment=self.experiment, variables=self.targets)
            s = (
                entry.open("static", experiment=self.experiment, variables=["orog"])
                if want_static
                else None
            )
            if self.time_range:
                x = x.sel(time=slice(*self.time_range))
                y = y.sel(time=slice(*self.time_range))
        x, y = _pair(x, y)
        return x, y, s

    def _open_test(self) -> tuple[xr.Dataset, xr.Dataset]:
        from climdl.data.reader import open_dataset

        if self.test_predictors or self.test_target:
            if not (self.test_predictors and self.test_target):
                raise ConfigError("give both test_predictors and test_target, or a test_period.")
            x = open_dataset(self.test_predictors, self.variables)
            y = open_dataset(self.test_target, self.targets)
        elif self.test_period and self.catalog:
            from climdl.data.catalog import get_entry

            entry = get_entry(self.catalog)
            x = entry.open(
                "predictors",
                period=self.test_period,
                kind=self.test_kind,
                gcm=self.test_gcm,
                variables=self.variables,
            )
            y = entry.open(
                "target", period=self.test_period, gcm=self.test_gcm, variables=self.targets
            )
        else:
            raise ConfigError(
                "testing needs test_period (with a catalog entry) or test_predictors "
                "and test_target."
            )
        return _pair(x, y)

    def setup(self, stage: str | None = None) -> None:
        """Open the data, choose training and validation days and compute the spec (once per process).

        Args:
            stage: Lightning's stage (``fit``, ``test``, ...); every stage needs the same spec.
        """
        if self._spec is not None:
            return
        x_ds, y_ds, s_ds = self._open()
        x = x_ds[self.variables].to_array("channel").transpose("time", "channel", ...)
        y = y_ds[self.targets].to_array("channel").transpose("time", "channel", ...)
        n_time = x.sizes["time"]
        nbytes = 4 * n_time * (math.prod(x.shape[1:]) + math.prod(y.shape[1:]))
        in_memory = nbytes <= self.memory_budget_gb * 1e9
        log.info(
            "emulator data: %d days, %.2f GB, %s",
            n_time,
            nbytes / 1e9,
            "in memory" if in_memory else "lazy",
        )
        self.source = Source(x, y, in_memory)
        aux = day_of_year_features(x_ds.time)
        aux_names = ["doy_sin", "doy_cos"]
        if self.forcing_csv:
            f, names = forcing_features(x_ds.time, self.forcing_csv)
            aux, aux_names = np.concatenate([aux, f], axis=1), aux_names + names
        self.aux = aux
        self.train_idx, self.val_idx = self._split(x_ds.time)
        self._spec = self._make_spec(x_ds, y_ds, s_ds, aux_names)

    def _split(self, time: xr.DataArray) -> tuple[np.ndarray, np.ndarray]:
        n = time.size
        if self.split == "years":
            is_val = np.isin(time.dt.year.values, np.asarray(self.val_years))
            if not is_val.any() or is_val.all():
                raise DataError(
                    f"val_years {self.val_years} leave no training or no validation day."
                )
            return np.flatnonzero(~is_val), np.flatnonzero(is_val)
        perm = np.random.default_rng(self.split_seed).permutation(n)
        n_val = max(1, round(self.val_fraction * n))
        return np.sort(perm[n_val:]), np.sort(perm[:n_val])

    # ------------------------------------------------------------------ statistics and spec
    def _train_batches(self, size: int = 256) -> Any:
        for start in range(0, self.train_idx.size, size):
            yield self.source.read(self.train_idx[start : start + size])  # whole grid

    def training_sample(
        self, n_days: int, seed: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Raw predictors ``[N, C, h, w]`` and targets ``[N, V, H, W]`` of training days.

        What the task fits its model parts on (pr gamma laws, the tasmax baseline): the data
        module only serves data and statistics.

        Args:
            n_days: at most this many days.
            seed: None: the first training days, in time order; else a seeded random choice
                (``default_rng(seed).permutation``), read in time order.

        Returns:
            ``(x, y)`` as float32 arrays.
        """
        self.setup("fit")
        if seed is None:
            days = self.train_idx[:n_days]
        else:
            days = np.sort(np.random.default_rng(seed).permutation(self.train_idx)[:n_days])
        return self.source.read(days)

    def _make_spec(
        self, x_ds: xr.Dataset, y_ds: xr.Dataset, s_ds: xr.Dataset | None, aux_names: list[str]
    ) -> EmulatorSpec:
        from climdl.preprocess import StreamingStats, daily_spatial_moments

        xs, ms, ys, ls = (
            StreamingStats("standard"),
            StreamingStats("standard"),
            StreamingStats("standard"),
            StreamingStats("log1p_standard"),
        )
        for xb, yb in self._train_batches():
            xt, yt = torch.from_numpy(xb).double(), torch.from_numpy(yb).double()
            xs.update(xt)
            mean, std = daily_spatial_moments(xt)
            ms.update(torch.cat([mean, std], dim=1))
            ys.update(yt)
            ls.update(yt.clamp_min(0))
        aux_train = self.aux[self.train_idx]
        stats = {
            "aux_mean": torch.from_numpy(aux_train.mean(0)),
            "aux_std": torch.from_numpy(aux_train.std(0)),
        }
        for key, acc in (("x", xs), ("moments", ms), ("y", ys), ("y_log", ls)):
            res = acc.result()
            stats[f"{key}_mean"], stats[f"{key}_std"] = res.mean.float(), res.std.float()
        orog = None
        if s_ds is not None:
            orog = torch.from_numpy(np.asarray(s_ds.orog.values, dtype=np.float32))
            if tuple(orog.shape) != tuple(y_ds[self.targets[0]].shape[-2:]):
                raise DataError(
                    f"the orography grid {tuple(orog.shape)} differs from the target grid "
                    f"{tuple(y_ds[self.targets[0]].shape[-2:])}."
                )
        return EmulatorSpec(
            variables=tuple(self.variables),
            targets=tuple(self.targets),
            aux_names=tuple(aux_names),
            units={n: str(x_ds[n].attrs.get("units", "")) for n in self.variables}
            | {n: str(y_ds[n].attrs.get("units", "")) for n in self.targets},
            target_attrs={
                n: {k: str(v) for k, v in y_ds[n].attrs.items() if isinstance(v, str)}
                for n in self.targets
            },
            in_size=(
                int(x_ds[self.variables[0]].shape[-2]),
                int(x_ds[self.variables[0]].shape[-1]),
            ),
            out_size=(int(y_ds[self.targets[0]].shape[-2]), int(y_ds[self.targets[0]].shape[-1])),
            coarse_grid=Grid.from_dataset(x_ds),
            target_grid=Grid.from_dataset(y_ds),
            stats=EmulatorStats.from_dict(stats),
            calendar=str(x_ds.time.dt.calendar),
            orography=orog,
            # inference must rebuild the same 1-D inputs for any period
            forcing_table=read_forcing_table(self.forcing_csv) if self.forcing_csv else None,
        )

    def spec(self) -> EmulatorSpec:
        """Names, units, grids, orography and training statistics (what a model is built from).

        The task completes it with the parts it fits (see
        :meth:`climdl.tasks.downscaling.DownscalingTask.setup`)."""
        if self._spec is None:
            self.setup("fit")
        assert self._spec is not None
        return self._spec

    # ------------------------------------------------------------------ loaders
    def _loader(self, idx: np.ndarray, shuffle: bool) -> DataLoader[dict[str, torch.Tensor]]:
        self.setup("fit")
        self.source.restrict(self.target_rows)
        ds = EmulatorDataset(self.source, self.aux, idx)
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            collate_fn=_identity,
            drop_last=False,
            multiprocessing_context="spawn" if self.num_workers > 0 else None,
            persistent_workers=self.num_workers > 0,
            pin_memory=self._pin_memory(),
        )

    def _pin_memory(self) -> bool:
        """Pinned batches when training on CUDA: Lightning then copies them to the GPU
        without blocking (pinning costs a host copy; it only pays off with a GPU to feed)."""
        return self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"

    def train_dataloader(self) -> DataLoader[dict[str, torch.Tensor]]:
        """Training days in a shuffled order, raw (normalised on the device)."""
        return self._loader(self.train_idx, shuffle=True)

    def val_dataloader(self) -> DataLoader[dict[str, torch.Tensor]]:
        """Validation days in time order, raw (normalised on the device)."""
        return self._loader(self.val_idx, shuffle=False)

    def test_dataloader(self) -> DataLoader[dict[str, torch.Tensor]]:
        """Held-out test days (``test_period``), normalised with the training statistics."""
        self.setup("fit")
        if self._test is None:
            x_ds, y_ds = self._open_test()
            x = x_ds[self.variables].to_array("channel").transpose("time", "channel", ...)
            y = y_ds[self.targets].to_array("channel").transpose("time", "channel", ...)
            nbytes = 4 * x.sizes["time"] * (math.prod(x.shape[1:]) + math.prod(y.shape[1:]))
            source = Source(x, y, nbytes <= self.memory_budget_gb * 1e9)
            aux = day_of_year_features(x_ds.time)
            if self.forcing_csv:
                aux = np.concatenate(
                    [aux, forcing_features(x_ds.time, self.forcing_csv)[0]], axis=1
                )
            self._test = (source, aux)
        source, aux = self._test
        source.restrict(self.target_rows)
        ds = EmulatorDataset(source, aux, np.arange(aux.shape[0]))
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            shuffle=False,
            collate_fn=_identity,
            pin_memory=self._pin_memory(),
        )


def _pair(x: xr.Dataset, y: xr.Dataset) -> tuple[xr.Dataset, xr.Dataset]:
    """Predictors and targets on their common days (matched by day, not time stamp: predictors
    may be stamped 00:00 and targets 12:00)."""
    x = x.assign_coords(time=x.time.dt.floor("D"))
    y = y.assign_coords(time=y.time.dt.floor("D"))
    x, y = xr.align(x, y, join="inner", exclude=(set(x.dims) - {"time"}) | (set(y.dims) - {"time"}))
    if x.sizes.get("time", 0) == 0:
        raise DataError(
            "the predictors and targets share no day; check their periods and calendars."
        )
    return x, y
