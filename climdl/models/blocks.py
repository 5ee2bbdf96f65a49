"""Convolution blocks and input checks shared by climdl's networks.

The emulator UNet and the cloud-segmentation UNet use the same two-convolution block, so it lives
here, generic in its channel counts. The input checks turn shape mistakes into a
:class:`~climdl.errors.ConfigError` with one clear sentence instead of a deep torch traceback;
they compare shapes only, so they are static under ``torch.compile``.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor, nn

from climdl.errors import ConfigError

BlockKind = Literal["plain", "residual", "inception"]
"""Which convolution block a network uses: ``"plain"`` (:class:`ConvBlock`), ``"residual"``
(:class:`ResidualConvBlock`) or ``"inception"`` (:class:`InceptionConvBlock`)."""


class ConvBlock(nn.Module):
    """Two 3x3 convolutions, each followed by BatchNorm and ReLU; spatial size is kept.

    This is the classic UNet block (Ronneberger et al. 2015) and the one of Doury et al. 2023.
    The convolutions have no bias because the BatchNorm that follows has its own shift.

    Args:
        in_channels: channels of the input.
        out_channels: channels of both convolutions' outputs.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        _check_positive(in_channels=in_channels, out_channels=out_channels)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        """Map ``[B, in_channels, H, W]`` to ``[B, out_channels, H, W]``."""
        x = self.act(self.bn1(self.conv1(x)))
        return self.act(self.bn2(self.conv2(x)))


class ResidualConvBlock(nn.Module):
    """:class:`ConvBlock` plus a residual path: ``relu(bn(conv(relu(bn(conv(x))))) + proj(x))``.

    ``proj`` is a 1x1 convolution when the channel count changes and the identity otherwise (as in
    ResNet); the shortcut eases optimisation of deeper networks.

    Args:
        in_channels: channels of the input.
        out_channels: channels of the output.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        _check_positive(in_channels=in_channels, out_channels=out_channels)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.act = nn.ReLU(inplace=True)
        self.proj: nn.Module = (
            nn.Identity()
            if in_channels == out_channels
            else nn.Conv2d(in_channels, out_channels, 1, bias=False)
        )

    def forward(self, x: Tensor) -> Tensor:
        """Map ``[B, in_channels, H, W]`` to ``[B, out_channels, H, W]``."""
        h = self.act(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return self.act(h + self.proj(x))


class InceptionConvBlock(nn.Module):
    """Inception block (Szegedy et al. 2015, with the 5x5 branch factorised into two 3x3 as in
    Inception-v2): parallel 1x1, 3x3, 5x5-equivalent and pooled branches, concatenated.

    Each branch is conv + BatchNorm + ReLU and gets about a quarter of ``out_channels`` (the first
    branch takes the remainder), so the block sees several receptive fields at once at the cost of
    a plain block; spatial size is kept. Useful where objects come in many sizes (clouds).

    Args:
        in_channels: channels of the input.
        out_channels: channels of the output, split among the four branches.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        _check_positive(in_channels=in_channels, out_channels=out_channels)
        if out_channels < 4:
            raise ConfigError(f"an inception block needs out_channels >= 4, got {out_channels}.")
        self.in_channels = in_channels
        self.out_channels = out_channels
        quarter = out_channels // 4
        widths = (out_channels - 3 * quarter, quarter, quarter, quarter)

        def unit(cin: int, cout: int, k: int) -> list[nn.Module]:
            return [
                nn.Conv2d(cin, cout, k, padding=k // 2, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]

        self.branch1 = nn.Sequential(*unit(in_channels, widths[0], 1))
        self.branch3 = nn.Sequential(
            *unit(in_channels, widths[1], 1), *unit(widths[1], widths[1], 3)
        )
        self.branch5 = nn.Sequential(
            *unit(in_channels, widths[2], 1),
            *unit(widths[2], widths[2], 3),
            *unit(widths[2], widths[2], 3),
        )
        self.branch_pool = nn.Sequential(
            nn.MaxPool2d(3, stride=1, padding=1), *unit(in_channels, widths[3], 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        """Map ``[B, in_channels, H, W]`` to ``[B, out_channels, H, W]``."""
        return torch.cat(
            [self.branch1(x), self.branch3(x), self.branch5(x), self.branch_pool(x)], dim=1
        )


def make_block(kind: BlockKind, in_channels: int, out_channels: int) -> nn.Module:
    """Build the block named by ``kind``; a network picks its block type with one argument.

    Args:
        kind: ``plain``, ``residual`` or ``inception``.
        in_channels: channels of the input.
        out_channels: channels of the output.

    Returns:
        The block (spatial size kept).

    Raises:
        ConfigError: an unknown ``kind``.
    """
    match kind:
        case "plain":
            return ConvBlock(in_channels, out_channels)
        case "residual":
            return ResidualConvBlock(in_channels, out_channels)
        case "inception":
            return InceptionConvBlock(in_channels, out_channels)
        case _:
            raise ConfigError(
                f"Unknown block kind {kind!r}: use one of {', '.join(get_args(BlockKind))}."
            )


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value}.")


def check_input(x: Tensor, in_channels: int, in_size: tuple[int, int] | None, model: str) -> None:
    """Raise :class:`ConfigError` unless ``x`` is ``[B, in_channels, *in_size]``.

    ``in_size=None`` accepts any spatial size.
    """
    if x.ndim != 4:
        raise ConfigError(
            f"{model} expects a 4-D input [batch, channel, y, x], got shape {tuple(x.shape)}."
        )
    if x.shape[1] != in_channels:
        raise ConfigError(
            f"{model} was built for {in_channels} input channels but got {x.shape[1]} "
            f"(input shape {tuple(x.shape)}); check the predictor variables and levels."
        )
    if in_size is not None and (x.shape[2] != in_size[0] or x.shape[3] != in_size[1]):
        raise ConfigError(
            f"{model} was built for {in_size[0]} x {in_size[1]} inputs but got "
            f"{x.shape[2]} x {x.shape[3]}; check the predictor domain or the model's in_size."
        )


def check_scalars(scalars: Tensor | None, n_scalars: int, batch: int, model: str) -> None:
    """Raise :class:`ConfigError` unless ``scalars`` is ``[batch, n_scalars]``.

    With ``n_scalars == 0``, ``None`` or an empty ``[batch, 0]`` tensor is accepted.
    """
    if scalars is None:
        if n_scalars > 0:
            raise ConfigError(
                f"{model} was built with n_scalars={n_scalars} but no 1-D inputs (scalars) "
                "were given; pass them or build the model with n_scalars=0."
            )
        return
    if scalars.ndim != 2 or scalars.shape[0] != batch or scalars.shape[1] != n_scalars:
        raise ConfigError(
            f"{model} expects scalars of shape [{batch}, {n_scalars}] (batch, n_scalars) "
            f"but got {tuple(scalars.shape)}; check the 1-D inputs or the model's n_scalars."
        )


def is_power_of_two(n: int) -> bool:
    """True for 1, 2, 4, 8, ..."""
    return n > 0 and n & (n - 1) == 0
