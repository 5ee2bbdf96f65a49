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


class FineCovariateHead(nn.Module):
    """``net(x, scalars)`` -> features [B, F, H, W]; cat covariates [K, H, W]; conv -> [B, out, H, W]."""

    covariates: Tensor

    def __init__(
        self, net: nn.Module, features: int, covariates: Tensor, out_channels: int, hidden: int = 32
    ) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("covariates", covariates.float().clone())
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
        feats = self.net(x, scalars)
        cov = self.covariates.to(feats.dtype).unsqueeze(0).expand(feats.shape[0], -1, -1, -1)
        return self.fuse(torch.cat([feats, cov], dim=1))
