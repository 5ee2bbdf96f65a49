"""Physically scaled spectral indices of a multispectral pixel, as extra inputs of the cloud CNN.

The cloud tests of Fmask (Zhu & Woodcock 2012) read the *shape* of a pixel's spectrum, not its
brightness: snow is bright in the green and dark at 1.6 um (NDSI), vegetation bright in the NIR
and dark in the red (NDVI), water and ice clouds absorb in the SWIR where a bright desert does
not, and thin cirrus brightens the blue more than the red. A CNN fed with bands standardised one
by one has to build these ratios out of sums of ReLUs; normalised differences give them to it
directly, bounded in ``[-1, 1]`` by construction (no statistics to learn or to store) and
computed pixel by pixel, so tiled inference and exact tiling stay valid (the receptive radius is
the network's alone).

:class:`SpectralIndices` finds its bands by name (Landsat, Sentinel-2 and 38-Cloud spellings)
and computes every index whose two bands a sensor has; :func:`index_names` says which.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from climdl.clouds.scene import find_bands

__all__ = ["INDICES", "SpectralIndices", "index_names"]

INDICES: tuple[tuple[str, str, str], ...] = (
    ("ndsi", "green", "swir16"),  # snow (+) vs cloud and land
    ("ndvi", "nir", "red"),  # vegetation (+), water (-); clouds near 0
    ("ndmi", "nir", "swir16"),  # SWIR absorption of water and ice clouds vs bright soils
    ("swir_ratio", "swir16", "swir22"),  # ice vs water clouds, minerals
    ("blue_red", "blue", "red"),  # Rayleigh-like haze and cirrus brighten the blue
    ("blue_swir", "blue", "swir22"),  # bright-visible, dark-SWIR: snow and ice clouds
)
"""``(name, a, b)``: the index ``(a - b) / (|a| + |b| + eps)`` of bands ``a`` and ``b``."""

_EPS = 0.02
"""Reflectance added to the denominators: noise on dark pixels (water, shadow) stays small."""


def index_names(bands: Sequence[str]) -> list[str]:
    """The indices :class:`SpectralIndices` computes for these bands, in order."""
    have = find_bands(bands)
    return [name for name, a, b in INDICES if a in have and b in have]


class SpectralIndices(nn.Module):
    """``[B, C, H, W]`` reflectances -> ``[B, F, H, W]`` normalised differences in ``[-1, 1]``.

    Args:
        bands: the input's band names, in channel order (others, e.g. thermal, are ignored).
    """

    pairs: Tensor

    def __init__(self, bands: Sequence[str]) -> None:
        super().__init__()
        have = find_bands(bands)
        self.names = index_names(bands)
        pairs = [(have[a], have[b]) for name, a, b in INDICES if name in self.names]
        self.register_buffer(
            "pairs", torch.tensor(pairs, dtype=torch.long).view(-1, 2), persistent=False
        )

    @property
    def num_features(self) -> int:
        """How many indices :meth:`forward` returns."""
        return len(self.names)

    def forward(self, x: Tensor) -> Tensor:
        """The indices of raw reflectances ``x`` (NaN stays NaN: the caller masks no data)."""
        a = x.index_select(1, self.pairs[:, 0])
        b = x.index_select(1, self.pairs[:, 1])
        out: Tensor = ((a - b) / (a.abs() + b.abs() + _EPS)).clamp(-1.0, 1.0)
        return out
