"""Per-channel normalisation that runs on the batch's device and travels inside checkpoints.

The statistics are registered buffers of a :class:`Normaliser` module, so ``model.to(device)``
moves them and ``state_dict()`` saves them (with the channel names and kinds as extra state):
inference then needs nothing but the checkpoint. :func:`compute_stats` builds the statistics
from a stream of chunks (decades of data never need to fit in memory) and
:func:`daily_spatial_moments` gives each map's own spatial mean and standard deviation.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import Tensor, nn

from climdl.errors import ConfigError, DataError

Kind = Literal["standard", "log1p_standard", "none"]
"""``standard``: (x - mean) / std; ``log1p_standard``: the same on log1p(max(x, 0)), for
precipitation; ``none``: passed through unchanged."""

_KINDS: tuple[str, ...] = get_args(Kind)


def _kinds(kind: Kind | Sequence[Kind], n: int) -> list[Kind]:
    """Expand one kind to all channels, or check a per-channel list."""
    kinds: list[Kind] = [kind] * n if isinstance(kind, str) else list(kind)
    if len(kinds) != n:
        raise ConfigError(
            f"Got {len(kinds)} normalisation kinds for {n} channels; give one per channel or one for all."
        )
    for k in kinds:
        if k not in _KINDS:
            raise ConfigError(f"Unknown normalisation kind {k!r}; use one of {', '.join(_KINDS)}.")
    return kinds


def _as_tensor(a: Tensor | ArrayLike, dtype: torch.dtype = torch.float64) -> Tensor:
    return (
        a.detach().to(dtype)
        if isinstance(a, Tensor)
        else torch.as_tensor(np.asarray(a), dtype=dtype)
    )


def _log1p(x: Tensor) -> Tensor:
    """log1p of x clamped at 0 (small negative precipitation from interpolation becomes 0)."""
    return torch.log1p(x.clamp_min(0))


class Normaliser(nn.Module):
    """Normalise and denormalise tensors channel by channel with statistics held as buffers.

    ``mean`` and ``std`` have shape ``[C]`` (one value per channel) or ``[C, *S]`` (maps, e.g.
    ``[C, H, W]``, matching the trailing dimensions after the channel dimension). For
    ``log1p_standard`` channels they are the statistics of ``log1p(x)``, as returned by
    :func:`compute_stats` with the same kinds. ``std`` is used as ``std + eps``.

    Args:
        names: the channel names, in channel order.
        mean: the means ``[C]`` or ``[C, *S]``.
        std: the standard deviations, same shape.
        kind: ``standard``, ``log1p_standard`` or ``none``, for all channels or one per channel.
        eps: added to ``std`` (no division by zero on constant channels).
    """

    mean: Tensor
    std: Tensor
    is_log: Tensor
    is_none: Tensor

    def __init__(
        self,
        names: Sequence[str],
        mean: Tensor | ArrayLike,
        std: Tensor | ArrayLike,
        kind: Kind | Sequence[Kind] = "standard",
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.names: list[str] = list(names)
        n = len(self.names)
        self.kinds: list[Kind] = _kinds(kind, n)
        self.eps = float(eps)
        mean_t, std_t = _as_tensor(mean, torch.float32), _as_tensor(std, torch.float32)
        if mean_t.shape != std_t.shape or mean_t.ndim == 0 or mean_t.shape[0] != n:
            raise ConfigError(
                f"Normalisation statistics of shape {tuple(mean_t.shape)} (mean) and "
                f"{tuple(std_t.shape)} (std) do not match the {n} channels {self.names}."
            )
        self.register_buffer("mean", mean_t.clone())
        self.register_buffer("std", std_t.clone())
        self.register_buffer("is_log", torch.tensor([k == "log1p_standard" for k in self.kinds]))
        self.register_buffer("is_none", torch.tensor([k == "none" for k in self.kinds]))

    @classmethod
    def from_stats(cls, names: Sequence[str], stats: ChannelStats, eps: float = 1e-6) -> Normaliser:
        """Build from :func:`compute_stats` output (its kinds included)."""
        return cls(names, stats.mean, stats.std, stats.kinds, eps)

    def extra_repr(self) -> str:
        """Names, kinds and the statistics' shape, for ``print(module)``."""
        return f"names={self.names}, kinds={self.kinds}, stats_shape={tuple(self.mean.shape)}"

    def get_extra_state(self) -> dict[str, Any]:
        """Names, kinds and eps, saved in the state dict next to the buffers."""
        return {"names": self.names, "kinds": self.kinds, "eps": self.eps}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`get_extra_state` saved."""
        self.names = list(state["names"])
        self.kinds = _kinds(state["kinds"], len(self.names))
        self.eps = float(state["eps"])

    def _broadcast(self, x: Tensor, dim: int) -> tuple[Tensor, Tensor, Tensor]:
        """Return mean, scale and the log flags shaped to broadcast against ``x``."""
        d = dim % x.ndim
        if x.shape[d] != len(self.names):
            raise DataError(
                f"The tensor has {x.shape[d]} channels along dimension {dim} but the normaliser "
                f"expects {len(self.names)} ({', '.join(self.names)})."
            )
        stat_tail = tuple(self.mean.shape[1:])
        trailing = x.ndim - d - 1
        if stat_tail and tuple(x.shape[d + 1 :]) != stat_tail:
            raise DataError(
                f"Per-pixel statistics of shape {stat_tail} do not match the tensor's trailing shape {tuple(x.shape[d + 1 :])}."
            )
        shape = (len(self.names), *stat_tail, *([1] * (trailing - len(stat_tail))))
        flag_shape = (len(self.names), *([1] * trailing))
        dtype = x.dtype if x.is_floating_point() else torch.float32
        none = self.is_none.view(-1, *[1] * len(stat_tail))
        mean = torch.where(none, 0.0, self.mean)
        scale = torch.where(none, 1.0, self.std + self.eps)
        return (
            mean.to(dtype).reshape(shape),
            scale.to(dtype).reshape(shape),
            self.is_log.view(flag_shape),
        )

    def normalise(self, x: Tensor, dim: int = 1) -> Tensor:
        """Map physical values to normalised ones; ``dim`` is the channel dimension."""
        mean, scale, is_log = self._broadcast(x, dim)
        x = x.to(mean.dtype)
        if "log1p_standard" in self.kinds:  # the host copy of is_log: no device sync
            x = torch.where(is_log, _log1p(x), x)
        return (x - mean) / scale

    def denormalise(self, x: Tensor, dim: int = 1) -> Tensor:
        """Inverse of :meth:`normalise`; ``log1p_standard`` channels come back clamped at 0."""
        mean, scale, is_log = self._broadcast(x, dim)
        y = x.to(mean.dtype) * scale + mean
        if "log1p_standard" in self.kinds:  # the host copy of is_log: no device sync
            y = torch.where(is_log, torch.expm1(y).clamp_min(0), y)
        return y

    def forward(self, x: Tensor, dim: int = 1) -> Tensor:
        """Same as :meth:`normalise`."""
        return self.normalise(x, dim)


@dataclass(frozen=True)
class ChannelStats:
    """Mean and standard deviation per channel (or per channel and pixel), in float64.

    Attributes:
        mean: the means ``[C]`` (or ``[C, H, W]``).
        std: the standard deviations, same shape.
        count: number of valid (non-NaN) values behind each statistic.
        nan_count: number of NaN values that were ignored.
        kinds: each channel's kind (``log1p_standard`` statistics are those of ``log1p(x)``).
    """

    mean: Tensor
    std: Tensor
    count: Tensor
    """Number of valid (non-NaN) values behind each statistic."""
    nan_count: Tensor
    """Number of NaN values that were ignored."""
    kinds: list[Kind]


class StreamingStats:
    """Accumulate mean and variance over chunks with Chan's parallel merge, in float64.

    Each chunk's own mean and sum of squared deviations are computed in two passes (exact
    enough in float64) and merged into the running totals, so any chunking gives the same
    result as one pass over the concatenation. Chunks are reduced on their own device.

    Args:
        kind: ``standard``, ``log1p_standard`` or ``none``, for all channels or one per channel.
        channel_dim: the channel dimension of the chunks.
        per_pixel: statistics per channel and pixel (reduce only the dimensions before the channel)
            instead of per channel.
    """

    def __init__(
        self,
        kind: Kind | Sequence[Kind] = "standard",
        channel_dim: int = 1,
        per_pixel: bool = False,
    ) -> None:
        self.kind = kind
        self.channel_dim = channel_dim
        self.per_pixel = per_pixel
        self._n: Tensor | None = None
        self._mean: Tensor | None = None
        self._m2: Tensor | None = None
        self._nan: Tensor | None = None
        self.kinds: list[Kind] = []

    def update(self, chunk: Tensor | ArrayLike) -> None:
        """Add one chunk ``[..., C, ...]`` (channel at ``channel_dim``)."""
        x = _as_tensor(chunk)
        d = self.channel_dim % x.ndim
        if not self.kinds:
            self.kinds = _kinds(self.kind, x.shape[d])
        elif x.shape[d] != len(self.kinds):
            raise DataError(
                f"A chunk has {x.shape[d]} channels where earlier ones had {len(self.kinds)}."
            )
        if any(k == "log1p_standard" for k in self.kinds):
            is_log = torch.tensor([k == "log1p_standard" for k in self.kinds], device=x.device)
            x = torch.where(is_log.view(-1, *[1] * (x.ndim - d - 1)), _log1p(x), x)
        # rows: samples reduced over; columns: the kept statistics
        x = (
            x.reshape(-1, *x.shape[d:])
            if self.per_pixel
            else x.movedim(d, -1).reshape(-1, x.shape[d])
        )
        valid = ~torch.isnan(x)
        n = valid.sum(0).to(torch.float64)
        filled = torch.where(valid, x, 0.0)
        mean = filled.sum(0) / n.clamp_min(1)
        m2 = torch.where(valid, (x - mean) ** 2, 0.0).sum(0)
        nan = (~valid).sum(0)
        self._combine(n, mean, m2, nan)

    def merge(self, other: StreamingStats) -> None:
        """Add the statistics ``other`` accumulated (e.g. on another process) to these.

        Chan et al.'s pairwise combination of count, mean and sum of squared deviations, in
        float64 and NaN-aware (counts are of valid values; NaN counts add up). Merging the
        per-chunk accumulators in chunk order gives bitwise the result of updating one
        accumulator with the chunks in that order; any other grouping agrees to rounding.
        ``other`` may live on another device: its tensors are moved to this one's.
        """
        if other._n is None or other._mean is None or other._m2 is None or other._nan is None:
            return  # nothing accumulated there
        if (other.channel_dim, other.per_pixel) != (self.channel_dim, self.per_pixel):
            raise DataError(
                "Statistics accumulated with another channel_dim or per_pixel cannot be merged."
            )
        if not self.kinds:
            self.kinds = list(other.kinds)
        elif other.kinds != self.kinds:
            raise DataError(
                f"Statistics of kinds {other.kinds} cannot be merged into ones of kinds {self.kinds}."
            )
        dev = other._n.device if self._n is None else self._n.device
        self._combine(other._n.to(dev), other._mean.to(dev), other._m2.to(dev), other._nan.to(dev))

    def to(self, device: torch.device | str) -> StreamingStats:
        """These statistics with their running totals moved to ``device`` (a new object)."""
        out = StreamingStats(self.kind, self.channel_dim, self.per_pixel)
        out.kinds = list(self.kinds)
        if (
            self._n is not None
            and self._mean is not None
            and self._m2 is not None
            and self._nan is not None
        ):
            out._n, out._mean = self._n.to(device), self._mean.to(device)
            out._m2, out._nan = self._m2.to(device), self._nan.to(device)
        return out

    def _combine(self, n: Tensor, mean: Tensor, m2: Tensor, nan: Tensor) -> None:
        """Fold one group's (count, mean, M2, NaN count) into the running totals."""
        if self._n is None or self._mean is None or self._m2 is None or self._nan is None:
            self._n, self._mean, self._m2, self._nan = n, mean, m2, nan
            return
        if self._n.shape != n.shape:
            raise DataError(
                f"A chunk has statistics of shape {tuple(n.shape)} where earlier ones had {tuple(self._n.shape)}."
            )
        n_all = self._n + n
        delta = mean - self._mean
        frac = n / n_all.clamp_min(1)
        self._mean = self._mean + delta * frac
        self._m2 = self._m2 + m2 + delta**2 * self._n * frac
        self._n, self._nan = n_all, self._nan + nan

    def result(self, ddof: int = 0) -> ChannelStats:
        """Statistics so far (NaN where a channel had no valid value); moved to the CPU."""
        if self._n is None or self._mean is None or self._m2 is None or self._nan is None:
            raise DataError("No data were given to compute normalisation statistics from.")
        empty = self._n <= ddof
        mean = torch.where(self._n > 0, self._mean, torch.nan)
        std = torch.where(empty, torch.nan, torch.sqrt(self._m2 / (self._n - ddof).clamp_min(1)))
        return ChannelStats(
            mean.cpu(), std.cpu(), self._n.to(torch.int64).cpu(), self._nan.cpu(), self.kinds
        )


