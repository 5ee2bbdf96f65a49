"""Plain ``nn.Module`` networks: the Doury UNet emulator, DeepESD, the interpolation baseline,
and the conv blocks they share. No Lightning here: tasks in :mod:`climdl.tasks` pick a network."""

from __future__ import annotations

from climdl.models.blocks import BlockKind, ConvBlock, ResidualConvBlock, make_block
from climdl.models.deepesd import DeepESD
from climdl.models.interpolation import InterpolationBaseline, fit_linear, sampling_grid
from climdl.models.unet import DecoderStage, DouryUNet, EncoderStage

__all__ = [
    "BlockKind",
    "ConvBlock",
    "DecoderStage",
    "DeepESD",
    "DouryUNet",
    "EncoderStage",
    "InterpolationBaseline",
    "ResidualConvBlock",
    "fit_linear",
    "make_block",
    "sampling_grid",
]
