"""Training losses for downscaling, all NaN-aware.

Targets carry NaN where there is no truth (sea points, gaps in observations). Every loss here
builds ``mask = isfinite(target)`` and averages over the valid points only: masked points are
*excluded* (never zero-filled into the mean, which would bias it towards zero) and get an exact
zero gradient, even when the prediction there is NaN. A batch without any valid point returns a
zero that is still connected to the prediction's graph, so every DDP rank runs the same backward
and none hangs. Half-precision inputs are computed in float32.

- :func:`masked_mse`, :func:`masked_mae`: the usual losses (MSE for temperature).
- :class:`DouryAsymmetricLoss`: Doury et al. (Clim Dyn 2024) precipitation loss, MAE plus an
  extra penalty on under-estimation weighted by a per-grid-point gamma CDF
  (:func:`climdl.preprocess.gamma.fit_gamma`).
- :func:`bernoulli_gamma_nll`: likelihood of a wet/dry Bernoulli times a gamma for the wet amounts,
  with :func:`bernoulli_gamma_mean` and :func:`bernoulli_gamma_sample` for deterministic and
  stochastic outputs.
"""

from __future__ import annotations

import functools
from typing import Literal, get_args

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from climdl.errors import ConfigError, DataError
from climdl.preprocess.gamma import fit_gamma

LossName = Literal["mse", "mae", "doury_asymmetric", "bernoulli_gamma"]
LOSS_NAMES: tuple[str, ...] = get_args(LossName)
LOG_PARAM_BOUNDS = (-7.0, 7.0)  # clamp of log shape / log scale: exp() stays in [1e-3, 1e3]
_AMOUNT_EPS = 1e-6  # mm/day; floor of a wet amount inside log()


def channels_per_target(loss_name: str) -> int:
    """Network output channels per target variable: 3 for ``bernoulli_gamma`` (p, shape, scale), else 1."""
    if loss_name not in LOSS_NAMES:
        raise ConfigError(f"unknown loss {loss_name!r}; choose one of {', '.join(LOSS_NAMES)}.")
    return 3 if loss_name == "bernoulli_gamma" else 1


