"""The cloud segmenter's extra inputs: which ``features`` exist and the modules that make them.

``features`` of :class:`~climdl.tasks.segmentation.SegmentationTask` is ``bands`` followed by
optional ``+indices`` (pixel-wise normalised differences,
:class:`~climdl.models.spectral_indices.SpectralIndices`) and ``+scene`` (the pixel's
brightness temperature relative to its whole scene's percentiles,
:class:`~climdl.models.scene_context.SceneContextChannels`, from the context of
:mod:`climdl.clouds.context`). :func:`build_inputs` makes the modules a checkpoint's
``features`` asks for; :func:`whole_scene_context` computes the context of inputs that are
whole scenes, with the same code as training and ``climdl segment``.
"""

from __future__ import annotations

import logging
from typing import Literal

import torch
from torch import Tensor

from climdl.clouds.context import PERCENTILES, scene_context
from climdl.clouds.scene import Band
from climdl.clouds.spec import SegmenterSpec
from climdl.errors import ConfigError
from climdl.models.scene_context import SceneContextChannels
from climdl.models.spectral_indices import SpectralIndices

__all__ = ["FEATURES", "Features", "build_inputs", "whole_scene_context"]

log = logging.getLogger(__name__)

Features = Literal["bands", "bands+indices", "bands+scene", "bands+indices+scene"]
FEATURES: tuple[str, ...] = ("bands", "bands+indices", "bands+scene", "bands+indices+scene")
"""The accepted values of ``features`` (old checkpoints hold ``bands`` or ``bands+indices``)."""


def build_inputs(
    features: str, spec: SegmenterSpec, warn: bool = True
) -> tuple[SpectralIndices | None, SceneContextChannels | None]:
    """The index and scene-context modules that ``features`` asks for (None where not).

    ``+scene`` on bands without a thermal band (Sentinel-2, 38-Cloud, CloudSEN12) adds
    nothing, with a warning: the sample config then trains on such data as ``bands+indices``,
    and its checkpoints need no thermal band (the spec's bands decide, the same at training
    and when a checkpoint is loaded). ``warn``: say so (at training, not at every load).

    Raises:
        ConfigError: unknown ``features``.
    """
    if features not in FEATURES:
        raise ConfigError(f"unknown features {features!r}; choose {', '.join(FEATURES)}.")
    parts = features.split("+")
    indices = SpectralIndices(spec.bands) if "indices" in parts else None
    context = None
    if "scene" in parts:
        thermal = [i for i, u in enumerate(spec.band_units) if u == "K"]
        if thermal:
            t = thermal[0]
            context = SceneContextChannels(t, len(PERCENTILES), float(spec.std[t]))
        elif warn:
            log.warning(
                "features %s: the bands (%s) have no thermal band (units K), so the scene's "
                "thermal context is left out.",
                features,
                ", ".join(spec.bands),
            )
    return indices, context


def whole_scene_context(x: Tensor, spec: SegmenterSpec) -> Tensor:
    """``[B, P]``: the thermal context of each sample of ``x`` ``[B, C, H, W]`` (the spec's
    bands) taken as a whole scene (:func:`climdl.clouds.context.scene_context`, on the host),
    for callers that hold whole scenes; crops and tiles must carry their scene's instead."""
    bands = [Band(b, 0.0, u) for b, u in zip(spec.bands, spec.band_units, strict=True)]
    host = x.detach().float().cpu().numpy()
    rows = [torch.from_numpy(scene_context(sample, bands)) for sample in host]
    return torch.stack(rows).to(x.device)
