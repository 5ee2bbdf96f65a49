"""The non-learned tasmax baseline the emulator has to beat.

The 850 hPa temperature interpolated to each target point, brought down to the surface with the
standard lapse rate from the height of the 850 hPa surface (z_850 / g) to the fine orography,
with a linear map (scale, offset) fitted on the training days and kept in the emulator spec. A
plain ``nn.Module`` (no Lightning), so that the task, inference and the baseline scores share it.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from climdl.data.spec import BaselineCoefficients, EmulatorSpec
from climdl.data.variables import G0
from climdl.errors import ConfigError
from climdl.models.interpolation import InterpolationBaseline, sampling_grid


def _target_latlon(spec: EmulatorSpec) -> tuple[torch.Tensor, torch.Tensor]:
    grid = spec.target_grid
    lat, lon = grid.coord("lat").values, grid.coord("lon").values
    if lat.ndim == 1:
        lat, lon = torch.meshgrid(lat, lon, indexing="ij")
    return lat, lon


def has_tasmax_baseline(spec: EmulatorSpec) -> bool:
    """The tasmax baseline needs t_850, z_850 and the fine orography."""
    return {"t_850", "z_850"} <= set(spec.variables) and spec.orography is not None


class TasmaxBaseline(nn.Module):
    """Interpolated T850 + lapse rate from the 850 hPa height to the orography, linearly mapped.

    Takes raw predictors ``[B, C, h, w]`` and returns tasmax ``[B, H, W]`` in K. Its grid, the
    orography and the fitted scale/offset are buffers, rebuilt from an emulator spec.
    """

    orog: torch.Tensor

    def __init__(
        self,
        spec: EmulatorSpec,
        coefficients: BaselineCoefficients | None = None,
    ) -> None:
        super().__init__()
        if not has_tasmax_baseline(spec):
            raise ConfigError(
                "the tasmax baseline needs t_850, z_850 and the orography in the data."
            )
        assert spec.orography is not None
        names = list(spec.variables)
        lat, lon = _target_latlon(spec)
        coarse = spec.coarse_grid
        grid = sampling_grid(coarse.coord("lat").values, coarse.coord("lon").values, lat, lon)
        c = coefficients
        self.interp = InterpolationBaseline(
            channel=names.index("t_850"),
            sample_grid=grid,
            scale=1.0 if c is None else c.scale,
            offset=0.0 if c is None else c.offset,
        )
        self.iz = names.index("z_850")
        self.register_buffer("orog", spec.orography.float().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Fine tasmax ``[N, H, W]`` (K) from coarse predictors ``x[N, C, h, w]``."""
        return self.interp(x, orog_fine=self.orog, orog_coarse=x[:, self.iz] / G0)[:, 0]

    @classmethod
    def fit(cls, spec: EmulatorSpec, x_train: np.ndarray, y_train: np.ndarray) -> TasmaxBaseline:
        """Fit scale and offset by least squares on training days (``y_train`` [N, H, W] in K)."""
        base = cls(spec)
        x = torch.from_numpy(x_train)
        base.interp.fit_linear_(
            x, torch.from_numpy(y_train), orog_fine=base.orog, orog_coarse=x[:, base.iz] / G0
        )
        return base

    def coefficients(self) -> BaselineCoefficients:
        """The fitted scale and offset, to store in the emulator spec."""
        return BaselineCoefficients(self.interp.scale.clone(), self.interp.offset.clone())