def _compute_dtype(*tensors: Tensor) -> torch.dtype:
    """The promoted floating dtype of the inputs, at least float32 (bf16/fp16 sums lose too much)."""
    dtype = functools.reduce(torch.promote_types, (t.dtype for t in tensors))
    if not dtype.is_floating_point or torch.finfo(dtype).bits < 32:
        return torch.float32
    return dtype


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` over ``mask``; 0 (with a grad_fn) when nothing is valid. No host sync."""
    return torch.where(mask, values, 0.0).sum() / mask.sum().clamp_min(1)


def _prepare(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Check shapes; return (pred, target, mask) in the compute dtype with masked points set to 0.

    Filling *before* any arithmetic keeps NaN out of the backward pass (``0 * NaN`` is NaN).
    """
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ.")
    dtype = _compute_dtype(pred, target)
    mask = torch.isfinite(target)
    return (torch.where(mask, pred.to(dtype), 0.0), torch.where(mask, target.to(dtype), 0.0), mask)


def valid_fraction(target: Tensor) -> Tensor:
    """Fraction of finite target points (0-d float tensor; 0 for an empty tensor), for logging."""
    if target.numel() == 0:
        return torch.zeros((), device=target.device)
    return torch.isfinite(target).float().mean()


def masked_mse(pred: Tensor, target: Tensor) -> Tensor:
    """Mean squared error over the finite target points (pooled over the whole batch)."""
    p, y, mask = _prepare(pred, target)
    return _masked_mean((p - y).square(), mask)


def masked_mae(pred: Tensor, target: Tensor) -> Tensor:
    """Mean absolute error over the finite target points (pooled over the whole batch)."""
    p, y, mask = _prepare(pred, target)
    return _masked_mean((p - y).abs(), mask)


# ---------------------------------------------------------------- the Doury loss


class DouryAsymmetricLoss(nn.Module):
    """Doury et al. (2024) asymmetric precipitation loss.

    ``L = mean_valid( |y - ŷ| + λ · w(y) · max(0, y - ŷ) )``, ``w(y) = F_k,θ(y - t)^p`` where
    ``F_k,θ`` is the gamma CDF fitted at that grid point to the wet-day excesses over ``t`` (t = 1
    mm/day, p = 2, λ = 1 in the paper). MAE alone under-predicts heavy rain (it targets the
    median); the extra term only penalises under-estimation, and only where the observed value is
    high *for that grid point*, pushing the tail up without over-predicting drizzle: for
    ``y <= t``, ``F(0) = 0`` and the loss is exactly the MAE. ``gamma_shape``/``gamma_scale``
    ([H, W] or scalars, from :func:`fit_gamma`) are buffers: they travel with the checkpoint and
    the device, and are read in float32 whatever the module's dtype.
    """

    gamma_shape: Tensor
    gamma_scale: Tensor

    def __init__(
        self,
        gamma_shape: Tensor | float,
        gamma_scale: Tensor | float,
        threshold: float = 1.0,
        asym_weight: float = 1.0,
        cdf_power: float = 2.0,
    ) -> None:
        super().__init__()
        shape = torch.as_tensor(gamma_shape, dtype=torch.float32).detach().clone()
        scale = torch.as_tensor(gamma_scale, dtype=torch.float32).detach().clone()
        if shape.shape != scale.shape:
            raise ConfigError(
                f"gamma shape {tuple(shape.shape)} and scale {tuple(scale.shape)} differ."
            )
        if not bool((torch.isfinite(shape * scale) & (shape > 0) & (scale > 0)).all()):
            raise ConfigError("gamma shape and scale must be finite and > 0; refit with fit_gamma.")
        if asym_weight < 0 or cdf_power < 0:
            raise ConfigError("asym_weight and cdf_power must be >= 0.")
        self.register_buffer("gamma_shape", shape)
        self.register_buffer("gamma_scale", scale)
        self.threshold, self.asym_weight, self.cdf_power = threshold, asym_weight, cdf_power
        self.row_start = 0
        """First grid row of the targets (domain parallelism: the rank's strip)."""

    @classmethod
    def from_samples(
        cls,
        samples: Tensor | npt.NDArray[np.floating],
        threshold: float = 1.0,
        asym_weight: float = 1.0,
        cdf_power: float = 2.0,
    ) -> DouryAsymmetricLoss:
        """Fit the per-grid-point gammas on training targets [N, H, W] (mm/day) and build the loss."""
        shape, scale = fit_gamma(samples, threshold)
        return cls(shape, scale, threshold, asym_weight, cdf_power)

    def extra_repr(self) -> str:
        """Grid shape and the loss's constants, for ``print(module)``."""
        return (
            f"grid={tuple(self.gamma_shape.shape)}, threshold={self.threshold}, "
            f"asym_weight={self.asym_weight}, cdf_power={self.cdf_power}"
        )

    def weight(self, target: Tensor) -> Tensor:
        """``w(y) = F(max(y - t, 0))^p`` in float32 (0 at NaN targets); no gradient."""
        shape, scale = self.gamma_shape, self.gamma_scale
        if shape.ndim == 2 and target.ndim >= 2 and target.shape[-2] != shape.shape[0]:
            rows = slice(self.row_start, self.row_start + target.shape[-2])  # a strip
            shape, scale = shape[rows], scale[rows]
        grid = tuple(shape.shape)
        if grid and tuple(target.shape[-len(grid) :]) != grid:
            raise DataError(
                f"the target grid {tuple(target.shape)} does not end with the grid "
                f"{tuple(self.gamma_shape.shape)} the gamma laws were fitted on."
            )
        with torch.no_grad():
            y = torch.nan_to_num(target.float(), nan=0.0)
            x = (y - self.threshold).clamp_min(0) / scale.float()
            cdf = torch.special.gammainc(shape.float().expand_as(x), x)
            return torch.nan_to_num(cdf, nan=0.0).pow(self.cdf_power)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """Mean of ``|p - y| + asym_weight * w(y) * max(y - p, 0)`` over valid points."""
        p, y, mask = _prepare(pred, target)
        under = (y - p).clamp_min(0)
        w = self.weight(y).to(p.dtype)
        return _masked_mean((p - y).abs() + self.asym_weight * w * under, mask)


# ---------------------------------------------------------------- Bernoulli-gamma likelihood


def _split_params(params: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """[B, 3, ...] -> (logit p, log shape, log scale), each [B, ...] in >= float32, logs clamped."""
    if params.ndim < 2 or params.shape[1] != 3:
        raise ValueError(
            f"Bernoulli-gamma parameters must be [B, 3, ...], got {tuple(params.shape)}."
        )
    q = params.to(_compute_dtype(params))
    lo, hi = LOG_PARAM_BOUNDS
    return q[:, 0], q[:, 1].clamp(lo, hi), q[:, 2].clamp(lo, hi)


def bernoulli_gamma_nll(params: Tensor, target: Tensor, wet_threshold: float = 0.1) -> Tensor:
    """Negative log-likelihood of a Bernoulli-gamma law, mean over the finite target points.

    ``params`` [B, 3, H, W]: logit of the wet probability p, log shape α, log scale β; ``target``
    [B, H, W] (or [B, 1, H, W]) in mm/day. A day is wet when ``y > t`` (``wet_threshold``, mm/day,
    so that numerical drizzle is not a wet day) and the excess ``z = y - t`` is Gamma(α, β):
    ``NLL = -[(1 - wet)·log(1 - p) + wet·(log p + (α-1)·log z - z/β - α·log β - lgamma(α))]``.
    With ``t = 0`` this is the classic form in y. log p and log(1 - p) use ``logsigmoid``; log α and
    log β are clamped to ``LOG_PARAM_BOUNDS``; ``z >= 1e-6``.
    """
    if target.ndim == params.ndim:
        target = target.squeeze(1)
    logit, log_a, log_b = _split_params(params)
    if logit.shape != target.shape:
        raise ValueError(
            f"parameters {tuple(params.shape)} do not match target {tuple(target.shape)}."
        )
    mask = torch.isfinite(target)
    y = torch.where(mask, target.to(logit.dtype), 0.0)
    logit, log_a, log_b = (torch.where(mask, v, 0.0) for v in (logit, log_a, log_b))
    wet = y > wet_threshold
    z = (y - wet_threshold).clamp_min(_AMOUNT_EPS)
    alpha = log_a.exp()
    log_wet = (
        F.logsigmoid(logit)
        + (alpha - 1) * z.log()
        - z / log_b.exp()
        - alpha * log_b
        - torch.lgamma(alpha)
    )
    return _masked_mean(-torch.where(wet, log_wet, F.logsigmoid(-logit)), mask)


def bernoulli_gamma_mean(params: Tensor, wet_threshold: float = 0.1) -> Tensor:
    """Expected precipitation ``p · (t + α·β)`` [B, H, W] (``p·α·β`` for ``t = 0``), differentiable."""
    logit, log_a, log_b = _split_params(params)
    return torch.sigmoid(logit) * (wet_threshold + (log_a + log_b).exp())


def _standard_gamma(alpha: Tensor, generator: torch.Generator | None) -> Tensor:
    """Gamma(α, 1) draws (Marsaglia-Tsang, boosted for α < 1) from ``generator``, vectorised."""
    a = alpha + (alpha < 1).to(alpha.dtype)  # sample Gamma(a+1) then scale by U^(1/a) for a < 1
    d = a - 1 / 3
    c = 1 / torch.sqrt(9 * d)
    out = torch.empty_like(a)
    todo = torch.ones_like(a, dtype=torch.bool)
    for _ in range(100):  # acceptance >= 95 % per round
        x = torch.randn(a.shape, generator=generator, dtype=a.dtype, device=a.device)
        u = torch.rand(a.shape, generator=generator, dtype=a.dtype, device=a.device)
        v = (1 + c * x) ** 3
        ok = todo & (v > 0) & (u.log() < 0.5 * x**2 + d - d * v + d * v.clamp_min(1e-30).log())
        out = torch.where(ok, d * v, out)
        todo &= ~ok
        if not bool(todo.any()):
            break
    u = torch.rand(a.shape, generator=generator, dtype=a.dtype, device=a.device)
    return torch.where(alpha < 1, out * u.pow(1 / alpha), out)


def bernoulli_gamma_sample(
    params: Tensor, generator: torch.Generator | None = None, wet_threshold: float = 0.1
) -> Tensor:
    """One stochastic member [B, H, W]: 0 with probability 1 - p, else ``t + Gamma(α, β)``.

    Pass a ``generator`` (on the params' device) for reproducible ensembles. No gradient.
    """
    with torch.no_grad():
        logit, log_a, log_b = _split_params(params)
        u = torch.rand(logit.shape, generator=generator, dtype=logit.dtype, device=logit.device)
        amount = wet_threshold + _standard_gamma(log_a.exp(), generator) * log_b.exp()
        return torch.where(u < torch.sigmoid(logit), amount, 0.0)
