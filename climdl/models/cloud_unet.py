"""The cloud-segmentation UNet: a symmetric encoder-decoder on climdl's shared conv blocks.

Any number of input bands, any number of classes, configurable depth and width, and plain,
residual or inception blocks (:mod:`climdl.models.blocks`, shared with the emulator). The classic
Ronneberger et al. (2015) layout: at each level a block then 2x2 max-pooling down, a stride-2
transposed convolution up, the encoder's features concatenated as skips, and a 1x1 head giving
per-class logits. It is a plain ``nn.Module``; :mod:`climdl.tasks.segmentation` trains it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from climdl.errors import ConfigError
from climdl.models.blocks import BlockKind, check_input, make_block


class CloudUNet(nn.Module):
    """``[B, in_channels, H, W]`` -> per-class logits ``[B, num_classes, H, W]``.

    Args:
        in_channels: spectral bands in the input.
        num_classes: classes of the label set (e.g. clear, cloud, thin cloud, shadow, snow).
        depth: pooling levels; ``H`` and ``W`` must be multiples of ``2**depth``
            (:attr:`size_multiple`).
        base_filters: filters of the first level, doubled at each level down ...
        max_filters: ... up to this cap.
        block: ``plain``, ``residual`` or ``inception`` conv blocks.
        dropout: channel dropout (``Dropout2d``) at the bottleneck; 0 disables it.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        depth: int = 4,
        base_filters: int = 32,
        max_filters: int = 256,
        block: BlockKind = "plain",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        for name, value in {
            "in_channels": in_channels,
            "base_filters": base_filters,
            "max_filters": max_filters,
        }.items():
            if value < 1:
                raise ConfigError(f"CloudUNet: {name} must be a positive integer, got {value}.")
        if num_classes < 2:
            raise ConfigError(f"CloudUNet needs at least 2 classes, got num_classes={num_classes}.")
        if not 1 <= depth <= 8:
            raise ConfigError(f"CloudUNet: depth must be between 1 and 8, got {depth}.")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"CloudUNet: dropout must be in [0, 1), got {dropout}.")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.depth = depth
        widths = [min(base_filters * 2**i, max_filters) for i in range(depth + 1)]
        self.widths = widths
        self.encoder = nn.ModuleList()
        cin = in_channels
        for w in widths[:-1]:
            self.encoder.append(make_block(block, cin, w))
            cin = w
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = make_block(block, cin, widths[-1])
        self.dropout: nn.Module = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.up = nn.ModuleList()
        self.decoder = nn.ModuleList()
        cin = widths[-1]
        for w in reversed(widths[:-1]):
            self.up.append(nn.ConvTranspose2d(cin, w, 2, stride=2))
            self.decoder.append(make_block(block, 2 * w, w))
            cin = w
        self.head = nn.Conv2d(cin, num_classes, 1)

    @property
    def size_multiple(self) -> int:
        """Input heights and widths must be multiples of this (``2**depth``)."""
        return int(2**self.depth)

    def forward(self, x: Tensor) -> Tensor:
        """Per-class logits (no softmax) of the same spatial size as ``x``."""
        check_input(x, self.in_channels, None, "CloudUNet")
        m = self.size_multiple
        if x.shape[2] % m or x.shape[3] % m:
            raise ConfigError(
                f"CloudUNet with depth {self.depth} needs inputs whose height and width are "
                f"multiples of {m}, got {x.shape[2]} x {x.shape[3]}; pad or crop the input."
            )
        skips: list[Tensor] = []
        h = x
        for block in self.encoder:
            h = block(h)
            skips.append(h)
            h = self.pool(h)
        h = self.dropout(self.bottleneck(h))
        for up, block, skip in zip(self.up, self.decoder, reversed(skips), strict=True):
            h = block(torch.cat([up(h), skip], dim=1))
        out: Tensor = self.head(h)
        return out