def compute_stats(
    chunks: Iterable[Tensor | ArrayLike],
    kind: Kind | Sequence[Kind] = "standard",
    channel_dim: int = 1,
    per_pixel: bool = False,
    ddof: int = 0,
) -> ChannelStats:
    """Mean and std per channel over a stream of chunks, ignoring NaN.

    ``per_pixel=False`` reduces every dimension but the channel one (stats ``[C]``);
    ``per_pixel=True`` reduces only the dimensions before it (stats ``[C, H, W]``).

    Args:
        chunks: the chunks (tensors or arrays), channel at ``channel_dim``.
        kind: ``standard``, ``log1p_standard`` or ``none``, for all channels or one per channel.
        channel_dim: the channel dimension.
        per_pixel: statistics per channel and pixel.
        ddof: delta degrees of freedom of the standard deviation.

    Returns:
        The statistics, in float64 on the CPU.

    Raises:
        DataError: no chunk was given.
    """
    acc = StreamingStats(kind, channel_dim, per_pixel)
    for chunk in chunks:
        acc.update(chunk)
    return acc.result(ddof)


def daily_spatial_moments(x: Tensor, dims: tuple[int, ...] = (-2, -1)) -> tuple[Tensor, Tensor]:
    """Spatial mean and (population) std of each map of ``x[B, C, H, W]``, ignoring NaN.

    Returns ``mean[B, C]`` and ``std[B, C]``; an all-NaN map gives NaN. Used to standardise
    each day by its own spatial moments and to feed those moments as 1-D inputs.

    Args:
        x: the maps ``[B, C, H, W]``.
        dims: the spatial dimensions.

    Returns:
        ``(mean, std)``, each ``[B, C]``.
    """
    valid = ~torch.isnan(x)
    n = valid.sum(dims, keepdim=True)
    mean = torch.where(valid, x, 0).sum(dims, keepdim=True) / n
    var = torch.where(valid, (x - mean) ** 2, 0).sum(dims, keepdim=True) / n
    # sqrt's gradient is infinite at 0: a flat map would give NaN input gradients (sensitivity)
    std = torch.where(var == 0, 0.0, var.clamp_min(torch.finfo(var.dtype).tiny).sqrt())
    return mean.squeeze(dims), std.squeeze(dims)


DAILY_MAP_EPS = 1e-6
"""Added to a daily map's spatial std by :func:`spatial_standardise` (constant maps stay finite)."""


def spatial_standardise(x: Tensor, eps: float = DAILY_MAP_EPS) -> tuple[Tensor, Tensor, Tensor]:
    """Standardise each map of ``x[B, C, H, W]`` by its own spatial moments.

    Returns ``(z, mean[B, C], std[B, C])`` with ``z = (x - mean) / (std + eps)``.

    Args:
        x: the maps ``[B, C, H, W]``.
        eps: added to the std (constant maps stay finite).

    Returns:
        ``(z, mean, std)``: the standardised maps and the moments ``[B, C]``.
    """
    mean, std = daily_spatial_moments(x)
    return (x - mean[..., None, None]) / (std[..., None, None] + eps), mean, std
