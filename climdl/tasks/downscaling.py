"""The downscaling LightningModule: losses, metrics, optimisers, device-side normalisation.

The task picks a plain network by name (``unet`` = Doury's asymmetric UNet, ``deepesd`` = the
CORDEX ML-Bench reference) and builds it in :meth:`setup` from the data module's
:class:`~climdl.data.spec.EmulatorSpec` (input channels, grid sizes, statistics), so the YAML
config never repeats what the data already say. Before building, the task fits the model parts
that depend on the training data (:func:`fit_model_parts`: the pr gamma laws of the Doury loss,
the tasmax baseline's linear map) on days the data module serves. The completed spec is stored in
every checkpoint (``checkpoint["climdl"]``); :func:`climdl.tasks.checkpoint.load_emulator`
rebuilds the model from it with ``torch.load(weights_only=True)``.

Batches arrive raw (see :mod:`climdl.data.emulator_data`); :meth:`on_after_batch_transfer`
normalises them on the device. With ``input_norm="daily_map"`` each daily map is standardised
by its own spatial mean and std, which enter the 1-D inputs with the day of year (Doury et al.).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn
from torchmetrics import SumMetric

from climdl.data.spec import EmulatorSpec
from climdl.errors import ConfigError
from climdl.models import DeepESD, DouryUNet
from climdl.models.heads import FineCovariateHead
from climdl.models.tasmax_baseline import TasmaxBaseline, has_tasmax_baseline
from climdl.parallel.domain import Domain, domain_loss
from climdl.preprocess import Kind, Normaliser, spatial_standardise
from climdl.preprocess.gamma import fit_gamma
from climdl.tasks import losses as L_
from climdl.tasks.base import BaseTask, make_optimizer
from climdl.tasks.speed import channels_last_before_ddp
from climdl.tasks.step_log import TrainingLog, log_lr

__all__ = ["DownscalingTask", "fit_model_parts"]

Network = Literal["unet", "deepesd"]
Optimizer = Literal["adam", "adamw", "sgd", "rmsprop"]


class DownscalingTask(BaseTask[EmulatorSpec]):
    """Learn coarse predictors -> fine targets.

    Args:
        network: ``unet`` (Doury et al. 2023) or ``deepesd`` (ML-Bench reference).
        base_filters: UNet entry-convolution filters (Doury: 32).
        max_filters: cap on UNet filters (Doury: 512).
        block: UNet conv blocks, ``plain`` or ``residual``.
        extra_filters: filters of the UNet decoder stages beyond the input size (Doury: 64).
        deepesd_filters: DeepESD conv filters.
        use_scalars: feed the 1-D inputs (daily moments, day of year, forcing) to the UNet bottleneck.
        use_orography: fuse the fine orography with the network output (needs it in the data).
        head_features: output features of the network before fusion with the orography.
        residual_to_baseline: for tasmax, the network learns the correction to the fitted
            interpolation + lapse-rate baseline (a climdl option, not Doury's setup); other
            targets are predicted directly.
        input_norm: ``daily_map`` (Doury) or ``channel`` (global per-channel standardisation).
        loss_tasmax: ``mse`` (Doury) or ``mae``.
        loss_pr: ``doury_asymmetric`` (Doury et al. 2024), ``bernoulli_gamma`` or ``mse`` (on log1p).
        optimizer: ``adam``, ``adamw``, ``sgd`` (with momentum) or ``rmsprop``.
        lr: learning rate (Doury: 5e-3 for tasmax in 2023, 5e-4 in 2024).
        weight_decay: L2 / decoupled weight decay.
        momentum: SGD/RMSprop momentum.
        lr_factor: ReduceLROnPlateau factor (Doury: 0.7).
        lr_patience: ReduceLROnPlateau patience in epochs (Doury: 4).
    """

    def __init__(
        self,
        network: Network = "unet",
        base_filters: int = 32,
        max_filters: int = 512,
        block: Literal["plain", "residual"] = "plain",
        extra_filters: int = 64,
        deepesd_filters: tuple[int, int, int] = (50, 25, 10),
        use_scalars: bool = True,
        use_orography: bool = True,
        head_features: int = 16,
        residual_to_baseline: bool = False,
        input_norm: Literal["daily_map", "channel"] = "daily_map",
        loss_tasmax: Literal["mse", "mae"] = "mse",
        loss_pr: Literal["doury_asymmetric", "bernoulli_gamma", "mse"] = "doury_asymmetric",
        optimizer: Optimizer = "adam",
        lr: float = 5e-4,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        lr_factor: float = 0.7,
        lr_patience: int = 4,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.train_log = TrainingLog()
        """Logs the training steps without a host-device sync (:mod:`climdl.tasks.step_log`)."""

    NAME = "downscaling"
    DATA_MODULE = "an EmulatorDataModule"
    generative: ClassVar[bool] = False
    """Deterministic: one prediction per day (see :mod:`climdl.tasks.generative`)."""

    @property
    def network_label(self) -> str:
        """What the model is, for tables and output attributes (the network's name)."""
        return str(self.hp.network)

    # ------------------------------------------------------------------ building
    @classmethod
    def read_spec(cls, layout: Any) -> EmulatorSpec:
        """The emulator spec from a stored layout of any known version."""
        return EmulatorSpec.from_dict(layout)

    def spec_from_data(self, dm: Any) -> EmulatorSpec:
        """The data module's spec completed with the model parts fitted on its training days."""
        return fit_model_parts(dm.spec(), dm)

    def build(self, spec: EmulatorSpec) -> None:
        """Create network and normalisers from a spec (training) or a checkpoint (inference)."""
        hp = self.hp
        self.spec = spec
        stats = spec.stats
        targets: list[str] = list(spec.targets)
        n_in = len(spec.variables)
        in_size, out_size = spec.in_size, spec.out_size
        self.channels = [self._channels(t) for t in targets]
        n_out = sum(self.channels)
        orog = spec.orography
        fuse = bool(hp.use_orography and orog is not None)
        features = hp.head_features if fuse else n_out
        n_scalars = 0
        if hp.use_scalars and hp.network == "unet":
            n_scalars = (2 * n_in if hp.input_norm == "daily_map" else 0) + len(spec.aux_names)
        self.n_scalars = n_scalars
        net: nn.Module
        if hp.network == "unet":
            net = DouryUNet(
                n_in,
                features,
                in_size=in_size,
                out_size=out_size,
                n_scalars=n_scalars,
                base_filters=hp.base_filters,
                max_filters=hp.max_filters,
                block=hp.block,
                extra_filters=hp.extra_filters,
            )
        elif hp.network == "deepesd":
            net = DeepESD(
                n_in,
                features,
                in_size=in_size,
                out_size=out_size,
                filters=tuple(hp.deepesd_filters),
            )
        else:
            raise ConfigError(f"unknown network {hp.network!r}; choose unet or deepesd.")
        if fuse:
            assert orog is not None
            o = orog.float()
            net = FineCovariateHead(net, features, ((o - o.mean()) / (o.std() + 1e-6))[None], n_out)
        self.net = net
        self.x_norm = Normaliser(spec.variables, stats.x_mean, stats.x_std)
        aux_mean, aux_std = stats.aux_mean, stats.aux_std
        names = list(spec.aux_names)
        if hp.input_norm == "daily_map":
            aux_mean = torch.cat([stats.moments_mean, aux_mean])
            aux_std = torch.cat([stats.moments_std, aux_std])
            names = [f"{v}_{m}" for m in ("mean", "std") for v in spec.variables] + names
        self.aux_norm = Normaliser(names, aux_mean, aux_std.clamp_min(1e-3))
        kinds: list[Kind] = []
        for t in targets:
            kinds.append(
                "standard" if t != "pr" else ("log1p_standard" if hp.loss_pr == "mse" else "none")
            )
        y_mean = torch.where(
            torch.tensor([k == "log1p_standard" for k in kinds]),
            stats.y_log_mean,
            stats.y_mean,
        )
        y_std = torch.where(
            torch.tensor([k == "log1p_standard" for k in kinds]), stats.y_log_std, stats.y_std
        )
        self.y_norm = Normaliser(targets, y_mean, y_std, kinds)
        if "pr" in targets and hp.loss_pr == "doury_asymmetric":
            if stats.pr_gamma_shape is None or stats.pr_gamma_scale is None:
                raise ConfigError(
                    "loss_pr: doury_asymmetric needs the pr gamma laws fitted on the training "
                    "days (build from DownscalingTask.spec_from_data)."
                )
            self.pr_loss = L_.DouryAsymmetricLoss(stats.pr_gamma_shape, stats.pr_gamma_scale)
        self.baseline: TasmaxBaseline | None = None
        if hp.residual_to_baseline and "tasmax" in targets:  # other targets are unaffected
            if spec.tasmax_baseline is None:
                raise ConfigError(
                    "residual_to_baseline needs t_850, z_850 and the orography in the data."
                )
            self.baseline = TasmaxBaseline(spec, spec.tasmax_baseline)
        # nan_strategy "disable": the default checks every update for NaN on the host (a sync
        # per update on a GPU) and drops it; a diverged model's scores are NaN instead
        self.sq_err = nn.ModuleDict({t: SumMetric(nan_strategy="disable") for t in targets})
        self.err = nn.ModuleDict({t: SumMetric(nan_strategy="disable") for t in targets})
        self.count = nn.ModuleDict({t: SumMetric(nan_strategy="disable") for t in targets})
        self.domain: Domain | None = None
        """This rank's place in its domain group under domain parallelism, else None."""
        self.domain_rows: tuple[int, int] | None = None
        """The fine rows this rank computes under domain parallelism, else None."""

    def configure_model(self) -> None:
        """Shard the network when the strategy is Lightning's ``ModelParallelStrategy``: FSDP2
        ``fully_shard`` per network block and tensor parallelism on the dense layers (see
        :func:`climdl.parallel.strategies.parallelize_task`); nothing happens otherwise."""
        if self._trainer is None or self.net is None:
            return
        channels_last_before_ddp(self)  # before DDP wraps the network (Lightning's DDP only)
        from lightning.pytorch.strategies import ModelParallelStrategy

        from climdl.parallel.domain import DomainParallelStrategy

        strategy = self.trainer.strategy
        if isinstance(strategy, ModelParallelStrategy):
            from climdl.parallel.strategies import parallelize_task

            parallelize_task(self, strategy)
        elif isinstance(strategy, DomainParallelStrategy):
            self._shard_domain(strategy)

    def _shard_domain(self, strategy: Any) -> None:
        """Split the network's fine levels into row strips (:mod:`climdl.parallel.domain`), and
        make the data module read, and the losses use, this rank's rows only."""
        plan = strategy.shard(self.net)
        assert plan.rows is not None
        self.domain = strategy.domain
        self.domain_rows = plan.rows
        if hasattr(self, "pr_loss"):
            self.pr_loss.row_start = plan.rows[0]
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and hasattr(dm, "target_rows"):
            dm.target_rows = plan.rows

    def unshard_domain(self) -> None:
        """Forget the domain split (called by the strategy's teardown): whole targets again."""
        self.domain, self.domain_rows = None, None
        if hasattr(self, "pr_loss"):
            self.pr_loss.row_start = 0
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is not None and hasattr(dm, "target_rows"):
            dm.target_rows = None

    def _channels(self, target: str) -> int:
        return 3 if (target == "pr" and self.hp.loss_pr == "bernoulli_gamma") else 1

    # ------------------------------------------------------------------ forward
    def on_after_batch_transfer(
        self, batch: dict[str, Tensor], dataloader_idx: int
    ) -> dict[str, Tensor]:
        """Normalise on the device: inputs, 1-D inputs (and keep raw targets for the losses)."""
        x = batch["x"]
        aux = batch["aux"]
        if self.hp.input_norm == "daily_map":
            x, mean, std = spatial_standardise(x)
            aux = torch.cat([mean, std, aux], dim=1)
        else:
            x = self.x_norm.normalise(x)
        out = dict(batch)
        out["x_n"] = torch.nan_to_num(x)
        out["aux_n"] = torch.nan_to_num(self.aux_norm.normalise(aux, dim=1))
        if self.domain_rows is not None:  # domain parallelism: this rank's rows of the target
            start, stop = self.domain_rows
            if "y" in out and out["y"].shape[-2] != stop - start:
                out["y"] = out["y"][..., start:stop, :]
            out["rows"] = torch.tensor([start, stop])
        return out

    def forward(self, x_n: Tensor, aux_n: Tensor | None = None) -> Tensor:
        """Network outputs (normalised units) from normalised predictors and 1-D inputs."""
        assert self.net is not None, "call build() or fit first"
        return self.net(x_n, aux_n if self.n_scalars else None)

    def outputs(self, batch: dict[str, Tensor]) -> Tensor:
        """Network outputs in normalised units, plus the baseline for a residual tasmax.

        A batch may carry the network's output as ``net_out`` when it was computed elsewhere:
        the pipeline-parallel strategy (:mod:`climdl.parallel.pipeline`) runs the network's
        stages on several ranks and hands the last stage's output back to the same losses and
        metrics. ``rows``, a CPU tensor ``(start, stop)``, says that the output covers only
        those fine rows (a domain-parallel rank's block, or a strip of the tiled inference of
        :mod:`climdl.inference.strips`); the tasmax baseline is cut to them.
        """
        raw = batch["net_out"] if "net_out" in batch else self(batch["x_n"], batch["aux_n"])
        if self.baseline is None:
            return raw
        i = self.y_norm.names.index("tasmax")
        c = sum(self.channels[:i])
        base = self.baseline(batch["x"].float())
        if "rows" in batch:
            start, stop = (int(v) for v in batch["rows"].tolist())
            base = base[:, start:stop]
        base_n = (base - self.y_norm.mean[i]) / (self.y_norm.std[i] + self.y_norm.eps)
        return torch.cat(
            [raw[:, :c], raw[:, c : c + 1] + base_n[:, None].to(raw.dtype), raw[:, c + 1 :]], dim=1
        )

    def predict_physical(self, batch: dict[str, Tensor]) -> Tensor:
        """Predictions in physical units [B, V, H, W] (expected value for Bernoulli-gamma pr)."""
        raw = self.outputs(batch)
        outs, c = [], 0
        for k in self.channels:
            part = raw[:, c : c + k]
            c += k
            if k == 3:
                outs.append(L_.bernoulli_gamma_mean(part))
            else:
                outs.append(part[:, 0])
        pred_n = torch.stack(outs, dim=1)
        if any(k == 3 for k in self.channels):  # Bernoulli-gamma means are physical already
            phys = self.y_norm.denormalise(pred_n)
            mask = torch.tensor([k == 3 for k in self.channels], device=pred_n.device).view(
                1, -1, 1, 1
            )
            phys = torch.where(mask, pred_n, phys)
        else:
            phys = self.y_norm.denormalise(pred_n)
        if "pr" in self.y_norm.names:
            i = self.y_norm.names.index("pr")
            # out of place: gradients with respect to the inputs flow through (sensitivity)
            is_pr = torch.arange(phys.shape[1], device=phys.device).view(1, -1, 1, 1) == i
            phys = torch.where(is_pr, phys.clamp_min(0), phys)
        return phys

    # ------------------------------------------------------------------ losses
    def compute_loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """The loss of a normalised batch and its part per target (see
        :meth:`climdl.tasks.base.BaseTask.compute_loss`); ``net_out`` may carry the network's
        output (pipeline parallelism)."""
        raw = self.outputs(batch).float()
        y = batch["y"].float()
        y_n = self.y_norm.normalise(y)
        parts: dict[str, Tensor] = {}
        c = 0
        for i, (t, k) in enumerate(zip(self.y_norm.names, self.channels, strict=True)):
            pred = raw[:, c : c + k]
            c += k
            if t == "pr" and self.hp.loss_pr == "bernoulli_gamma":
                parts[t] = L_.bernoulli_gamma_nll(pred, y[:, i])
            elif t == "pr" and self.hp.loss_pr == "doury_asymmetric":
                parts[t] = self.pr_loss(pred[:, 0], y[:, i])
            elif t != "pr" and self.hp.loss_tasmax == "mae":
                parts[t] = L_.masked_mae(pred[:, 0], y_n[:, i])
            else:
                parts[t] = L_.masked_mse(pred[:, 0], y_n[:, i])
        if self.domain is not None:  # this rank's share; parts: the whole domain's losses
            counts = {t: torch.isfinite(y[:, i]).sum() for i, t in enumerate(self.y_norm.names)}
            objective, parts = domain_loss(parts, counts, self.domain)
            return objective, parts
        return torch.stack(list(parts.values())).sum(), parts

    def _shown(self, loss: Tensor, parts: dict[str, Tensor]) -> Tensor:
        """The loss to log: under domain parallelism the whole domain's, not this rank's share."""
        return torch.stack(list(parts.values())).sum() if self.domain is not None else loss

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """Loss of one training batch; logs it and its per-target parts."""
        loss, parts = self.compute_loss(batch)
        self.log_training(self._shown(loss, parts), parts, batch)
        return loss

    def log_training(
        self, loss: Tensor, parts: dict[str, Tensor], batch: dict[str, Tensor]
    ) -> None:
        """Log the training loss (the progress bar's and the logger's step value from a host
        copy; the epoch mean ``train_loss_epoch``), and the epoch means of its per-target parts
        and of the masked fraction, all without a host-device sync per step (see
        :mod:`climdl.tasks.step_log`; also called by the pipeline-parallel strategy, which
        computes the loss itself)."""
        means = {f"train_loss_{t}": v for t, v in parts.items()}
        means["train_masked_fraction"] = 1.0 - L_.valid_fraction(batch["y"])
        self.train_log.log(self, loss, batch["x"].shape[0], means)

    def on_train_epoch_end(self) -> None:
        """Log the learning rate of the epoch (once: a Python number logged per step would be a
        host-to-device copy per step)."""
        log_lr(self)

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        """Log the validation loss and accumulate the errors behind the RMSE/bias scores."""
        loss, parts = self.compute_loss(batch)
        loss = self._shown(loss, parts)
        self.log("val_loss", loss, prog_bar=True, batch_size=batch["x"].shape[0], sync_dist=True)
        self._accumulate(batch)

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        """Log the test loss and accumulate the errors behind the RMSE/bias scores."""
        loss, parts = self.compute_loss(batch)
        loss = self._shown(loss, parts)
        self.log("test_loss", loss, batch_size=batch["x"].shape[0], sync_dist=True)
        self._accumulate(batch)

    def _accumulate(self, batch: dict[str, Tensor]) -> None:
        """Sum squared errors, errors and valid counts per target (physical units)."""
        pred = self.predict_physical(batch).float()
        y = batch["y"].float()
        for i, t in enumerate(self.y_norm.names):
            valid = torch.isfinite(y[:, i])
            diff = torch.where(valid, pred[:, i] - torch.nan_to_num(y[:, i]), 0.0)
            self._metric(self.sq_err, t).update(diff.square().sum())
            self._metric(self.err, t).update(diff.sum())
            self._metric(self.count, t).update(valid.sum().float())

    @staticmethod
    def _metric(metrics: nn.ModuleDict, name: str) -> SumMetric:
        metric = metrics[name]
        assert isinstance(metric, SumMetric)
        return metric

    def on_validation_epoch_end(self) -> None:
        """Log the validation RMSE and bias per target (physical units)."""
        self._log_scores("val")

    def on_test_epoch_end(self) -> None:
        """Log the test RMSE and bias per target (physical units)."""
        self._log_scores("test")

    def _log_scores(self, prefix: str) -> None:
        for t in self.y_norm.names:
            n = self._metric(self.count, t).compute().clamp_min(1)
            # the metrics are summed over ranks already: sync_dist averages equal values
            self.log(
                f"{prefix}_rmse_{t}",
                (self._metric(self.sq_err, t).compute() / n).sqrt(),
                prog_bar=True,
                sync_dist=True,
            )
            self.log(f"{prefix}_bias_{t}", self._metric(self.err, t).compute() / n, sync_dist=True)
            for m in (
                self._metric(self.sq_err, t),
                self._metric(self.err, t),
                self._metric(self.count, t),
            ):
                m.reset()

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> Any:
        """The chosen optimizer with ReduceLROnPlateau on ``val_loss``."""
        hp = self.hp
        opt = make_optimizer(
            hp.optimizer,
            self.parameters(),
            hp.lr,
            hp.weight_decay,
            hp.momentum,
            ("adam", "adamw", "sgd", "rmsprop"),
            self._trainer,
            self.speed.fused,
        )
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, factor=hp.lr_factor, patience=hp.lr_patience
        )
        # strict=False: training without validation (limit_val_batches=0) keeps the constant lr
        return {
            "optimizer": opt,
            "lr_scheduler": {"scheduler": sched, "monitor": "val_loss", "strict": False},
        }


GAMMA_DAYS = 2048
"""Training days the pr gamma laws are fitted on (the first ones, in time order)."""
BASELINE_DAYS = 2000
"""Training days the tasmax baseline is fitted on (a random choice, seed 0)."""


def fit_model_parts(spec: EmulatorSpec, dm: Any) -> EmulatorSpec:
    """The data module's spec completed with what is fitted on its training days.

    The pr gamma laws (the Doury loss's weights) when pr is a target, and the tasmax baseline's
    linear map when tasmax is a target and t_850, z_850 and the orography are there. The data
    module provides the days (:meth:`~climdl.data.emulator_data.EmulatorDataModule.training_sample`).

    Args:
        spec: the data module's spec.
        dm: the data module it came from.

    Returns:
        A new spec with ``stats.pr_gamma_*`` and ``tasmax_baseline`` filled where they apply.
    """
    targets = list(spec.targets)
    if "pr" in targets and spec.stats.pr_gamma_shape is None:
        _, y = dm.training_sample(GAMMA_DAYS)
        shape, scale = fit_gamma(torch.from_numpy(y[:, targets.index("pr")]))
        stats = dataclasses.replace(
            spec.stats, pr_gamma_shape=shape.float(), pr_gamma_scale=scale.float()
        )
        spec = dataclasses.replace(spec, stats=stats)
    if "tasmax" in targets and spec.tasmax_baseline is None and has_tasmax_baseline(spec):
        x, y = dm.training_sample(BASELINE_DAYS, seed=0)
        base = TasmaxBaseline.fit(spec, x, y[:, targets.index("tasmax")])
        spec = dataclasses.replace(spec, tasmax_baseline=base.coefficients())
    return spec
