"""DeepESD, the reference network of CORDEX ML-Bench (Baño-Medina et al. 2022).

Three 3x3 convolutions on the coarse predictors, then one dense layer straight to every target
grid point. The dense layer holds almost all parameters (``F * H * W * out_H * out_W``); it makes
no assumption about how the coarse and fine grids line up, so it works for any pair of grids.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from climdl.errors import ConfigError
from climdl.models.blocks import check_input, check_scalars


class DeepESD(nn.Module):
    """Conv(50) -> Conv(25) -> Conv(F) (3x3, ReLU, padding same) -> flatten -> dense.

    ``[B, in_channels, *in_size]`` (+ ``[B, n_scalars]``, concatenated to the flattened features)
    -> ``[B, out_channels, *out_size]``. No output activation (regression of e.g. tasmax; a
    precipitation task applies its own output transform).

    Parameter count::

        sum_k (c_{k-1} * 9 + 1) * c_k               # convs, c_0 = in_channels, c_k = filters
        + (F * H * W + n_scalars + 1) * out_channels * out_H * out_W   # dense layer

    Args:
        in_channels: predictor channels.
        out_channels: output channels.
        in_size: the coarse input's (H, W).
        out_size: the output's (out_H, out_W).
        filters: filters of each 3x3 convolution (the last one is ``F``).
        n_scalars: number of 1-D inputs joined to the flattened features (0: none).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int = 1,
        in_size: tuple[int, int] = (16, 16),
        out_size: tuple[int, int] = (128, 128),
        filters: tuple[int, ...] = (50, 25, 10),
        n_scalars: int = 0,
    ) -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ConfigError(
                f"DeepESD: in_channels and out_channels must be positive, got "
                f"{in_channels} and {out_channels}."
            )
        if not filters or any(f < 1 for f in filters):
            raise ConfigError(
                f"DeepESD: filters must be one or more positive counts, got {filters}."
            )
        if n_scalars < 0:
            raise ConfigError(f"DeepESD: n_scalars must be 0 or more, got {n_scalars}.")
        in_h, in_w = (int(v) for v in in_size)
        out_h, out_w = (int(v) for v in out_size)
        if min(in_h, in_w, out_h, out_w) < 1:
            raise ConfigError(
                f"DeepESD: in_size and out_size must be positive, got {in_size} and {out_size}."
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.in_size = (in_h, in_w)
        self.out_size = (out_h, out_w)
        self.n_scalars = n_scalars

        layers: list[nn.Module] = []
        cin = in_channels
        for f in filters:
            layers += [nn.Conv2d(cin, f, 3, padding=1), nn.ReLU(inplace=True)]
            cin = f
        self.convs = nn.Sequential(*layers)
        self.dense = nn.Linear(cin * in_h * in_w + n_scalars, out_channels * out_h * out_w)

    def stages(self) -> list[nn.Module]:
        """The convolutions and the dense layer, in forward order (for FSDP2 wrapping)."""
        return [self.convs, self.dense]

    def forward(self, x: Tensor, scalars: Tensor | None = None) -> Tensor:
        """``x``: ``[B, in_channels, *in_size]``; ``scalars``: ``[B, n_scalars]`` or None when
        ``n_scalars == 0``. Returns ``[B, out_channels, *out_size]``."""
        check_input(x, self.in_channels, self.in_size, "DeepESD")
        check_scalars(scalars, self.n_scalars, x.shape[0], "DeepESD")
        h = torch.flatten(self.convs(x), 1)
        if self.n_scalars > 0 and scalars is not None:
            h = torch.cat([h, scalars.to(h.dtype)], dim=1)
        out: Tensor = self.dense(h)
        return out.view(x.shape[0], self.out_channels, *self.out_size)
