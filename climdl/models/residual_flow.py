"""The velocity field of conditional flow matching on the fine grid, and its ODE sampler.

Stage 2 of climdl's generative emulator (:mod:`climdl.tasks.generative`) learns the residual
between the truth and the frozen stage-1 UNet mean (CorrDiff-style) with rectified flow: a
network ``v(x_t, t | conditioning)`` transports standard normal noise (``t = 0``) to residual
fields (``t = 1``). :class:`ResidualFlowNet` is that network: a plain UNet on the fine grid
built from climdl's conv blocks, whose levels are modulated (FiLM) by an embedding of the flow
time and of the stage-1 1-D inputs. :func:`heun_sample` integrates the ODE deterministically,
so a member is a pure function of its initial noise.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from climdl.errors import ConfigError
from climdl.models.blocks import BlockKind, make_block

__all__ = ["ResidualFlowNet", "heun_sample", "time_features"]


def time_features(t: Tensor, n: int) -> Tensor:
    """Sinusoidal features of the flow time ``t`` ``[B]`` in [0, 1]: ``[B, n]`` (``n`` even).

    Frequencies are geometric from 1 to 1000 (as in transformers' positions and diffusion nets),
    so the network tells apart times that differ by less than a sampler step.
    """
    half = n // 2
    freqs = torch.exp(-math.log(1000.0) * torch.arange(half, device=t.device) / max(half - 1, 1))
    angles = (t.float()[:, None] * 1000.0) * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class _FiLM(nn.Module):
    """Per-channel scale and shift from the embedding: ``h * (1 + scale) + shift``; starts as
    the identity (zero-initialised projection)."""

    def __init__(self, embed: int, channels: int) -> None:
        super().__init__()
        self.proj = nn.Linear(embed, 2 * channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        scale, shift = self.proj(emb).to(h.dtype)[:, :, None, None].chunk(2, dim=1)
        return h * (1 + scale) + shift


class ResidualFlowNet(nn.Module):
    """UNet velocity field ``v(x_t, cond, t, aux)`` on the fine grid: ``[B, V, H, W]`` out.

    The state ``x_t`` and the fine conditioning channels (stage-1 mean, orography, interpolated
    predictors) are concatenated and go down ``depth`` levels (2x2 max-pooling) and back up
    (bilinear upsampling + skip connections); after every block, the embedding of the flow time
    (sinusoidal features) and of the 1-D inputs scales and shifts the channels (FiLM). The
    output convolution is zero-initialised, so the untrained field is 0 (the standard start
    for flow and diffusion networks: samples begin as the noise itself).

    Args:
        channels: state channels ``V`` (the targets).
        cond_channels: fine conditioning channels ``Cf``.
        n_aux: 1-D inputs per sample (0: none).
        depth: down-sampling levels; the grid must be divisible by ``2 ** depth``.
        base_filters: filters of the full-resolution level (doubled per level).
        max_filters: cap on the filters of a level.
        block: conv blocks, ``plain`` or ``residual`` (:func:`~climdl.models.blocks.make_block`).
        time_dim: sinusoidal features of the flow time.
        embed_dim: width of the time + 1-D input embedding (default ``4 * base_filters``).
        size: the fine grid ``(H, W)`` when known, checked against ``depth`` at once.

    Raises:
        ConfigError: a non-positive size or a grid not divisible by ``2 ** depth``.
    """

    def __init__(
        self,
        channels: int,
        cond_channels: int,
        n_aux: int = 0,
        *,
        depth: int = 3,
        base_filters: int = 32,
        max_filters: int = 256,
        block: BlockKind = "plain",
        time_dim: int = 32,
        embed_dim: int | None = None,
        size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        for name, value in (
            ("channels", channels),
            ("depth", depth),
            ("base_filters", base_filters),
            ("max_filters", max_filters),
        ):
            if value < 1:
                raise ConfigError(f"ResidualFlowNet: {name} must be at least 1, got {value}.")
        if cond_channels < 0 or n_aux < 0 or time_dim < 2:
            raise ConfigError("ResidualFlowNet: cond_channels, n_aux >= 0 and time_dim >= 2.")
        self.channels, self.cond_channels, self.n_aux = channels, cond_channels, n_aux
        self.depth, self.time_dim = depth, time_dim - time_dim % 2
        if size is not None:
            self.check_size(size)
        widths = [min(base_filters * 2**i, max_filters) for i in range(depth + 1)]
        embed = embed_dim or 4 * base_filters
        self.embed = nn.Sequential(
            nn.Linear(self.time_dim + n_aux, embed),
            nn.SiLU(),
            nn.Linear(embed, embed),
            nn.SiLU(),
        )
        self.down = nn.ModuleList()
        self.down_film = nn.ModuleList()
        cin = channels + cond_channels
        for w in widths:
            self.down.append(make_block(block, cin, w))
            self.down_film.append(_FiLM(embed, w))
            cin = w
        self.up = nn.ModuleList()
        self.up_film = nn.ModuleList()
        for i in range(depth - 1, -1, -1):
            self.up.append(make_block(block, widths[i + 1] + widths[i], widths[i]))
            self.up_film.append(_FiLM(embed, widths[i]))
        self.out = nn.Conv2d(widths[0], channels, 1, bias=False)
        nn.init.zeros_(self.out.weight)

    def check_size(self, size: tuple[int, int]) -> None:
        """Raise :class:`ConfigError` unless both sides of ``size`` divide by ``2 ** depth``."""
        k = 2**self.depth
        if size[0] < k or size[1] < k or size[0] % k or size[1] % k:
            raise ConfigError(
                f"the residual flow network's grid {size[0]} x {size[1]} must be divisible by "
                f"2**depth = {k}; lower depth or crop to a multiple of {k}."
            )

    def forward(self, x_t: Tensor, cond: Tensor, t: Tensor, aux: Tensor | None = None) -> Tensor:
        """The velocity ``[B, V, H, W]``.

        Args:
            x_t: the state ``[B, V, H, W]``.
            cond: fine conditioning ``[B, Cf, H, W]``.
            t: flow times ``[B]`` in [0, 1].
            aux: 1-D inputs ``[B, n_aux]`` (None or empty when ``n_aux == 0``).

        Returns:
            ``dx/dt`` at ``(x_t, t)``, same shape as ``x_t``.
        """
        if x_t.ndim != 4 or x_t.shape[1] != self.channels or cond.shape[1] != self.cond_channels:
            raise ConfigError(
                f"ResidualFlowNet expects [B, {self.channels}, H, W] states and "
                f"[B, {self.cond_channels}, H, W] conditioning, got {tuple(x_t.shape)} and "
                f"{tuple(cond.shape)}."
            )
        self.check_size((x_t.shape[2], x_t.shape[3]))
        feats = [time_features(t, self.time_dim)]
        if self.n_aux:
            if aux is None or aux.shape != (x_t.shape[0], self.n_aux):
                got = None if aux is None else tuple(aux.shape)
                raise ConfigError(
                    f"ResidualFlowNet expects 1-D inputs [{x_t.shape[0]}, {self.n_aux}], got {got}."
                )
            feats.append(aux.float())
        emb = self.embed(torch.cat(feats, dim=1))
        h = torch.cat([x_t, cond.to(x_t.dtype)], dim=1)
        skips: list[Tensor] = []
        for i, (blk, film) in enumerate(zip(self.down, self.down_film, strict=True)):
            if i > 0:
                h = F.max_pool2d(h, 2)
            h = film(blk(h), emb)
            skips.append(h)
        h = skips.pop()
        for blk, film in zip(self.up, self.up_film, strict=True):
            skip = skips.pop()
            h = F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            h = film(blk(torch.cat([h, skip], dim=1)), emb)
        out: Tensor = self.out(h)
        return out


def heun_sample(velocity: Callable[[Tensor, Tensor], Tensor], z: Tensor, steps: int) -> Tensor:
    """Integrate ``dx/dt = velocity(x, t)`` from ``t = 0`` (``x = z``, noise) to ``t = 1`` (data).

    Heun's second-order method on ``steps`` equal steps, the last one Euler (a choice that saves
    one evaluation, as EDM's sampler ends; Karras et al. 2022): ``2 * steps - 1`` evaluations.
    The state stays float32 whatever the velocity's dtype (autocast), and the result is a
    deterministic function of ``z``.

    Args:
        velocity: ``(x [N, ...], t [N]) -> dx/dt`` (same shape as ``x``).
        z: the initial noise ``[N, ...]``.
        steps: the number of steps, at least 1.

    Returns:
        ``x`` at ``t = 1``, float32, shaped like ``z``.

    Raises:
        ConfigError: ``steps < 1``.
    """
    if steps < 1:
        raise ConfigError(f"the sampler needs at least 1 step, got {steps}.")
    x = z.float()
    n = x.shape[0]
    h = 1.0 / steps
    for i in range(steps):
        t0 = torch.full((n,), i * h, device=x.device)
        d0 = velocity(x, t0).float()
        x_euler = x + h * d0
        if i == steps - 1:
            x = x_euler
        else:
            d1 = velocity(x_euler, t0 + h).float()
            x = x + 0.5 * h * (d0 + d1)
    return x
