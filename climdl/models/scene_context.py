"""Per-pixel inputs from a scene's thermal context: how much colder each pixel is than its scene.

Fmask's cloud probability compares a pixel's brightness temperature with percentiles of its own
scene (:mod:`climdl.clouds.context` computes them over the whole scene, once, at training and
in ``climdl segment``). :class:`SceneContextChannels` turns those per-scene numbers into
per-pixel channels ``(BT - p) / s`` for each percentile ``p`` (``s``: the thermal band's
training standard deviation, the scale of its standardised channel), so the network reads
"colder than the scene's warm end" directly instead of guessing it from a 64-pixel crop. The
channels are pixel-wise given the context, so tiled and exact inference stay valid.
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["SceneContextChannels"]


class SceneContextChannels(nn.Module):
    """``[B, C, H, W]`` raw bands and ``[B, P]`` context -> ``[B, P, H, W]`` scaled differences.

    Args:
        thermal: index of the thermal band (brightness temperature, K) among the bands.
        n_context: how many percentiles the context holds.
        scale: kelvin per unit of the channels (the thermal band's training std).
    """

    def __init__(self, thermal: int, n_context: int, scale: float) -> None:
        super().__init__()
        self.thermal = int(thermal)
        self.n_context = int(n_context)
        self.scale = float(scale)

    @property
    def num_features(self) -> int:
        """How many channels :meth:`forward` returns."""
        return self.n_context

    def forward(self, x: Tensor, ctx: Tensor) -> Tensor:
        """``(x[:, thermal] - ctx[:, p]) / scale`` for every percentile ``p`` (NaN stays NaN:
        the caller masks no data)."""
        bt = x[:, self.thermal : self.thermal + 1].float()
        out: Tensor = (bt - ctx.to(bt)[:, :, None, None]) / self.scale
        return out
