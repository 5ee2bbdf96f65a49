"""Generative ensemble downscaling: a frozen stage-1 UNet mean plus a flow-matching residual.

Stage 1 is a trained :class:`~climdl.tasks.downscaling.DownscalingTask` (its checkpoint is named
by ``mean_checkpoint``); stage 2 learns the distribution of the residual
``r = (T(y) - T(mean)) / s`` (``T = log1p`` for pr by default, ``s`` the residual std per target
fitted on training days) with conditional flow matching on the rectified-flow path
(``x_t = (1 - t) z + t r``, target velocity ``r - z``; Lipman et al. 2023, Liu et al. 2023),
conditioned on the stage-1 mean, the orography and the interpolated predictors (CorrDiff-style,
Mardani et al. 2025). Members are drawn by integrating the ODE from given noise with Heun's
method (:func:`~climdl.models.residual_flow.heun_sample`), so member ``k`` of a day is a pure
function of its noise. An exponential moving average of the weights samples and is saved.

The checkpoint is self-contained: stage 1's hyper-parameters, spec and file hash sit in
``checkpoint["climdl"]["mean"]`` and its weights in the state dict (``mean.*``), so
:func:`climdl.tasks.checkpoint.load_emulator` rebuilds both stages without the stage-1 file.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from climdl.data.spec import EmulatorSpec
from climdl.errors import ConfigError, DataError
from climdl.models.residual_flow import ResidualFlowNet, heun_sample
from climdl.tasks import losses as L_
from climdl.tasks.base import BaseTask
from climdl.tasks.downscaling import DownscalingTask
from climdl.tasks.generative_parts import (
    ErrorSums,
    channel_std,
    ema_update,
    fair_crps,
    read_stage1,
    stage1_from_meta,
    training_days,
    warmup_cosine,
)
from climdl.tasks.speed import channels_last_before_ddp
from climdl.tasks.step_log import TrainingLog

__all__ = ["GenerativeDownscalingTask"]

RESIDUAL_DAYS = 512
"""Training days the residual std is fitted on (a seeded random choice)."""
SAMPLE_BATCH = 64
"""Samples (days x members) per network call when sampling."""


class GenerativeDownscalingTask(BaseTask[EmulatorSpec]):
    """Stage-1 mean (frozen) + flow-matching residual ensembles of the fine targets.

    Args:
        mean_checkpoint: the stage-1 DownscalingTask checkpoint (read at training only; kept
            as provenance).
        depth: UNet levels of the residual network (the grid must divide by ``2 ** depth``).
        base_filters: filters at full resolution.
        max_filters: cap on a level's filters.
        block: conv blocks, ``plain`` or ``residual``.
        time_dim: sinusoidal features of the flow time.
        sampler_steps: Heun steps per sample (``2K - 1`` network evaluations).
        members: members a ``climdl downscale`` draws without ``--members``.
        pr_transform: ``log1p``: the pr residual is taken in log1p space; ``none``: in mm/day.
        time_sampling: flow times for training, ``uniform`` or ``logit_normal`` (SD3).
        crop: train on random ``crop x crop`` windows of the fine grid (None: the whole grid).
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        lr_schedule: ``cosine`` (to 10% of lr over the run, after a short warm-up) or
            ``constant``.
        ema_decay: decay of the weights' moving average (0: none); warmed up as
            ``min(decay, (1 + n) / (10 + n))``.
        val_members: members of the CRPS logged on the first validation batch (< 2: none).
        val_steps: sampler steps of that CRPS.
        val_days: days of the first validation batch that CRPS uses.
    """

    KIND = "generative_emulator"
    NAME = "generative downscaling"
    DATA_MODULE = "an EmulatorDataModule"
    generative: ClassVar[bool] = True

    mean: DownscalingTask
    residual_std: Tensor
    log_mask: Tensor
    cond_mean: Tensor
    cond_std: Tensor
    orog_n: Tensor | None

    def __init__(
        self,
        mean_checkpoint: str | None = None,
        *,
        depth: int = 3,
        base_filters: int = 32,
        max_filters: int = 256,
        block: Literal["plain", "residual"] = "plain",
        time_dim: int = 32,
        sampler_steps: int = 8,
        members: int = 10,
        pr_transform: Literal["log1p", "none"] = "log1p",
        time_sampling: Literal["uniform", "logit_normal"] = "uniform",
        crop: int | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        lr_schedule: Literal["cosine", "constant"] = "cosine",
        ema_decay: float = 0.999,
        val_members: int = 4,
        val_steps: int = 4,
        val_days: int = 8,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.train_log = TrainingLog()
        """Logs the training steps without a host-device sync (:mod:`climdl.tasks.step_log`)."""
        if sampler_steps < 1 or members < 1:
            raise ConfigError("sampler_steps and members must be at least 1.")
        if not 0.0 <= ema_decay < 1.0:
            raise ConfigError(f"ema_decay must be in [0, 1), got {ema_decay}.")
        if crop is not None and crop < 1:
            raise ConfigError(f"crop must be a positive number of grid points, got {crop}.")
        self.ema: ResidualFlowNet | None = None
        self.mean_meta: dict[str, Any] = {}
        self._draws: torch.Generator | None = None

    def on_fit_start(self) -> None:
        """One generator per rank for the training draws (noise, flow times, crops): with the
        global RNG, seeded alike on every DDP rank, all ranks would draw the same ones and a
        step would see one rank's batch of (noise, time) pairs instead of all ranks'."""
        self._draws = torch.Generator().manual_seed(
            torch.initial_seed() + 1_000_003 * self.global_rank
        )

    # ------------------------------------------------------------------ building
    @classmethod
    def read_spec(cls, layout: Any) -> EmulatorSpec:
        """The emulator spec from a stored layout of any known version."""
        return EmulatorSpec.from_dict(layout)

    @property
    def network_label(self) -> str:
        """What the model is, for tables and output attributes."""
        return f"{self.mean.network_label} + flow-matching residual"

    def setup(self, stage: str) -> None:
        """Load and check stage 1, build, fit the residual std (once; a checkpoint may have)."""
        if self.net is not None:
            return
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        self.load_stage1(dm)
        assert self.mean.spec is not None
        self.build(self.mean.spec)
        device = self.trainer.strategy.root_device
        self.residual_std = self._fit_residual_std(dm, device).cpu()

    def configure_model(self) -> None:
        """NHWC weights before Lightning's DDP wraps the network, where they help
        (:func:`climdl.tasks.speed.channels_last_before_ddp`)."""
        if self._trainer is not None and self.net is not None:
            channels_last_before_ddp(self)

    def load_stage1(self, dm: Any) -> None:
        """Read stage 1 from ``mean_checkpoint`` and check it against the data module's spec
        (once; ``climdl train`` calls it before fitting, so a wrong file fails in one line).

        Args:
            dm: the data module (an EmulatorDataModule).

        Raises:
            ConfigError: no data module, no ``mean_checkpoint``, a checkpoint of another kind,
                or a stage 1 trained on other targets, predictors, grids or units.
        """
        if "mean" in self._modules:
            return
        if dm is None or not hasattr(dm, "spec"):
            raise ConfigError(f"the {self.NAME} task needs {self.DATA_MODULE} (data:).")
        path = self.hp.mean_checkpoint
        if not path:
            raise ConfigError(
                "the generative task needs its stage-1 checkpoint: "
                "--model.init_args.mean_checkpoint PATH"
            )
        mean, meta = read_stage1(str(path), dm.spec())
        self._attach_mean(mean, meta)

    def _attach_mean(self, mean: DownscalingTask, meta: dict[str, Any]) -> None:
        mean.eval().requires_grad_(False)
        self.mean = mean
        self.mean_meta = meta

    def build(self, spec: EmulatorSpec) -> None:
        """The residual network (and its EMA copy) for the stage-1 spec (stage 1 attached)."""
        hp = self.hp
        self.spec = spec
        targets = list(spec.targets)
        n_v = len(targets)
        orog = spec.orography
        cond = n_v + len(spec.variables) + (1 if orog is not None else 0)
        n_aux = len(self.mean.aux_norm.names)
        net = ResidualFlowNet(
            n_v,
            cond,
            n_aux,
            depth=hp.depth,
            base_filters=hp.base_filters,
            max_filters=hp.max_filters,
            block=hp.block,
            time_dim=hp.time_dim,
            size=spec.out_size,
        )
        if hp.crop is not None:
            if hp.crop > min(spec.out_size):
                raise ConfigError(f"crop {hp.crop} is larger than the grid {spec.out_size}.")
            net.check_size((hp.crop, hp.crop))
        self.net = net
        self.ema = copy.deepcopy(net).requires_grad_(False) if hp.ema_decay > 0 else None
        log = [t == "pr" and hp.pr_transform == "log1p" for t in targets]
        s = spec.stats
        self.register_buffer("log_mask", torch.tensor(log).view(1, -1, 1, 1), persistent=False)
        mu = torch.where(torch.tensor(log), s.y_log_mean, s.y_mean).float()
        sd = torch.where(torch.tensor(log), s.y_log_std, s.y_std).float().clamp_min(1e-6)
        self.register_buffer("cond_mean", mu.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("cond_std", sd.view(1, -1, 1, 1), persistent=False)
        o = None if orog is None else orog.float()
        o_n = None if o is None else ((o - o.mean()) / (o.std() + 1e-6))[None, None]
        self.register_buffer("orog_n", o_n, persistent=False)
        self.register_buffer("residual_std", torch.ones(n_v))
        self.mean_errors = ErrorSums(targets)

    def train(self, mode: bool = True) -> GenerativeDownscalingTask:
        """Train mode for stage 2 only: stage 1 and the EMA copy stay in eval mode."""
        super().train(mode)
        if "mean" in self._modules:
            self.mean.eval()
        if self.ema is not None:
            self.ema.eval()
        return self

    # ------------------------------------------------------------------ checkpoint
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The spec and version (as every task), stage 1's hyper-parameters, spec and hash,
        the residual statistics and the sampler settings."""
        super().on_save_checkpoint(checkpoint)
        assert self.mean.spec is not None
        checkpoint["climdl"]["mean"] = {**self.mean_meta, "spec": self.mean.spec.to_dict()}
        checkpoint["climdl"]["residual"] = {
            "targets": list(self.spec.targets) if self.spec else [],
            "std": self.residual_std.detach().cpu().clone(),
            "pr_transform": self.hp.pr_transform,
            "sampler": f"flow matching, Heun, {self.hp.sampler_steps} steps",
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Rebuild both stages from the checkpoint alone before Lightning loads the weights."""
        if self.net is None and "climdl" in checkpoint:
            self._restore(checkpoint)

    def _restore(self, ckpt: Mapping[str, Any]) -> None:
        meta = ckpt["climdl"].get("mean")
        if not isinstance(meta, Mapping) or "spec" not in meta:
            raise DataError("the generative checkpoint lacks its stage-1 part (climdl.mean).")
        mean = stage1_from_meta(meta)
        self._attach_mean(mean, {k: v for k, v in meta.items() if k != "spec"})
        self.build(self.read_spec(ckpt["climdl"]["spec"]))

    @classmethod
    def from_checkpoint(cls, ckpt: Mapping[str, Any]) -> GenerativeDownscalingTask:
        """Both stages (eval mode) from a checkpoint read with ``weights_only``; no stage-1 file."""
        accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
        hparams = {k: v for k, v in ckpt.get("hyper_parameters", {}).items() if k in accepted}
        task = cls(**hparams)
        task._restore(ckpt)
        task.load_state_dict(ckpt["state_dict"])
        return task.eval()

    # ------------------------------------------------------------------ transforms
    def _t(self, y: Tensor) -> Tensor:
        return torch.where(self.log_mask, torch.log1p(y.clamp_min(0)), y)

    def _t_inv(self, u: Tensor) -> Tensor:
        return torch.where(self.log_mask, torch.expm1(u.clamp(max=20.0)), u)

    def on_after_batch_transfer(
        self, batch: dict[str, Tensor], dataloader_idx: int
    ) -> dict[str, Tensor]:
        """Stage 1's normalisation (same keys: ``x_n``, ``aux_n``, ...)."""
        return self.mean.on_after_batch_transfer(batch, dataloader_idx)

    def predict_physical(self, batch: dict[str, Tensor]) -> Tensor:
        """The stage-1 conditional mean ``[B, V, H, W]`` in physical units."""
        return self.mean.predict_physical(batch)

    def _stage1(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """``T(stage-1 mean)`` ``[B, V, H, W]`` (float32) and the fine conditioning channels."""
        with torch.no_grad():
            base = self._t(self.mean.predict_physical(batch).float())
        x_n = batch["x_n"].float()
        size = base.shape[-2:]
        parts = [(base - self.cond_mean) / self.cond_std]
        if self.orog_n is not None:
            parts.append(self.orog_n.expand(base.shape[0], -1, -1, -1))
        parts.append(F.interpolate(x_n, size=size, mode="bilinear", align_corners=False))
        return base, torch.cat(parts, dim=1)

    def _aux(self, batch: dict[str, Tensor]) -> Tensor | None:
        assert isinstance(self.net, ResidualFlowNet)
        return batch["aux_n"].float() if self.net.n_aux else None

    # ------------------------------------------------------------------ sampling
    def sample_physical(
        self, batch: dict[str, Tensor], noise: Tensor, steps: int | None = None
    ) -> Tensor:
        """Ensemble members in physical units.

        Args:
            batch: a normalised batch (:meth:`on_after_batch_transfer`).
            noise: standard normal ``[B, M, V, H, W]`` (the caller seeds it).
            steps: Heun steps (None: ``hp.sampler_steps``).

        Returns:
            ``[B, M, V, H, W]`` float32, pr >= 0; a deterministic function of ``noise``.
        """
        steps = self.hp.sampler_steps if steps is None else steps
        net = self.ema if self.ema is not None else self.net
        assert net is not None, "call build() or fit first"
        b, m = noise.shape[:2]
        base, cond = self._stage1(batch)
        if noise.shape[2:] != base.shape[1:]:
            raise ConfigError(
                f"noise of shape {tuple(noise.shape)} does not fit [B, M, {base.shape[1]}, "
                f"{base.shape[2]}, {base.shape[3]}]."
            )
        aux = self._aux(batch)
        z = noise.to(base.device, torch.float32).reshape(b * m, *base.shape[1:])
        day = torch.arange(b, device=base.device).repeat_interleave(m)
        out = torch.empty_like(z)
        for i in range(0, b * m, SAMPLE_BATCH):
            d = day[i : i + SAMPLE_BATCH]
            c, a = cond[d], None if aux is None else aux[d]

            def velocity(x: Tensor, t: Tensor, c: Tensor = c, a: Tensor | None = a) -> Tensor:
                return net(x, c, t, a)

            out[i : i + SAMPLE_BATCH] = heun_sample(velocity, z[i : i + SAMPLE_BATCH], steps)
        r = out.view(b, m, *base.shape[1:]) * self.residual_std.view(1, 1, -1, 1, 1)
        y = self._t_inv(base[:, None] + r)
        targets = list(self.spec.targets) if self.spec else []
        if "pr" in targets:
            is_pr = torch.tensor([t == "pr" for t in targets], device=y.device)
            y = torch.where(is_pr.view(1, 1, -1, 1, 1), y.clamp_min(0), y)
        return y.float()

    # ------------------------------------------------------------------ losses
    def compute_loss(
        self,
        batch: dict[str, Tensor],
        net: nn.Module | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The flow-matching loss: masked MSE between ``net(x_t, t)`` and ``r - z`` per target.

        Args:
            batch: a normalised batch.
            net: the velocity network (default: the trained one; validation passes the EMA).
            generator: CPU generator of the noise and times (validation: fixed per batch).

        Returns:
            ``(loss, parts)``: the sum over targets and the part of each.
        """
        net = net if net is not None else self.net
        assert net is not None
        generator = generator if generator is not None else self._draws
        base, cond = self._stage1(batch)
        r = (self._t(batch["y"].float()) - base) / self.residual_std.view(1, -1, 1, 1)
        aux = self._aux(batch)
        crop = self.hp.crop
        if crop is not None and self.training and crop < max(r.shape[-2:]):
            i = int(torch.randint(r.shape[-2] - crop + 1, (1,), generator=generator))
            j = int(torch.randint(r.shape[-1] - crop + 1, (1,), generator=generator))
            r, cond = r[..., i : i + crop, j : j + crop], cond[..., i : i + crop, j : j + crop]
        n = r.shape[0]
        z = _to_device(torch.randn(r.shape, generator=generator), r.device)
        if self.hp.time_sampling == "logit_normal":
            t = _to_device(torch.sigmoid(torch.randn(n, generator=generator)), r.device)
        else:
            t = _to_device(torch.rand(n, generator=generator), r.device)
        tt = t.view(-1, 1, 1, 1)
        x_t = (1 - tt) * z + tt * torch.nan_to_num(r)
        v = net(x_t, cond, t, aux).float()
        target = r - z
        parts = (
            {name: L_.masked_mse(v[:, k], target[:, k]) for k, name in enumerate(self.spec.targets)}
            if self.spec
            else {}
        )
        return torch.stack(list(parts.values())).sum(), parts

    def _fit_residual_std(self, dm: Any, device: torch.device) -> Tensor:
        """The std of ``T(y) - T(mean)`` per target over up to :data:`RESIDUAL_DAYS` training
        days (seeded choice), finite points only."""
        self.to(device)

        def diffs() -> Iterator[Tensor]:
            for raw in training_days(dm, RESIDUAL_DAYS):
                batch = self.on_after_batch_transfer({k: v.to(device) for k, v in raw.items()}, 0)
                yield self._t(batch["y"].float()) - self._stage1(batch)[0]

        return channel_std(diffs())

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """The flow-matching loss of one batch; logs it and the epoch means of its per-target
        parts without a host-device sync (:mod:`climdl.tasks.step_log`)."""
        loss, parts = self.compute_loss(batch)
        means = {f"train_loss_{t}": v for t, v in parts.items()}
        self.train_log.log(self, loss, batch["x"].shape[0], means)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Move the EMA weights towards the trained ones (warmed-up decay)."""
        if self.ema is None or self.net is None:
            return
        n = self.global_step
        ema_update(self.ema, self.net, min(float(self.hp.ema_decay), (1 + n) / (10 + n)))

    # ------------------------------------------------------------------ validation
    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        """Validation loss of the EMA network on fixed noise, stage-1 errors, and the fair
        CRPS of a small ensemble on the first days of the first batch."""
        self._evaluate(batch, batch_idx, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        """As :meth:`validation_step`, on the test days."""
        self._evaluate(batch, batch_idx, "test")

    def _evaluate(self, batch: dict[str, Tensor], batch_idx: int, prefix: str) -> None:
        gen = torch.Generator().manual_seed(batch_idx)
        net = self.ema if self.ema is not None else self.net
        loss, _ = self.compute_loss(batch, net, gen)
        bs = batch["x"].shape[0]
        self.log(f"{prefix}_loss", loss, prog_bar=True, batch_size=bs, sync_dist=True)
        y = batch["y"].float()
        self.mean_errors.update(self.predict_physical(batch).float(), y)
        m, days = int(self.hp.val_members), int(self.hp.val_days)
        if batch_idx != 0 or m < 2 or days < 1:
            return
        part = {k: v[:days] for k, v in batch.items()}
        d = part["y"].shape[0]
        noise = _to_device(torch.randn((d, m, *part["y"].shape[1:]), generator=gen), y.device)
        members = self.sample_physical(part, noise, int(self.hp.val_steps))
        for i, t in enumerate(self.spec.targets if self.spec else ()):
            crps = fair_crps(members[:, :, i].transpose(0, 1), part["y"][:, i].float())
            self.log(f"{prefix}_crps_{t}", crps, batch_size=d, sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        """Log the stage-1 mean's validation RMSE and bias per target (physical units)."""
        self._log_scores("val")

    def on_test_epoch_end(self) -> None:
        """Log the stage-1 mean's test RMSE and bias per target (physical units)."""
        self._log_scores("test")

    def _log_scores(self, prefix: str) -> None:
        for t, (rmse, bias) in self.mean_errors.scores().items():
            self.log(f"{prefix}_rmse_{t}", rmse, sync_dist=True)
            self.log(f"{prefix}_bias_{t}", bias, sync_dist=True)

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> Any:
        """AdamW over the residual network; cosine decay to 10% after a short warm-up, or a
        constant learning rate."""
        assert self.net is not None
        hp = self.hp
        opt = torch.optim.AdamW(
            self.net.parameters(), lr=hp.lr, weight_decay=hp.weight_decay, **self.adam_options()
        )
        if hp.lr_schedule == "constant":
            return opt
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(total))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def _to_device(t: Tensor, device: torch.device) -> Tensor:
    """``t``, drawn on the host (CPU generators: the same draws on every device), on
    ``device`` without making the host wait: on CUDA a blocking copy waits for all the work
    queued on the device, and a non-blocking one is asynchronous from pinned memory only."""
    if device.type == "cuda":
        t = t.pin_memory()
    return t.to(device, non_blocking=True)
