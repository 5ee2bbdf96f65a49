"""What the generative task (:mod:`climdl.tasks.generative`) is made of besides its network:
the stage-1 compatibility check, the days and moments behind its residual scale, the fair CRPS
of its validation ensembles, the error sums of its stage-1 mean, the moving average of its
weights and its learning-rate schedule."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torchmetrics import SumMetric

from climdl.data.spec import EmulatorSpec
from climdl.errors import ConfigError, DataError
from climdl.io.checksum import sha256_file
from climdl.tasks.checkpoint_file import read_checkpoint
from climdl.tasks.downscaling import DownscalingTask

__all__ = [
    "ErrorSums",
    "channel_std",
    "check_stage1",
    "ema_update",
    "fair_crps",
    "read_stage1",
    "stage1_from_meta",
    "training_days",
    "warmup_cosine",
]


def check_stage1(stage1: EmulatorSpec, data: EmulatorSpec, path: str) -> None:
    """Raise :class:`ConfigError` naming what differs between the stage-1 and the data's spec
    (targets in order, predictors, 1-D inputs, coarse and target grids, units)."""
    problems: list[str] = []
    if tuple(stage1.targets) != tuple(data.targets):
        problems.append(
            f"it predicts [{', '.join(stage1.targets)}] but the data's targets are "
            f"[{', '.join(data.targets)}]"
        )
    if tuple(stage1.variables) != tuple(data.variables):
        problems.append(
            f"its predictors are [{', '.join(stage1.variables)}] but the data's are "
            f"[{', '.join(data.variables)}]"
        )
    if tuple(stage1.aux_names) != tuple(data.aux_names):
        problems.append(
            f"its 1-D inputs are [{', '.join(stage1.aux_names)}] but the data's are "
            f"[{', '.join(data.aux_names)}]"
        )
    for what, a, b in (
        ("coarse", stage1.coarse_grid, data.coarse_grid),
        ("target", stage1.target_grid, data.target_grid),
    ):
        if not a.same_as(b):
            problems.append(f"its {what} grid is not the data's")
    for name in (*data.variables, *data.targets):
        u1, u2 = stage1.units.get(name), data.units.get(name)
        if u1 is not None and u1 != u2:
            problems.append(f"it has {name} in {u1} but the data in {u2}")
    if problems:
        raise ConfigError(f"mismatched stage 1 ({path}): {'; '.join(problems)}.")


def fair_crps(members: Tensor, truth: Tensor) -> Tensor:
    """The fair CRPS (Ferro 2014) of ``members`` ``[M, ...]`` (M >= 2) against ``truth``
    ``[...]``, averaged over the finite truth points (0-d tensor)."""
    m = members.shape[0]
    valid = torch.isfinite(truth)
    y = torch.nan_to_num(truth)
    skill = (members - y).abs().mean(0)
    spread = (members[:, None] - members[None]).abs().sum((0, 1)) / (2 * m * (m - 1))
    return torch.where(valid, skill - spread, 0.0).sum() / valid.sum().clamp_min(1)


def ema_update(ema: nn.Module, net: nn.Module, decay: float) -> None:
    """Move ``ema``'s weights and float buffers towards ``net``'s by ``1 - decay``; integer
    buffers (BatchNorm's counters) are copied.

    Args:
        ema: the averaged copy (same architecture as ``net``).
        net: the trained network.
        decay: the weight kept of the old average, in [0, 1].
    """
    with torch.no_grad():
        for e, p in zip(ema.parameters(), net.parameters(), strict=True):
            e.lerp_(p.detach(), 1.0 - decay)
        for eb, b in zip(ema.buffers(), net.buffers(), strict=True):
            if eb.is_floating_point():
                eb.lerp_(b, 1.0 - decay)
            else:
                eb.copy_(b)


def warmup_cosine(total: int, floor: float = 0.1) -> Callable[[int], float]:
    """The learning-rate factor of step ``n`` of ``total``: a linear warm-up over
    ``min(100, total / 20)`` steps, then a cosine decay from 1 to ``floor``."""
    warm = max(1, min(100, total // 20))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        frac = min((step - warm) / max(total - warm, 1), 1.0)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * frac))

    return factor


def training_days(dm: Any, n: int, seed: int = 0, batch: int = 64) -> Iterator[dict[str, Tensor]]:
    """Raw batches (``x``, ``y``, ``aux``, ...) of up to ``n`` training days of the data module
    (a seeded random choice, in time order), read from its training dataset.

    Args:
        dm: the data module (its ``train_dataloader().dataset`` serves the days).
        n: at most this many days.
        seed: the seed of the choice.
        batch: days per yielded batch.

    Yields:
        Dictionaries of CPU tensors, as the loader would collate them.
    """
    ds = dm.train_dataloader().dataset
    days = np.sort(np.random.default_rng(seed).permutation(len(ds))[: min(len(ds), n)])
    for start in range(0, days.size, batch):
        items = [int(d) for d in days[start : start + batch]]
        if hasattr(ds, "__getitems__"):
            yield ds.__getitems__(items)
        else:
            yield torch.utils.data.default_collate([ds[i] for i in items])


def channel_std(chunks: Iterable[Tensor]) -> Tensor:
    """The standard deviation per channel of ``[B, C, H, W]`` chunks over their finite values
    (float64 sums; float32 ``[C]`` on the CPU, at least 1e-6)."""
    acc: Tensor | None = None
    for chunk in chunks:
        ok = torch.isfinite(chunk)
        d = torch.where(ok, chunk.double(), 0.0)
        part = torch.stack([ok.sum((0, 2, 3)), d.sum((0, 2, 3)), d.square().sum((0, 2, 3))])
        acc = part if acc is None else acc + part
    if acc is None:
        raise ConfigError("the data module has no training days to fit the residual scale on.")
    count = acc[0].clamp_min(1)
    var = acc[2] / count - (acc[1] / count).square()
    return var.clamp_min(1e-12).sqrt().clamp_min(1e-6).float().cpu()


class ErrorSums(nn.Module):
    """Sums of squared errors, errors and valid points per target (torchmetrics: summed over
    ranks), behind the RMSE and bias of a deterministic prediction in physical units. The sums
    are not checked for NaN (that check waits for the device): a NaN prediction gives NaN scores.

    Args:
        targets: the target names, in channel order.
    """

    KINDS = ("sq", "err", "n")

    def __init__(self, targets: Iterable[str]) -> None:
        super().__init__()
        self.names = list(targets)
        self.sums = nn.ModuleDict(
            {
                f"{i}_{k}": SumMetric(nan_strategy="disable")
                for i in range(len(self.names))
                for k in self.KINDS
            }
        )

    def _sum(self, i: int, kind: str) -> SumMetric:
        metric = self.sums[f"{i}_{kind}"]
        assert isinstance(metric, SumMetric)
        return metric

    def update(self, pred: Tensor, y: Tensor) -> None:
        """Add a batch: ``pred`` and ``y`` ``[B, V, H, W]`` (NaN truth is left out)."""
        for i in range(len(self.names)):
            valid = torch.isfinite(y[:, i])
            diff = torch.where(valid, pred[:, i] - torch.nan_to_num(y[:, i]), 0.0)
            self._sum(i, "sq").update(diff.square().sum())
            self._sum(i, "err").update(diff.sum())
            self._sum(i, "n").update(valid.sum().float())

    def scores(self) -> dict[str, tuple[Tensor, Tensor]]:
        """``{target: (rmse, bias)}`` of what was added, then start again from zero."""
        out: dict[str, tuple[Tensor, Tensor]] = {}
        for i, name in enumerate(self.names):
            sq, err, n = (self._sum(i, k).compute() for k in self.KINDS)
            n = n.clamp_min(1)
            out[name] = ((sq / n).sqrt(), err / n)
            for k in self.KINDS:
                self._sum(i, k).reset()
        return out


def read_stage1(path: str, data: EmulatorSpec) -> tuple[DownscalingTask, dict[str, Any]]:
    """The stage-1 task read safely from
    ``path`` and checked against the data's spec, with its provenance (hyper-parameters, SHA-256).

    Raises:
        ConfigError: a checkpoint of another kind, or a stage 1 that does not fit the data.
        DataError: a missing, damaged or foreign file.
    """
    ckpt = read_checkpoint(path)
    kind = ckpt["climdl"].get("kind")
    if kind is not None:
        raise ConfigError(
            f"{path} is a {kind!r} checkpoint; the generative task's stage 1 must be a "
            "deterministic emulator (climdl train --config configs/emulator/sample.yaml)."
        )
    try:
        mean = DownscalingTask.from_checkpoint(ckpt)
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from exc
    assert mean.spec is not None
    check_stage1(mean.spec, data, path)
    return mean, {"hyper_parameters": dict(mean.hparams), "sha256": sha256_file(path)}


def stage1_from_meta(meta: Mapping[str, Any]) -> DownscalingTask:
    """The stage-1 task rebuilt from a generative checkpoint's ``climdl.mean`` (hyper-parameters
    this version knows, and the spec); the caller loads the weights."""
    accepted = set(inspect.signature(DownscalingTask.__init__).parameters) - {"self"}
    hp = {k: v for k, v in meta.get("hyper_parameters", {}).items() if k in accepted}
    mean = DownscalingTask(**hp)
    mean.build(DownscalingTask.read_spec(meta["spec"]))
    return mean
