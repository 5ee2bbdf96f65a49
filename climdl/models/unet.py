"""The asymmetric UNet RCM emulator of Doury et al. (Clim Dyn 2023; 2024 for precipitation).

Coarse GCM-scale predictors (e.g. 16 x 16) go down an encoder to a 1 x 1 bottleneck, where the
1-D inputs (daily spatial means and stds, forcings, day-of-year) join; the decoder goes up further
than it came down (to e.g. 128 x 128), with skip connections only at the resolutions the encoder
saw. Each encoder and decoder level is its own module so that FSDP2 ``fully_shard`` can wrap it
and pipeline parallelism can cut between levels (:meth:`DouryUNet.stages`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from climdl.errors import ConfigError
from climdl.models.blocks import BlockKind, check_input, check_scalars, is_power_of_two, make_block


class EncoderStage(nn.Module):
    """One encoder level: a conv block, then 2x2 max-pooling.

    Returns ``(features, pooled)``: the block's output feeds the decoder's skip connection at this
    resolution, the pooled map feeds the next level.

    Args:
        in_channels: channels of the input.
        out_channels: channels of the block's output.
        block: the conv block, ``plain``, ``residual`` or ``inception``.
    """

    def __init__(self, in_channels: int, out_channels: int, block: BlockKind) -> None:
        super().__init__()
        self.block = make_block(block, in_channels, out_channels)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``[B, cin, H, W]`` -> ``([B, cout, H, W], [B, cout, H/2, W/2])``."""
        h = self.block(x)
        return h, self.pool(h)


class DecoderStage(nn.Module):
    """One decoder level: a stride-2 3x3 transposed conv with ReLU (doubling the spatial size),
    concatenation with the encoder's features when ``skip_channels > 0``, then a conv block.

    Args:
        in_channels: channels of the input (from the level below).
        skip_channels: channels of the encoder features joined at this level (0: no skip).
        out_channels: channels of the output.
        block: the conv block, ``plain``, ``residual`` or ``inception``.
    """

    def __init__(
        self, in_channels: int, skip_channels: int, out_channels: int, block: BlockKind
    ) -> None:
        super().__init__()
        self.skip_channels = skip_channels
        # padding=1 + output_padding=1 gives exactly 2H x 2W from H x W
        self.up = nn.ConvTranspose2d(
            in_channels, out_channels, 3, stride=2, padding=1, output_padding=1
        )
        self.act = nn.ReLU(inplace=True)
        self.block = make_block(block, out_channels + skip_channels, out_channels)

    def forward(self, x: Tensor, skip: Tensor | None = None) -> Tensor:
        """``[B, cin, H, W]`` (+ skip ``[B, cskip, 2H, 2W]``) -> ``[B, cout, 2H, 2W]``."""
        h = self.act(self.up(x))
        if skip is not None:
            h = torch.cat([h, skip], dim=1)
        return self.block(h)


