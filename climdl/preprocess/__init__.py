"""Torch ops that run on whatever device the batch is on.

Normalisation with statistics held as module buffers (:class:`Normaliser`, streaming
:func:`compute_stats`), per-map spatial moments, and regridding weights applied as sparse
matmuls (:func:`conservative_weights`, :func:`bilinear_weights`, :func:`apply_regrid`) or
plain block averaging (:func:`coarsen_blocks`).
"""

from __future__ import annotations

from climdl.preprocess.grids import EARTH_RADIUS, LatLonGrid, ProjectedGrid, bounds_from_centres
from climdl.preprocess.normalise import (
    ChannelStats,
    Kind,
    Normaliser,
    StreamingStats,
    compute_stats,
    daily_spatial_moments,
    spatial_standardise,
)
from climdl.preprocess.regrid import (
    RegridWeights,
    bilinear_weights,
    coarsen_blocks,
    conservative_weights,
)
from climdl.preprocess.regrid import apply as apply_regrid

__all__ = [
    "EARTH_RADIUS",
    "ChannelStats",
    "Kind",
    "LatLonGrid",
    "Normaliser",
    "ProjectedGrid",
    "RegridWeights",
    "StreamingStats",
    "apply_regrid",
    "bilinear_weights",
    "bounds_from_centres",
    "coarsen_blocks",
    "compute_stats",
    "conservative_weights",
    "daily_spatial_moments",
    "spatial_standardise",
]
