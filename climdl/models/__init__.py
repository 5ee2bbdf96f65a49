"""Plain ``nn.Module`` networks: the Doury UNet emulator, DeepESD, the interpolation baseline,
the cloud-segmentation UNet, the flow-matching residual network (:mod:`~climdl.models.residual_flow`)
and the conv blocks they share; and the non-learned baselines
(:mod:`~climdl.models.tasmax_baseline`, the Fmask-like :mod:`~climdl.models.threshold` cloud
test). No Lightning here: tasks in :mod:`climdl.tasks` pick a network."""

from __future__ import annotations

from climdl.models.blocks import (
    BlockKind,
    ConvBlock,
    InceptionConvBlock,
    ResidualConvBlock,
    make_block,
)
from climdl.models.cloud_unet import CloudUNet
from climdl.models.deepesd import DeepESD
from climdl.models.interpolation import InterpolationBaseline, fit_linear, sampling_grid
from climdl.models.residual_flow import ResidualFlowNet, heun_sample
from climdl.models.unet import DecoderStage, DouryUNet, EncoderStage

__all__ = [
    "BlockKind",
    "CloudUNet",
    "ConvBlock",
    "DecoderStage",
    "DeepESD",
    "DouryUNet",
    "EncoderStage",
    "InceptionConvBlock",
    "InterpolationBaseline",
    "ResidualConvBlock",
    "ResidualFlowNet",
    "fit_linear",
    "heun_sample",
    "make_block",
    "sampling_grid",
]
