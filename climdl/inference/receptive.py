"""Which input rows an output row depends on: the exact halo of tiled and strip-wise inference.

Cutting a convolutional network's input into blocks gives the whole-input result only if each
block carries a halo of the rows its kept outputs depend on; too small a halo is wrong near the
block's edges, too large a one wastes work. :func:`input_rows` propagates a closed row interval
``[lo, hi]`` of a module's output back to the interval of its input that can influence it,
layer by layer, from the modules' own settings (kernel, stride, padding, dilation), so the halo
follows the architecture instead of a hand-kept table:

* ``Conv2d``/``MaxPool2d``/``AvgPool2d`` (any kernel, stride, padding, dilation): output row
  ``y`` reads input rows ``y*s - p .. y*s - p + d*(k-1)``;
* ``ConvTranspose2d``: output row ``y`` receives input rows ``i`` with ``y = i*s - p + d*j``;
* pointwise modules (BatchNorm in eval mode, activations, dropout, identity): the same rows;
* ``Sequential`` and climdl's blocks (plain, residual, inception, a decoder level without skip):
  composed, and united over parallel branches.

Rows are counted in the module's own resolution, and the interval is conservative only where
branches join (the union of two intervals is their hull, which is what a 3x3 kernel needs
anyway). Only the row axis matters for the emulator's strips; the cloud UNet's tiles use the
same rule on both axes (the kernels are square). :func:`cloud_unet_rows` applies it to the whole
:class:`~climdl.models.cloud_unet.CloudUNet` with its skips.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from climdl.errors import ConfigError
from climdl.models.blocks import ConvBlock, InceptionConvBlock, ResidualConvBlock
from climdl.models.cloud_unet import CloudUNet
from climdl.models.unet import DecoderStage

__all__ = ["Rows", "chain_rows", "cloud_unet_radius", "cloud_unet_rows", "input_rows"]

Rows = tuple[int, int]
"""A closed interval ``(lo, hi)`` of row indices (``lo <= hi``), possibly outside the grid."""

_POINTWISE = (
    nn.BatchNorm2d,
    nn.ReLU,
    nn.LeakyReLU,
    nn.GELU,
    nn.SiLU,
    nn.Sigmoid,
    nn.Tanh,
    nn.Identity,
    nn.Dropout,
    nn.Dropout2d,
)


def _first(v: int | tuple[int, ...] | str) -> int:
    if isinstance(v, str):
        raise ConfigError(f"a padding of {v!r} has no fixed row offset; give it as a number.")
    return int(v if isinstance(v, int) else v[0])


def _window(lo: int, hi: int, kernel: int, stride: int, padding: int, dilation: int) -> Rows:
    """Input rows read by output rows ``lo..hi`` of a sliding window (convolution, pooling)."""
    return lo * stride - padding, hi * stride - padding + dilation * (kernel - 1)


def input_rows(module: nn.Module, lo: int, hi: int) -> Rows:
    """The input rows that output rows ``lo..hi`` (inclusive) of ``module`` depend on.

    Args:
        module: a layer or block (see the module docstring for those known).
        lo: first output row.
        hi: last output row.

    Returns:
        ``(first, last)`` input row, in the input's resolution; may lie outside the grid (rows
        there are the layers' zero padding, the same in a block as in the whole grid).

    Raises:
        ConfigError: a module whose spatial extent is unknown (so no halo can be promised).
    """
    match module:
        case nn.ConvTranspose2d():
            k, s = _first(module.kernel_size), _first(module.stride)
            p, d = _first(module.padding), _first(module.dilation)
            # y = i*s - p + d*j for j in 0..k-1  =>  i in [(y + p - d(k-1)) / s, (y + p) / s]
            return -((-(lo + p - d * (k - 1))) // s), (hi + p) // s
        case nn.Conv2d():
            k, s = _first(module.kernel_size), _first(module.stride)
            return _window(lo, hi, k, s, _first(module.padding), _first(module.dilation))
        case nn.MaxPool2d():
            k = _first(module.kernel_size)
            s = _first(module.stride) if module.stride is not None else k
            return _window(lo, hi, k, s, _first(module.padding), _first(module.dilation))
        case nn.AvgPool2d():
            k = _first(module.kernel_size)
            s = _first(module.stride) if module.stride is not None else k
            return _window(lo, hi, k, s, _first(module.padding), 1)
        case _ if isinstance(module, _POINTWISE):
            return lo, hi
        case nn.Sequential():
            return chain_rows(list(module), lo, hi)
        case ConvBlock():
            return chain_rows([module.conv1, module.conv2], lo, hi)
        case ResidualConvBlock():
            return _union(
                chain_rows([module.conv1, module.conv2], lo, hi), input_rows(module.proj, lo, hi)
            )
        case InceptionConvBlock():
            branches = (module.branch1, module.branch3, module.branch5, module.branch_pool)
            return _union(*(input_rows(b, lo, hi) for b in branches))
        case DecoderStage() if module.skip_channels == 0:
            return chain_rows([module.up, module.block], lo, hi)
        case _:
            raise ConfigError(
                f"the spatial extent of {type(module).__name__} is not known, so no exact halo "
                "can be computed for tiled inference; run on the whole grid."
            )


def chain_rows(modules: Iterable[nn.Module], lo: int, hi: int) -> Rows:
    """:func:`input_rows` of modules applied one after the other (``modules`` in forward
    order)."""
    for m in reversed(list(modules)):
        lo, hi = input_rows(m, lo, hi)
    return lo, hi


def _union(*intervals: Rows) -> Rows:
    return min(i[0] for i in intervals), max(i[1] for i in intervals)


def cloud_unet_rows(net: CloudUNet, lo: int, hi: int) -> Rows:
    """Input rows that output rows ``lo..hi`` of a :class:`CloudUNet` depend on (through the
    decoder, the skips, the pooling and the bottleneck; the same rule holds for columns)."""

    def encoder_input(level: int, rows: Rows) -> Rows:
        """Rows of the input from rows of encoder block ``level``'s output."""
        rows = input_rows(net.encoder[level], *rows)
        if level == 0:
            return rows
        return encoder_input(level - 1, input_rows(net.pool, *rows))

    def decoder_input(level: int, rows: Rows) -> Rows:
        """Rows of the input from rows of the decoder's output at ``level`` (0: full
        resolution; ``depth``: the bottleneck)."""
        if level == net.depth:
            below = input_rows(net.pool, *input_rows(net.bottleneck, *rows))
            return encoder_input(level - 1, below)
        d = net.depth - 1 - level  # the decoder lists the deepest level first
        joined = input_rows(net.decoder[d], *rows)  # rows of cat(up(h), skip)
        return _union(
            encoder_input(level, joined),
            decoder_input(level + 1, input_rows(net.up[d], *joined)),
        )

    return decoder_input(0, input_rows(net.head, lo, hi))


def cloud_unet_radius(net: CloudUNet) -> tuple[int, int]:
    """``(before, after)``: the most input rows before and after an output row that it depends
    on, over every position relative to the pooling grid (the dependence repeats every
    ``2**depth`` rows). A block whose kept rows lie at least this far from its edges, with edges
    on the pooling grid, computes them as the whole scene does."""
    m = net.size_multiple
    before = after = 0
    for y in range(m):
        lo, hi = cloud_unet_rows(net, y, y)
        before, after = max(before, y - lo), max(after, hi - y)
    return before, after
