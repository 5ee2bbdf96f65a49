"""Per-grid-point gamma laws fitted to wet-day precipitation: a statistic of the training data.

The fit needs no network and no Lightning, so it sits below the data layer: the Doury loss
(:class:`climdl.tasks.losses.DouryAsymmetricLoss`) weights under-estimation by the CDF of these
laws, and the task fits them on the training targets the data module provides.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from climdl.errors import DataError


def _gamma_mle(total: Tensor, total_log: Tensor, count: Tensor) -> tuple[Tensor, Tensor]:
    """Gamma (shape, scale) maximum likelihood from sufficient statistics (sum x, sum ln x, n).

    With ``A = ln(mean) - mean(ln x)`` the MLE shape solves ``ln k - digamma(k) = A``. Thom's
    approximation ``k = (1 + sqrt(1 + 4A/3)) / (4A)`` starts three Newton steps; scale = mean / k.
    """
    mean = total / count
    a = torch.log(mean) - total_log / count
    k = (1 + torch.sqrt(1 + 4 * a / 3)) / (4 * a)
    for _ in range(3):
        f = torch.log(k) - torch.digamma(k) - a
        k = (k - f / (1 / k - torch.polygamma(1, k))).clamp_min(1e-6)
    return k, mean / k


def fit_gamma(
    samples: Tensor | npt.NDArray[np.floating],
    threshold: float = 1.0,
    min_wet: int = 30,
    chunk: int = 256,
) -> tuple[Tensor, Tensor]:
    """Fit a gamma law per grid point to the wet-day excesses ``x - threshold`` (``x > threshold``).

    The fit is maximum likelihood on the excess over ``threshold``, so that
    ``gammainc(shape, (y - threshold) / scale)`` in
    :class:`~climdl.tasks.losses.DouryAsymmetricLoss` is the wet-day CDF starting at the threshold
    (the paper evaluates the CDF at ``y - 1``; fitting the excess makes that a consistent law).
    Grid points with fewer than ``min_wet`` wet days, or whose wet values are all equal, get the
    domain-wide fit, so dry or masked points stay usable.

    Args:
        samples: [N, *grid] daily precipitation in mm/day (NaN allowed, ignored).
        threshold: wet-day threshold in mm/day.
        min_wet: fewest wet days for a grid point's own fit.
        chunk: days per float64 accumulation step (bounds memory for NumPy inputs).

    Returns:
        float32 (shape, scale), each of shape ``grid``, on the samples' device.
    """
    if len(samples.shape) < 1 or samples.shape[0] == 0:
        raise DataError("fit_gamma needs at least one day of precipitation samples [N, H, W].")
    out = samples.device if isinstance(samples, Tensor) else torch.device("cpu")
    acc = torch.device("cpu") if out.type == "mps" else out  # MPS has no float64
    count = torch.zeros(tuple(samples.shape[1:]), dtype=torch.float64, device=acc)
    total, total_log = torch.zeros_like(count), torch.zeros_like(count)
    for start in range(0, samples.shape[0], chunk):
        part = samples[start : start + chunk]  # numpy chunks are copied one at a time
        if isinstance(part, Tensor):
            excess = part.to(acc, torch.float64) - threshold
        else:
            excess = torch.from_numpy(np.array(part, dtype=np.float64)) - threshold
        wet = excess > 0  # False for NaN
        safe = torch.where(wet, excess, 1.0)
        count += wet.sum(0)
        total += torch.where(wet, safe, 0.0).sum(0)
        total_log += torch.where(wet, safe.log(), 0.0).sum(0)
    if count.sum() < 2:
        raise DataError(
            f"fewer than 2 precipitation values exceed {threshold} in the training "
            "samples; are they in mm/day (not kg m-2 s-1)?"
        )
    dom_shape, dom_scale = _gamma_mle(total.sum(), total_log.sum(), count.sum())
    if not bool(torch.isfinite(dom_shape) & torch.isfinite(dom_scale)):
        raise DataError(
            "the wet-day precipitation values are all equal; no gamma law can be fitted."
        )
    shape, scale = _gamma_mle(total, total_log, count.clamp_min(1))
    ok = (count >= max(min_wet, 2)) & torch.isfinite(shape) & torch.isfinite(scale) & (scale > 0)
    shape, scale = torch.where(ok, shape, dom_shape), torch.where(ok, scale, dom_scale)
    return shape.to(out, torch.float32), scale.to(out, torch.float32)
