"""Non-learned reference scores on the same validation days as the emulator.

tasmax: the interpolation baseline — the 850 hPa temperature interpolated to each target point,
brought down to the surface with the standard lapse rate from the height of the 850 hPa
surface (z_850 / g) to the fine orography, with a linear map (scale, offset) fitted on the
training days (fitted once when the data module computes its statistics, and kept in the data
spec). pr: the per-pixel training climatology (there is no coarse precipitation
predictor to interpolate).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from climdl.data.variables import G0
from climdl.errors import ConfigError
from climdl.models.interpolation import InterpolationBaseline, sampling_grid


def _target_latlon(spec: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    grid = spec["target_grid"]
    lat, lon = grid["lat"]["values"], grid["lon"]["values"]
    if lat.ndim == 1:
        lat, lon = torch.meshgrid(lat, lon, indexing="ij")
    return lat, lon


def has_tasmax_baseline(spec: dict[str, Any]) -> bool:
    """The tasmax baseline needs t_850, z_850 and the fine orography."""
    return {"t_850", "z_850"} <= set(spec["variables"]) and spec.get("orography") is not None


class TasmaxBaseline(nn.Module):
    """Interpolated T850 + lapse rate from the 850 hPa height to the orography, linearly mapped.

    Takes raw predictors ``[B, C, h, w]`` and returns tasmax ``[B, H, W]`` in K. Its grid, the
    orography and the fitted scale/offset are buffers, rebuilt from a data spec.
    """

    orog: torch.Tensor

    def __init__(
        self,
        spec: dict[str, Any],
        scale: torch.Tensor | float = 1.0,
        offset: torch.Tensor | float = 0.0,
    ) -> None:
        super().__init__()
        if not has_tasmax_baseline(spec):
            raise ConfigError(
                "the tasmax baseline needs t_850, z_850 and the orography in the data."
            )
        names = list(spec["variables"])
        lat, lon = _target_latlon(spec)
        grid = sampling_grid(
            spec["coarse_grid"]["lat"]["values"], spec["coarse_grid"]["lon"]["values"], lat, lon
        )
        self.interp = InterpolationBaseline(
            channel=names.index("t_850"), sample_grid=grid, scale=scale, offset=offset
        )
        self.iz = names.index("z_850")
        self.register_buffer("orog", spec["orography"].float().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.interp(x, orog_fine=self.orog, orog_coarse=x[:, self.iz] / G0)[:, 0]

    @classmethod
    def fit(cls, spec: dict[str, Any], x_train: np.ndarray, y_train: np.ndarray) -> TasmaxBaseline:
        """Fit scale and offset by least squares on training days (``y_train`` [N, H, W] in K)."""
        base = cls(spec)
        x = torch.from_numpy(x_train)
        base.interp.fit_linear_(
            x, torch.from_numpy(y_train), orog_fine=base.orog, orog_coarse=x[:, base.iz] / G0
        )
        return base

    def coefficients(self) -> dict[str, torch.Tensor]:
        """The fitted scale and offset, to store in a data spec."""
        return {"scale": self.interp.scale.clone(), "offset": self.interp.offset.clone()}


def baseline_rmse(
    dm: Any, split: Literal["val", "test"] = "val", max_train_days: int = 2000
) -> dict[str, float]:
    """RMSE of the baselines on the data module's validation or test days, per target."""
    spec = dm.spec()
    targets = list(spec["targets"])
    rng = np.random.default_rng(0)
    tr = np.sort(
        rng.choice(dm.train_idx, size=min(max_train_days, dm.train_idx.size), replace=False)
    )
    _, y_tr = dm.source.read(tr)
    if split == "val":
        x_ev, y_ev = dm.source.read(dm.val_idx)
    else:
        batches = list(dm.test_dataloader())
        x_ev = torch.cat([b["x"] for b in batches]).numpy()
        y_ev = torch.cat([b["y"] for b in batches]).numpy()
    out: dict[str, float] = {}
    for i, t in enumerate(targets):
        if t == "tasmax":
            if "tasmax_baseline" not in spec:
                continue
            base = TasmaxBaseline(spec, **spec["tasmax_baseline"])
            with torch.no_grad():
                pred = base(torch.from_numpy(x_ev)).numpy()
        else:
            pred = np.broadcast_to(np.nanmean(y_tr[:, i], axis=0), y_ev[:, i].shape)
        err = pred - y_ev[:, i]
        out[t] = float(np.sqrt(np.nanmean(err**2)))
    return out
