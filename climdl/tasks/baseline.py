"""Non-learned reference scores on the same validation days as the emulator.

tasmax: the interpolation baseline — the 850 hPa temperature interpolated to each target point,
brought down to the surface with the standard lapse rate from the height of the 850 hPa
surface (z_850 / g) to the fine orography, with a linear map (scale, offset) fitted on the
training days. pr: the per-pixel training climatology (there is no coarse precipitation
predictor to interpolate).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from climdl.data.variables import G0
from climdl.models.interpolation import InterpolationBaseline, sampling_grid


def _target_latlon(spec: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    grid = spec["target_grid"]
    lat, lon = grid["lat"]["values"], grid["lon"]["values"]
    if lat.ndim == 1:
        lat, lon = torch.meshgrid(lat, lon, indexing="ij")
    return lat, lon


def tasmax_baseline(spec: dict[str, Any], x_train: np.ndarray, y_train: np.ndarray) -> InterpolationBaseline | None:
    """The fitted interpolation + lapse-rate baseline, or None without t_850/z_850/orography."""
    vars_ = list(spec["variables"])
    if not {"t_850", "z_850"} <= set(vars_) or spec.get("orography") is None:
        return None
    lat, lon = _target_latlon(spec)
    grid = sampling_grid(spec["coarse_grid"]["lat"]["values"], spec["coarse_grid"]["lon"]["values"], lat, lon)
    base = InterpolationBaseline(channel=vars_.index("t_850"), sample_grid=grid)
    x = torch.from_numpy(x_train)
    base.fit_linear_(x, torch.from_numpy(y_train), orog_fine=spec["orography"],
                     orog_coarse=x[:, vars_.index("z_850")] / G0)
    return base


def baseline_rmse(dm: Any, max_train_days: int = 2000) -> dict[str, float]:
    """RMSE of the baselines on the data module's validation days, per target."""
    spec = dm.spec()
    targets = list(spec["targets"])
    rng = np.random.default_rng(0)
    tr = np.sort(rng.choice(dm.train_idx, size=min(max_train_days, dm.train_idx.size), replace=False))
    x_tr, y_tr = dm.source.read(tr)
    x_va, y_va = dm.source.read(dm.val_idx)
    out: dict[str, float] = {}
    for i, t in enumerate(targets):
        if t == "tasmax":
            base = tasmax_baseline(spec, x_tr, y_tr[:, i])
            if base is None:
                continue
            x = torch.from_numpy(x_va)
            with torch.no_grad():
                pred = base(x, orog_fine=spec["orography"],
                            orog_coarse=x[:, list(spec["variables"]).index("z_850")] / G0)[:, 0].numpy()
        else:
            pred = np.broadcast_to(np.nanmean(y_tr[:, i], axis=0), y_va[:, i].shape)
        err = pred - y_va[:, i]
        out[t] = float(np.sqrt(np.nanmean(err**2)))
    return out
