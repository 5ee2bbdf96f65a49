"""The cloud-segmentation LightningModule: losses, per-class metrics, on-device preprocessing.

The task builds its :class:`~climdl.models.CloudUNet` in :meth:`setup` from the data module's
spec (bands, classes, per-band statistics, class frequencies), so the YAML never repeats what
the data say, and stores that spec in every checkpoint (``checkpoint["climdl"]``, with
``kind: cloud_segmentation``): :func:`load_segmenter` rebuilds the network from the checkpoint
alone, read with ``torch.load(weights_only=True)``.

Batches arrive raw (:mod:`climdl.clouds.data`); :meth:`on_after_batch_transfer` marks pixels
without data as ignored, standardises each band with the training statistics (module buffers),
optionally appends pixel-wise spectral indices (:mod:`climdl.models.spectral_indices`) and the
pixel's temperature relative to its whole scene (:mod:`climdl.models.scene_context`, from the
batch's ``ctx``: :mod:`climdl.clouds.context`) and, in training, flips and rotates every sample
by multiples of 90 degrees on the device.
Losses: cross-entropy (optionally class-weighted) or one-vs-rest BCE, each optionally plus
soft Dice; the no-data label is ignored throughout. Metrics: a torchmetrics confusion matrix
per epoch, from which IoU, F1, precision, recall and accuracy per class, mean IoU and the
"any cloud" scores are logged (:func:`climdl.tasks.seg_metrics.scores`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from climdl.clouds.context import PERCENTILES, check_scene_percentiles
from climdl.clouds.scene import CLOUDY, NODATA
from climdl.clouds.spec import SegmenterSpec
from climdl.errors import ConfigError, DataError
from climdl.models.blocks import BlockKind
from climdl.models.cloud_unet import CloudUNet
from climdl.models.scene_context import SceneContextChannels
from climdl.models.spectral_indices import SpectralIndices
from climdl.parallel.domain import Domain
from climdl.tasks.base import BaseTask, make_optimizer
from climdl.tasks.seg_inputs import Features, build_inputs
from climdl.tasks.seg_metrics import new_confusion, scores
from climdl.tasks.speed import channels_last_before_ddp
from climdl.tasks.step_log import TrainingLog

__all__ = ["SegmentationTask", "load_segmenter"]

Loss = Literal["ce", "ce_dice", "bce", "bce_dice"]
Optimizer = Literal["adam", "adamw", "sgd"]
KIND = "cloud_segmentation"


class SegmentationTask(BaseTask[SegmenterSpec]):
    """Learn per-pixel classes (clear, cloud, thin cloud, shadow, snow) from multispectral bands.

    Args:
        network: ``unet`` (:class:`~climdl.models.CloudUNet`), the only one for now.
        depth: UNet pooling levels (crops and tiles must be multiples of ``2**depth``).
        base_filters: filters of the first level, doubled per level.
        max_filters: cap on the filters.
        block: ``plain``, ``residual`` or ``inception`` conv blocks.
        dropout: bottleneck channel dropout.
        features: the network's inputs: ``bands`` (each standardised with the training
            statistics) or ``bands+indices`` (plus the normalised differences of
            :class:`~climdl.models.spectral_indices.SpectralIndices` - NDSI, NDVI, SWIR ratios -
            that the bands allow: the spectral shape Fmask's tests read, given to the network
            instead of left for it to learn from sums of ReLUs). ``+scene`` adds the pixel's
            brightness temperature minus the whole scene's 82.5th and 50th percentiles
            (:mod:`climdl.clouds.context`, Fmask's context, which a crop or tile cannot see;
            scaled by the thermal band's std): the checkpoint then needs a thermal band
            (bands without one - Sentinel-2, 38-Cloud - get no context, with a warning).
        loss: ``ce``, ``ce_dice``, ``bce`` (one-vs-rest) or ``bce_dice``.
        dice_weight: weight of the Dice term.
        any_cloud_weight: weight of an extra binary cross-entropy on "any cloud" (the summed
            probability of the cloudy classes, ``cloud`` and ``thin_cloud``, against all others):
            the decision a cloud mask is used for, which the per-class loss only rewards
            indirectly (a thin cloud called cloud costs as much there as one called clear).
        class_weights: ``balanced`` (inverse square root of the training frequencies,
            normalised to mean 1), explicit weights per class, or None (all 1).
        augment: random flips and 90-degree rotations of the training batches (on the device).
        optimizer: ``adam``, ``adamw`` or ``sgd`` (with momentum 0.9).
        lr: learning rate.
        weight_decay: L2 / decoupled weight decay.
        lr_schedule: ``cosine`` annealing over the run, or ``constant``.
    """

    band_mean: Tensor
    band_std: Tensor
    class_weight: Tensor
    is_cloudy: Tensor
    cloudy_index: Tensor
    clear_index: Tensor

    def __init__(
        self,
        network: Literal["unet"] = "unet",
        depth: int = 4,
        base_filters: int = 32,
        max_filters: int = 256,
        block: BlockKind = "plain",
        dropout: float = 0.0,
        features: Features = "bands",
        loss: Loss = "ce_dice",
        dice_weight: float = 1.0,
        any_cloud_weight: float = 0.0,
        class_weights: Literal["balanced"] | list[float] | None = "balanced",
        augment: bool = True,
        optimizer: Optimizer = "adamw",
        lr: float = 2e-3,
        weight_decay: float = 1e-4,
        lr_schedule: Literal["cosine", "constant"] = "cosine",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.train_log = TrainingLog()
        """Logs the training steps without a host-device sync (:mod:`climdl.tasks.step_log`)."""
        self.classes: list[str] = []
        self.indices: SpectralIndices | None = None
        self.context: SceneContextChannels | None = None
        self.last_confusion: dict[str, Tensor] = {}

    KIND = KIND
    NAME = "segmentation"
    DATA_MODULE = "a CloudDataModule"

    # ------------------------------------------------------------------ building
    @classmethod
    def read_spec(cls, layout: Any) -> SegmenterSpec:
        """The segmenter spec from a stored layout of any known version."""
        return SegmenterSpec.from_dict(layout)

    def build(self, spec: SegmenterSpec) -> None:
        """Create the network, normalisation buffers and metrics from a data spec."""
        hp = self.hp
        if hp.network != "unet":
            raise ConfigError(f"unknown network {hp.network!r}; choose unet.")
        self.spec = spec
        self.classes = list(spec.classes)
        k = len(self.classes)
        self.indices, self.context = build_inputs(hp.features, spec, warn=self._trainer is not None)
        extra = sum(m.num_features for m in (self.indices, self.context) if m is not None)
        self.net = CloudUNet(
            len(spec.bands) + extra,
            k,
            depth=hp.depth,
            base_filters=hp.base_filters,
            max_filters=hp.max_filters,
            block=hp.block,
            dropout=hp.dropout,
        )
        self.register_buffer("band_mean", spec.mean.float().view(1, -1, 1, 1))
        self.register_buffer("band_std", spec.std.float().view(1, -1, 1, 1))
        self.register_buffer("class_weight", self._class_weights(spec, k))
        # the any-cloud term's class split, on the device with the network (indexing with them
        # needs no data-dependent shape and no host copy: no host-device sync per step)
        cloudy = [c in CLOUDY for c in self.classes]
        self.register_buffer("is_cloudy", torch.tensor(cloudy), persistent=False)
        self.register_buffer(
            "cloudy_index", torch.tensor([i for i, c in enumerate(cloudy) if c]), persistent=False
        )
        self.register_buffer(
            "clear_index",
            torch.tensor([i for i, c in enumerate(cloudy) if not c]),
            persistent=False,
        )
        self.val_conf = new_confusion(k)
        self.test_conf = new_confusion(k)
        self.domain: Domain | None = None
        """This rank's place in its domain group under domain parallelism, else None."""

    def configure_model(self) -> None:
        """Under the domain strategy, split the network into row strips
        (:mod:`climdl.parallel.domain`); nothing happens otherwise."""
        if self._trainer is None or self.net is None:
            return
        channels_last_before_ddp(self)  # before DDP wraps the network (Lightning's DDP only)
        from climdl.parallel.domain import DomainParallelStrategy

        strategy = self.trainer.strategy
        if isinstance(strategy, DomainParallelStrategy):
            strategy.shard(self.net)
            self.domain = strategy.domain

    def unshard_domain(self) -> None:
        """Forget the domain split (called by the strategy's teardown): whole scenes again."""
        self.domain = None

    def _class_weights(self, spec: SegmenterSpec, k: int) -> Tensor:
        cw = self.hp.class_weights
        if cw is None:
            return torch.ones(k)
        if cw == "balanced":
            known = spec.class_counts
            counts = torch.ones(k, dtype=torch.float64) if known is None else known.double()
            freq = counts / counts.sum().clamp_min(1)
            w = torch.where(counts > 0, freq.clamp_min(1e-4).rsqrt(), torch.zeros_like(freq))
            w = w / w[counts > 0].mean().clamp_min(1e-12)
            return w.clamp(max=10.0).float()
        if isinstance(cw, str) or len(cw) != k:
            raise ConfigError(
                f"class_weights needs {k} values (classes {self.classes}), "
                f"'balanced' or null; got {cw!r}."
            )
        return torch.tensor([float(v) for v in cw])

    @property
    def size_multiple(self) -> int:
        """Inputs must be multiples of this in height and width."""
        return int(2**self.hp.depth)

    # ------------------------------------------------------------------ checkpoint
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The base's metadata, and the percentiles that define the scene context (if read)."""
        super().on_save_checkpoint(checkpoint)
        if self.context is not None:
            checkpoint["climdl"]["scene_percentiles"] = [float(p) for p in PERCENTILES]

    # ------------------------------------------------------------------ preprocessing
    @property
    def needs_context(self) -> bool:
        """Whether the network reads the scene's thermal context (``features`` ``...+scene``)."""
        return self.context is not None

    def normalise(self, x: Tensor, ctx: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The network's NaN-free input (standardised bands, then the spectral indices and the
        scene-relative temperatures if ``features`` asks for them) and the ``[B, H, W]`` mask
        of pixels with all bands.

        Args:
            x: raw bands ``[B, C, H, W]`` (NaN without data).
            ctx: ``[B, P]`` thermal context of each sample's scene (:mod:`climdl.clouds.context`;
                :func:`~climdl.tasks.seg_inputs.whole_scene_context` for samples that are whole
                scenes). Required when ``features`` has ``scene``, ignored otherwise: a tile or
                crop cannot compute its scene's, so there is no silent fallback.
        """
        valid = torch.isfinite(x).all(dim=1)
        xn = (x.float() - self.band_mean) / self.band_std
        if self.indices is not None:
            xn = torch.cat([xn, self.indices(x.float())], dim=1)
        if self.context is not None:
            assert self.spec is not None
            if ctx is None:
                raise ValueError(
                    f"features {self.hp.features} read the scene's thermal context: pass ctx "
                    "(climdl.clouds.context, or seg_inputs.whole_scene_context for whole scenes)."
                )
            xn = torch.cat([xn, self.context(x, ctx)], dim=1)
        return torch.nan_to_num(xn, nan=0.0, posinf=0.0, neginf=0.0), valid

    def on_after_batch_transfer(
        self, batch: dict[str, Tensor], dataloader_idx: int
    ) -> dict[str, Tensor]:
        """Normalise on the device, ignore pixels without data, augment training batches."""
        if self.context is not None and "ctx" not in batch:
            raise DataError(
                f"features {self.hp.features} needs the scene context (the batch's ctx, from "
                "CloudDataModule) with every batch: a crop or tile cannot compute its scene's."
            )
        x, valid = self.normalise(batch["x"], batch.get("ctx"))
        out = dict(batch)
        if "y" in batch:
            y = torch.where(valid, batch["y"], torch.full_like(batch["y"], NODATA))
            if self.hp.augment and self._in_training():
                x, y = augment(x, y)
            out["y"] = y
        out["x_n"] = x
        if self.domain is not None:  # this rank's strip of the (augmented) whole sample
            start, stop = self.domain.block(x.shape[-2], self.size_multiple)
            out["x_n"] = x[..., start:stop, :]
            if "y" in out:
                out["y"] = out["y"][..., start:stop, :]
        return out

    def _in_training(self) -> bool:
        return self._trainer is not None and self.trainer.training

    # ------------------------------------------------------------------ forward
    def forward(self, x_n: Tensor) -> Tensor:
        """Logits ``[B, K, H, W]`` of a normalised input."""
        assert self.net is not None, "call build() or fit first"
        out: Tensor = self.net(x_n)
        return out

    @torch.no_grad()
    def predict_proba(self, x: Tensor, ctx: Tensor | None = None) -> Tensor:
        """Class probabilities ``[B, K, H, W]`` of a raw input ``[B, C, H, W]`` (NaN allowed);
        ``ctx``: the scene context, as for :meth:`normalise`."""
        x_n, _ = self.normalise(x, ctx)
        return torch.softmax(self(x_n).float(), dim=1)

    # ------------------------------------------------------------------ losses
    def compute_loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """The loss of a normalised batch (see :meth:`climdl.tasks.base.BaseTask.compute_loss`);
        no parts (the configured terms are summed)."""
        return self.loss_from_logits(self(batch["x_n"]), batch["y"]), {}

    def loss_from_logits(self, logits: Tensor, y: Tensor) -> Tensor:
        """The configured loss of ``logits`` [B, K, H, W] against labels ``y`` [B, H, W]
        (no-data labels ignored).

        Every term is a ratio of sums over the batch and grid (weighted cross-entropy, BCE and
        the any-cloud term: mean over valid pixels; Dice: per-class overlaps), so under domain
        parallelism the sums of all strips are added with one differentiable all-reduce and
        every rank gets the whole domain's loss. A batch without valid pixels has loss 0 (every
        sum is 0 and the denominators are clamped), with no test of the data on the host.
        """
        logits = logits.float()
        k = logits.shape[1]
        valid = y != NODATA
        y0 = torch.where(valid, y, torch.zeros_like(y))
        onehot = F.one_hot(y0, k).permute(0, 3, 1, 2).float()
        w = self.class_weight
        loss_name = self.hp.loss
        m = valid[:, None].float()
        sums: list[Tensor] = []
        if loss_name.startswith("ce"):
            nll = F.cross_entropy(logits, y, weight=w, ignore_index=NODATA, reduction="none")
            sums += [nll.sum(), torch.where(valid, w[y0], 0.0).sum()]
        else:
            bce = F.binary_cross_entropy_with_logits(logits, onehot, reduction="none")
            bce = (bce * w.view(1, -1, 1, 1)).sum(1)
            sums += [torch.where(valid, bce, 0.0).sum(), valid.sum().float()]
        dice_at = 2  # offsets in the flattened sums: two scalars, then 3 x k for Dice
        if loss_name.endswith("dice"):
            prob = torch.softmax(logits, 1) if loss_name.startswith("ce") else torch.sigmoid(logits)
            sums += [
                (prob * onehot * m).sum((0, 2, 3)),
                ((prob + onehot) * m).sum((0, 2, 3)),
                onehot.mul(m).sum((0, 2, 3)),
            ]
        cloud_at = sum(v.numel() for v in sums)
        any_cloud = self.hp.any_cloud_weight > 0 and self._mixed_cloud_classes()
        if any_cloud:
            sums += [self._any_cloud_nll(logits, y0, valid).sum(), valid.sum().float()]
        total = self._reduce(torch.cat([v.reshape(-1) for v in sums]))
        loss = total[0] / total[1].clamp_min(1e-12)
        if loss_name.endswith("dice"):
            inter = total[dice_at : dice_at + k]
            denom = total[dice_at + k : dice_at + 2 * k]
            present = total[dice_at + 2 * k : dice_at + 3 * k] > 0
            dice = 1.0 - (2.0 * inter + 1.0) / (denom + 1.0)
            dice_mean = torch.where(present, dice, 0.0).sum() / present.sum().clamp_min(1)
            loss = loss + self.hp.dice_weight * dice_mean
        if any_cloud:
            nll_sum, count = total[cloud_at], total[cloud_at + 1]
            loss = loss + self.hp.any_cloud_weight * nll_sum / count.clamp_min(1)
        return loss

    def _reduce(self, sums: Tensor) -> Tensor:
        """Sum over the strips of the domain group (differentiable); identity otherwise."""
        if self.domain is None or self.domain.size == 1:
            return sums
        import torch.distributed as dist
        from torch.distributed.nn.functional import all_reduce

        out: Tensor = all_reduce(sums, op=dist.ReduceOp.SUM, group=self.domain.group)
        return out

    def _mixed_cloud_classes(self) -> bool:
        """Whether the labels have cloudy and clear classes (else the any-cloud term is 0)."""
        cloudy = [c in CLOUDY for c in self.classes]
        return any(cloudy) and not all(cloudy)

    def _any_cloud_nll(self, logits: Tensor, y0: Tensor, valid: Tensor) -> Tensor:
        """Per-pixel binary cross-entropy of P(cloud or thin cloud), from log-sum-exps (stable),
        0 where there is no data."""
        total = torch.logsumexp(logits, 1)
        log_p = torch.logsumexp(logits.index_select(1, self.cloudy_index), 1) - total
        log_q = torch.logsumexp(logits.index_select(1, self.clear_index), 1) - total
        target = self.is_cloudy[y0]
        return torch.where(valid, -torch.where(target, log_p, log_q), 0.0)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """Loss of one training batch; logs it without a host-device sync
        (:mod:`climdl.tasks.step_log`)."""
        loss, _ = self.compute_loss(batch)
        self.train_log.log(self, loss, batch["x"].shape[0])
        return loss

    def _eval_step(self, batch: dict[str, Tensor], prefix: str) -> None:
        logits = self(batch["x_n"])
        self.log(
            f"{prefix}_loss",
            self.loss_from_logits(logits, batch["y"]),
            prog_bar=True,
            batch_size=batch["x"].shape[0],
            sync_dist=True,
        )
        conf = self.val_conf if prefix == "val" else self.test_conf
        conf.update(logits.argmax(1), batch["y"])

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        """Accumulate the validation confusion matrix."""
        self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        """Accumulate the test confusion matrix."""
        self._eval_step(batch, "test")

    def on_validation_epoch_end(self) -> None:
        """Log the validation scores per class from the confusion matrix."""
        self._log_scores("val")

    def on_test_epoch_end(self) -> None:
        """Log the test scores per class from the confusion matrix."""
        self._log_scores("test")

    def _log_scores(self, prefix: str) -> None:
        conf = self.val_conf if prefix == "val" else self.test_conf
        matrix = conf.compute()
        values = scores(matrix.cpu(), self.classes)
        self.last_confusion[prefix] = matrix.cpu()
        for name, v in values.items():
            if v == v:  # not NaN: classes absent from truth and prediction are not logged
                self.log(f"{prefix}_{name}", float(v), prog_bar=name in ("miou", "cloud_iou"))
        conf.reset()

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> Any:
        """The chosen optimizer, stepped along a one-cycle (cosine) schedule unless ``lr_schedule`` is constant."""
        hp = self.hp
        opt = make_optimizer(
            hp.optimizer,
            self.parameters(),
            hp.lr,
            hp.weight_decay,
            0.9,
            ("adam", "adamw", "sgd"),
            self._trainer,
            self.speed.fused,
        )
        if hp.lr_schedule == "constant":
            return opt
        steps = max(int(self.trainer.estimated_stepping_batches), 1) if self._trainer else 1000
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=hp.lr, total_steps=steps, pct_start=0.1, anneal_strategy="cos"
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def augment(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Random horizontal flip and rotation by ``k * 90`` degrees of each sample, on its device.

    Non-square samples are rotated by 0 or 180 degrees only, so that shapes stay the same.
    """
    b = x.shape[0]
    square = x.shape[-1] == x.shape[-2]
    ks = torch.randint(0, 4 if square else 2, (b,), device="cpu").tolist()
    flips = torch.randint(0, 2, (b,), device="cpu").tolist()
    xs, ys = [], []
    for i in range(b):
        xi, yi = x[i], y[i]
        if flips[i]:
            xi, yi = xi.flip(-1), yi.flip(-1)
        k = ks[i] if square else 2 * ks[i]
        if k:
            xi, yi = torch.rot90(xi, k, (-2, -1)), torch.rot90(yi, k, (-2, -1))
        xs.append(xi)
        ys.append(yi)
    return torch.stack(xs), torch.stack(ys)


def load_segmenter(path: str | Path, map_location: str | torch.device = "cpu") -> SegmentationTask:
    """Rebuild a trained cloud segmenter (in eval mode) from its checkpoint alone.

    Args:
        path: a checkpoint written by ``climdl train`` with a segmentation config.
        map_location: where to load the weights (``cpu``, ``cuda``, ...).

    Returns:
        The task, in eval mode.

    Raises:
        DataError: an unreadable checkpoint, or one that is not a cloud segmenter's.
    """
    from climdl.tasks.checkpoint import read_checkpoint

    ckpt = read_checkpoint(path, map_location)
    kind = ckpt["climdl"].get("kind")
    if kind != KIND:
        raise DataError(
            f"{path} is not a cloud-segmentation checkpoint (it is "
            f"{'an emulator' if kind is None else repr(kind)} checkpoint); train one "
            "with climdl train --config configs/clouds/sample.yaml."
        )
    try:
        check_scene_percentiles(ckpt["climdl"].get("scene_percentiles"))
        return SegmentationTask.from_checkpoint(ckpt)
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from exc