class DouryUNet(nn.Module):
    """Doury et al. 2023 asymmetric UNet: ``[B, C, H, W]`` (+ ``[B, n_scalars]``) to
    ``[B, out_channels, out_H, out_W]``.

    Architecture:

    * entry conv with ``base_filters`` filters + ReLU that trims the input to ``S x S``, ``S`` the
      largest power of two <= ``min(H, W)``. The trim is a *valid* convolution: kernel
      ``(H - S + 3, W - S + 3)`` with padding 1, so every input cell is used (no crop) and the
      entry conv is an ordinary 3x3 "same" conv when the input is already ``S x S``
      (20 x 16 -> kernel 7 x 3 -> 16 x 16);
    * ``log2(S)`` encoder levels (:class:`EncoderStage`) with ``min(base_filters * 2**(i+1),
      max_filters)`` filters (64, 128, 256, 512, 512, ... by default) down to ``1 x 1``;
    * the 1-D inputs pass through dense layers of widths ``scalar_mlp`` with no activation (as in
      Doury et al.) and are concatenated to the ``1 x 1`` bottleneck;
    * ``log2(out)`` decoder levels (:class:`DecoderStage`): the first ``log2(S)`` mirror the
      encoder's filters and take its features as skips, the remaining ones (beyond the input
      resolution) have ``extra_filters`` filters and no skip;
    * a final 1x1 conv to ``out_channels`` (e.g. 2 for joint tasmax + pr); no output activation.

    16 x 16 -> 64 x 64 has 4 levels down and 6 up; 16 x 16 -> 128 x 128 has 4 down and 7 up.
    The output size must be square, a power of two and at least ``S``.

    Args:
        in_channels: predictor channels ``C``.
        out_channels: output channels (one per target and output feature).
        in_size: the coarse input's (H, W).
        out_size: the output's (out_H, out_W): square, a power of two, at least ``S``.
        n_scalars: number of 1-D inputs joined at the bottleneck (0: none).
        base_filters: filters of the entry convolution.
        max_filters: cap on the encoder's filters.
        block: the conv block, ``plain``, ``residual`` or ``inception``.
        scalar_mlp: widths of the dense layers the 1-D inputs pass through.
        extra_filters: filters of the decoder levels beyond the input resolution.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int = 1,
        in_size: tuple[int, int] = (16, 16),
        out_size: tuple[int, int] = (128, 128),
        n_scalars: int = 0,
        base_filters: int = 32,
        max_filters: int = 512,
        block: BlockKind = "plain",
        scalar_mlp: tuple[int, ...] = (64, 128, 256, 512),
        extra_filters: int = 64,
    ) -> None:
        super().__init__()
        for name, value in {
            "in_channels": in_channels,
            "out_channels": out_channels,
            "base_filters": base_filters,
            "max_filters": max_filters,
            "extra_filters": extra_filters,
        }.items():
            if value < 1:
                raise ConfigError(f"DouryUNet: {name} must be a positive integer, got {value}.")
        if n_scalars < 0:
            raise ConfigError(f"DouryUNet: n_scalars must be 0 or more, got {n_scalars}.")
        if any(w < 1 for w in scalar_mlp):
            raise ConfigError(f"DouryUNet: scalar_mlp widths must be positive, got {scalar_mlp}.")
        in_h, in_w = (int(v) for v in in_size)
        out_h, out_w = (int(v) for v in out_size)
        if min(in_h, in_w) < 2:
            raise ConfigError(
                f"DouryUNet needs an input of at least 2 x 2 cells, got in_size={in_h} x {in_w}."
            )
        side = 1 << (min(in_h, in_w).bit_length() - 1)
        if out_h != out_w:
            raise ConfigError(
                f"DouryUNet makes square outputs only, got out_size={out_h} x {out_w}; "
                "pad or crop the target domain to a square."
            )
        if not is_power_of_two(out_h) or out_h < side:
            raise ConfigError(
                f"DouryUNet's out_size must be a power of two of at least {side} (the input trimmed "
                f"to {side} x {side}), got {out_h}; use e.g. {max(side, 64)} or {max(side, 128)}."
            )

        self.in_channels = in_channels
        self.out_channels = out_channels
        self.in_size = (in_h, in_w)
        self.out_size = (out_h, out_w)
        self.n_scalars = n_scalars
        self.trimmed_size = side
        n_down = side.bit_length() - 1
        n_up = out_h.bit_length() - 1

        self.entry = nn.Sequential(
            nn.Conv2d(in_channels, base_filters, (in_h - side + 3, in_w - side + 3), padding=1),
            nn.ReLU(inplace=True),
        )
        enc_filters = [min(base_filters * 2 ** (i + 1), max_filters) for i in range(n_down)]
        self.encoder = nn.ModuleList()
        cin = base_filters
        for cout in enc_filters:
            self.encoder.append(EncoderStage(cin, cout, block))
            cin = cout

        self.scalar_mlp: nn.Sequential | None = None
        if n_scalars > 0:
            layers: list[nn.Module] = []
            width = n_scalars
            for w in scalar_mlp:
                layers.append(nn.Linear(width, w))
                width = w
            self.scalar_mlp = nn.Sequential(*layers)  # empty: the raw scalars join directly
            cin += width

        self.decoder = nn.ModuleList()
        for level in range(n_up):
            if level < n_down:
                cout = enc_filters[n_down - 1 - level]
                self.decoder.append(DecoderStage(cin, cout, cout, block))
            else:
                cout = extra_filters
                self.decoder.append(DecoderStage(cin, 0, cout, block))
            cin = cout
        self.head = nn.Conv2d(cin, out_channels, 1)
        self.scatter: nn.Module = nn.Identity()
        """Applied between :meth:`forward_coarse` and :meth:`forward_fine`; domain parallelism
        (:mod:`climdl.parallel.domain`) puts a module here that keeps the rank's rows."""

    @property
    def split_level(self) -> int:
        """Index of the first decoder level beyond the input resolution (it has no skip): the
        levels from here on and the head work on any row strip of their input."""
        return len(self.encoder)

    @property
    def fine_levels(self) -> int:
        """Decoder levels beyond the input resolution; each doubles the rows of a strip."""
        return len(self.decoder) - self.split_level

    def stages(self) -> list[nn.Module]:
        """The network's parts in forward order: entry, encoder levels, scalar MLP (if any),
        decoder levels, head. Together they hold every parameter; the unit for FSDP2 wrapping
        and for cutting pipeline stages."""
        parts: list[nn.Module] = [self.entry, *self.encoder]
        if self.scalar_mlp is not None:
            parts.append(self.scalar_mlp)
        return [*parts, *self.decoder, self.head]

    def forward(self, x: Tensor, scalars: Tensor | None = None) -> Tensor:
        """``x``: ``[B, in_channels, *in_size]``; ``scalars``: ``[B, n_scalars]`` or None when
        ``n_scalars == 0``. Returns ``[B, out_channels, *out_size]``."""
        return self.forward_fine(self.scatter(self.forward_coarse(x, scalars)))

    def forward_coarse(self, x: Tensor, scalars: Tensor | None = None) -> Tensor:
        """Entry, encoder, 1-D inputs and the decoder levels that take skips: the part that sees
        the whole domain (down to the 1 x 1 bottleneck). Returns ``[B, C, S, S]`` at the trimmed
        input size ``S``, the input of :meth:`forward_fine`."""
        check_input(x, self.in_channels, self.in_size, "DouryUNet")
        check_scalars(scalars, self.n_scalars, x.shape[0], "DouryUNet")
        h = self.entry(x)
        skips: list[Tensor] = []
        for stage in self.encoder:
            skip, h = stage(h)
            skips.append(skip)
        if self.scalar_mlp is not None and scalars is not None:
            s = self.scalar_mlp(scalars.to(h.dtype))
            h = torch.cat([h, s[:, :, None, None]], dim=1)
        n_skips = len(skips)
        for level, stage in enumerate(self.decoder[: self.split_level]):
            h = stage(h, skips[n_skips - 1 - level])
        return h

    def forward_fine(self, h: Tensor) -> Tensor:
        """The decoder levels beyond the input resolution, then the head: ``[B, C, r, w]`` ->
        ``[B, out_channels, r * 2**fine_levels, w * 2**fine_levels]``. Purely convolutional, so
        it runs on any row strip of :meth:`forward_coarse`'s output (rows near a strip's edges
        need a halo: see :mod:`climdl.parallel.domain` and :mod:`climdl.inference.strips`)."""
        for stage in self.decoder[self.split_level :]:
            h = stage(h)
        out: Tensor = self.head(h)
        return out
