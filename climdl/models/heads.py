"""Fusion of fine-scale static covariates (orography) with a network's output features.

A coarse-to-fine network never sees the 12.5 km orography that shapes tasmax (lapse rate) and
pr (uplift). :class:`FineCovariateHead` concatenates fixed covariate maps, held as buffers so
they travel with the checkpoint, to the network's last feature maps and maps them to the
targets with two small convolutions.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from climdl.errors import ConfigError


class FineCovariateHead(nn.Module):
    """``net(x, scalars)`` -> features [B, F, H, W]; cat covariates [K, H, W]; conv -> [B, out, H, W]."""

    covariates: Tensor

    def __init__(
        self, net: nn.Module, features: int, covariates: Tensor, out_channels: int, hidden: int = 32
    ) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("covariates", covariates.float().clone())
        self.row_start = 0
        """First fine row of the features :meth:`forward` gets (domain parallelism sets it to
        the rank's first row; 0 for the whole grid)."""
        k = covariates.shape[0]
        self.fuse = nn.Sequential(
            nn.Conv2d(features + k, hidden, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, out_channels, 1),
        )

    def stages(self) -> list[nn.Module]:
        """The network's stages then the fusion head (for pipeline cuts)."""
        net: Any = self.net
        inner: list[nn.Module] = net.stages() if hasattr(net, "stages") else [net]
        return [*inner, self.fuse]

    def forward(self, x: Tensor, scalars: Tensor | None = None) -> Tensor:
        """Network features fused with the fine covariates, ``[N, out_channels, H, W]``."""
        return self.fuse_strip(self.net(x, scalars), self.row_start)

    def fuse_strip(self, feats: Tensor, start: int) -> Tensor:
        """Fuse features ``[N, F, h, W]`` whose first row is fine row ``start`` with the
        covariates' rows ``start:start + h``."""
        rows = self.covariates[:, start : start + feats.shape[2]]
        if rows.shape[1:] != feats.shape[2:]:
            raise ConfigError(
                f"features of {feats.shape[2]} x {feats.shape[3]} from row {start} do not fit the "
                f"{self.covariates.shape[1]} x {self.covariates.shape[2]} covariate grid."
            )
        cov = rows.to(feats.dtype).unsqueeze(0).expand(feats.shape[0], -1, -1, -1)
        return self.fuse(torch.cat([feats, cov], dim=1))
