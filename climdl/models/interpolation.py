"""Non-learned interpolation baseline, the floor every emulator must beat.

One coarse predictor channel is interpolated to the target grid, optionally corrected for the
height difference between the coarse and fine orography with a fixed lapse rate, and optionally
mapped by a fitted linear ``scale * y + offset`` (e.g. 850 hPa temperature -> near-surface
temperature). Everything is a buffer, so the baseline ships its grid and coefficients in a
checkpoint like any other network but has nothing to train.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from climdl.errors import ConfigError
from climdl.models.blocks import check_input

InterpMode = Literal["bilinear", "bicubic"]


class InterpolationBaseline(nn.Module):
    """Interpolate input channel ``channel`` to the target grid: ``[B, C, h, w]`` -> ``[B, 1, H, W]``.

    Output: ``scale * (interp(x[:, channel]) + lapse_rate * (interp(orog_coarse) - orog_fine))
    + offset``. The linear map comes last so that it can be fitted on the baseline's own output
    (:meth:`fit_linear_`).

    Two ways to place the target points inside the coarse array:

    * ``sample_grid=None``: by array index, with ``F.interpolate`` (``align_corners=False``: both
      grids are cell-centred and cover the same box). Right only when the coarse and fine grids
      are aligned boxes of the same projection.
    * ``sample_grid``: a ``[H, W, 2]`` grid in ``[-1, 1]`` (last axis: x = column, y = row) giving
      each target point's position in the coarse array, used with ``F.grid_sample``
      (``align_corners=True``, border padding). Needed when the grids are not aligned, e.g.
      2-degree lat/lon predictors and a Lambert-conformal target; build it with
      :func:`sampling_grid`. It sets ``out_size``.

    ``offset`` and ``scale`` are a float (global) or a tensor broadcastable to ``out_size``
    (per pixel).

    Args:
        channel: the input channel interpolated.
        out_size: the target grid's (H, W); set by ``sample_grid`` when given.
        mode: ``bilinear`` or ``bicubic``.
        lapse_rate: in K/m (0.0065, the standard atmosphere's): temperature decreases with
            altitude, so a fine cell higher than the coarse-cell mean is colder. Use 0 for
            fields that are not temperatures.
        sample_grid: ``[H, W, 2]`` positions of the target points in the coarse array, or None.
        offset: the fitted offset, a float or a tensor broadcastable to ``out_size``.
        scale: the fitted scale, a float or a tensor broadcastable to ``out_size``.
        in_channels: input channels, checked at forward when given.
        in_size: the input's (h, w), checked at forward when given.

    Raises:
        ConfigError: an unknown mode, a channel outside the inputs, or a ``sample_grid``,
            ``out_size``, ``offset`` or ``scale`` of the wrong shape.
    """

    sample_grid: Tensor | None
    offset: Tensor
    scale: Tensor

    def __init__(
        self,
        channel: int = 0,
        out_size: tuple[int, int] = (128, 128),
        mode: InterpMode = "bilinear",
        lapse_rate: float = 0.0065,
        sample_grid: Tensor | None = None,
        offset: Tensor | float = 0.0,
        scale: Tensor | float = 1.0,
        in_channels: int | None = None,
        in_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        if mode not in ("bilinear", "bicubic"):
            raise ConfigError(
                f"InterpolationBaseline: mode must be bilinear or bicubic, not {mode!r}."
            )
        if channel < 0 or (in_channels is not None and channel >= in_channels):
            raise ConfigError(
                f"InterpolationBaseline: channel {channel} is not one of the {in_channels} inputs."
            )
        if sample_grid is not None:
            sample_grid = torch.as_tensor(sample_grid, dtype=torch.float32).clone()
            if sample_grid.ndim != 3 or sample_grid.shape[-1] != 2:
                raise ConfigError(
                    "InterpolationBaseline: sample_grid must have shape [out_H, out_W, 2], got "
                    f"{tuple(sample_grid.shape)}; build it with sampling_grid()."
                )
            out_size = (int(sample_grid.shape[0]), int(sample_grid.shape[1]))
        out_h, out_w = (int(v) for v in out_size)
        if min(out_h, out_w) < 1:
            raise ConfigError(f"InterpolationBaseline: out_size must be positive, got {out_size}.")
        self.channel = channel
        self.out_channels = 1
        self.out_size = (out_h, out_w)
        self.mode: InterpMode = mode
        self.lapse_rate = float(lapse_rate)
        self.in_channels = in_channels
        self.in_size = None if in_size is None else (int(in_size[0]), int(in_size[1]))
        self.register_buffer("sample_grid", sample_grid)
        self.register_buffer("offset", self._coefficient(offset, "offset"))
        self.register_buffer("scale", self._coefficient(scale, "scale"))

    def _coefficient(self, value: Tensor | float, name: str) -> Tensor:
        t = torch.as_tensor(value, dtype=torch.float32).clone()
        try:
            torch.broadcast_shapes(t.shape, self.out_size)
        except RuntimeError:
            raise ConfigError(
                f"InterpolationBaseline: {name} of shape {tuple(t.shape)} does not broadcast to "
                f"the output size {self.out_size}; give a float or an [out_H, out_W] tensor."
            ) from None
        return t

    def _interp(self, field: Tensor) -> Tensor:
        """``[B, 1, h, w]`` -> ``[B, 1, *out_size]``."""
        if self.sample_grid is None:
            return F.interpolate(field, size=self.out_size, mode=self.mode, align_corners=False)
        grid = self.sample_grid.to(field.dtype).expand(field.shape[0], -1, -1, -1)
        return F.grid_sample(field, grid, mode=self.mode, padding_mode="border", align_corners=True)

    def forward(
        self,
        x: Tensor,
        scalars: Tensor | None = None,
        orog_fine: Tensor | None = None,
        orog_coarse: Tensor | None = None,
    ) -> Tensor:
        """``x``: ``[B, C, h, w]``; ``scalars`` is ignored (same call as the networks).
        ``orog_coarse``: ``[h, w]``, ``[B, h, w]`` or ``[B, 1, h, w]`` in metres, ``orog_fine``
        likewise on the output grid; give both or neither. Returns ``[B, 1, *out_size]``."""
        check_input(
            x,
            x.shape[1] if self.in_channels is None else self.in_channels,
            self.in_size,
            "InterpolationBaseline",
        )
        if self.channel >= x.shape[1]:
            raise ConfigError(
                f"InterpolationBaseline: channel {self.channel} asked for but the input has "
                f"only {x.shape[1]} channels."
            )
        y = self._interp(x[:, self.channel : self.channel + 1])
        if (orog_fine is None) != (orog_coarse is None):
            raise ConfigError(
                "InterpolationBaseline: the lapse-rate correction needs both orog_fine and "
                "orog_coarse; give both or neither."
            )
        if orog_fine is not None and orog_coarse is not None:
            coarse = _as_map(orog_coarse, (x.shape[2], x.shape[3]), "orog_coarse").to(y.dtype)
            fine = _as_map(orog_fine, self.out_size, "orog_fine").to(y.dtype)
            y = y + self.lapse_rate * (self._interp(coarse) - fine)
        return self.scale * y + self.offset

    @torch.no_grad()
    def fit_linear_(
        self,
        x: Tensor,
        target: Tensor,
        per_pixel: bool = False,
        orog_fine: Tensor | None = None,
        orog_coarse: Tensor | None = None,
    ) -> InterpolationBaseline:
        """Fit ``scale`` and ``offset`` in place by least squares of ``target`` on the
        baseline's output (with scale 1 and offset 0); returns ``self``. See :func:`fit_linear`."""
        self.scale = torch.ones((), dtype=torch.float32, device=self.scale.device)
        self.offset = torch.zeros((), dtype=torch.float32, device=self.offset.device)
        pred = self(x, orog_fine=orog_fine, orog_coarse=orog_coarse)
        scale, offset = fit_linear(pred[:, 0], _squeeze_channel(target), per_pixel=per_pixel)
        self.scale, self.offset = scale.float(), offset.float()
        return self


def _squeeze_channel(t: Tensor) -> Tensor:
    return t[:, 0] if t.ndim == 4 and t.shape[1] == 1 else t


def _as_map(t: Tensor, size: tuple[int, int], name: str) -> Tensor:
    """A 2-D ``[h, w]``, 3-D ``[B, h, w]`` or 4-D ``[B, 1, h, w]`` map as ``[B|1, 1, h, w]``."""
    m = t[None, None] if t.ndim == 2 else t[:, None] if t.ndim == 3 else t
    if m.ndim != 4 or m.shape[1] != 1 or (m.shape[2], m.shape[3]) != size:
        raise ConfigError(
            f"InterpolationBaseline: {name} must be a {size[0]} x {size[1]} map "
            f"([h, w], [B, h, w] or [B, 1, h, w]), got shape {tuple(t.shape)}."
        )
    return m


def fit_linear(pred: Tensor, target: Tensor, per_pixel: bool = False) -> tuple[Tensor, Tensor]:
    """Least-squares ``target ~ scale * pred + offset``; returns ``(scale, offset)``.

    ``pred`` and ``target`` have the same shape ``[..., H, W]`` (e.g. ``[time, H, W]``).
    ``per_pixel=False`` fits one global pair (scalar tensors); ``per_pixel=True`` fits one pair
    per grid point over the leading dims (``[H, W]`` tensors), which also absorbs fixed local
    biases such as orography. Pairs where either value is NaN (e.g. sea points) are ignored; a
    pixel with a constant ``pred`` gets ``scale = 0`` (its mean), one with no valid pair gets NaN.
    Computed in float64.

    Args:
        pred: the baseline's output ``[..., H, W]``.
        target: the truth, same shape.
        per_pixel: one (scale, offset) per grid point instead of one global pair.

    Returns:
        ``(scale, offset)``: scalar tensors, or ``[H, W]`` with ``per_pixel``.
    """
    if pred.shape != target.shape or pred.ndim < 2:
        raise ConfigError(
            f"fit_linear needs pred and target of the same shape [..., H, W], got "
            f"{tuple(pred.shape)} and {tuple(target.shape)}."
        )
    # samples along dim 0: [N, H, W] per pixel, [N] globally
    shape = (-1, *pred.shape[-2:]) if per_pixel else (-1,)
    p, t = pred.double().reshape(shape), target.double().reshape(shape)
    valid = torch.isfinite(p) & torch.isfinite(t)
    dims = 0
    n = valid.sum(dims).double()
    if not bool((n > 0).any()):
        raise ConfigError("fit_linear found no pair where both pred and target are finite.")
    zero = torch.zeros((), dtype=torch.float64, device=p.device)
    n_safe = n.clamp(min=1.0)
    mean_p = torch.where(valid, p, zero).sum(dims) / n_safe
    mean_t = torch.where(valid, t, zero).sum(dims) / n_safe
    dp = torch.where(valid, p - mean_p, zero)
    dt = torch.where(valid, t - mean_t, zero)
    var = (dp * dp).sum(dims)
    cov = (dp * dt).sum(dims)
    tiny = 1e-12 * (mean_p.abs() + 1.0) ** 2 * n_safe
    scale = torch.where(var > tiny, cov / var.clamp(min=1e-300), zero)
    offset = mean_t - scale * mean_p
    nan = torch.full((), float("nan"), dtype=torch.float64, device=p.device)
    scale = torch.where(n > 0, scale, nan)
    offset = torch.where(n > 0, offset, nan)
    return scale.to(pred.dtype), offset.to(pred.dtype)


def _fractional_index(src: Tensor, dst: Tensor, name: str) -> Tensor:
    """Position of each ``dst`` value in the monotonic 1-D ``src`` as a fractional index."""
    n = src.numel()
    if n < 2:
        raise ConfigError(f"sampling_grid needs at least 2 source {name} values, got {n}.")
    step = src[1:] - src[:-1]
    descending = bool((step < 0).all())
    if not (descending or bool((step > 0).all())):
        raise ConfigError(f"sampling_grid: the source {name} must be strictly monotonic.")
    s = src.flip(0) if descending else src
    tol = 1e-6 * float((s[-1] - s[0]).abs())
    outside = (dst < s[0] - tol) | (dst > s[-1] + tol)
    if bool(outside.any()):
        raise ConfigError(
            f"sampling_grid: {int(outside.sum())} target points have a {name} outside the "
            f"source range [{float(s[0]):g}, {float(s[-1]):g}]; enlarge the predictor domain."
        )
    d = dst.clamp(s[0], s[-1])
    i = torch.searchsorted(s, d.contiguous(), right=True).clamp(1, n - 1) - 1
    frac = (d - s[i]) / (s[i + 1] - s[i])
    idx = i.to(torch.float64) + frac
    return (n - 1) - idx if descending else idx


def sampling_grid(
    src_lat_1d: Tensor | np.ndarray,
    src_lon_1d: Tensor | np.ndarray,
    dst_lat_2d: Tensor | np.ndarray,
    dst_lon_2d: Tensor | np.ndarray,
) -> Tensor:
    """``[H, W, 2]`` float32 grid for :class:`InterpolationBaseline` (``grid_sample``,
    ``align_corners=True``) locating target points inside a regular lat/lon source array.

    The source array is laid out ``[lat, lon]`` with the given 1-D coordinates (degrees; lat
    ascending or descending, lon ascending; spacing may be uneven: the index is interpolated
    piecewise-linearly, so bilinear sampling is exact for fields linear in lat and lon). Target
    coordinates are ``[H, W]`` (any projection, e.g. a Lambert grid's 2-D lat/lon), or 1-D for a
    regular target (then ``lat`` runs along H). Target longitudes are wrapped into the source's
    360-degree window. A target point outside the source domain raises :class:`ConfigError`.

    Args:
        src_lat_1d: latitudes of the source array's rows (degrees).
        src_lon_1d: longitudes of its columns (degrees, ascending).
        dst_lat_2d: the target points' latitudes ``[H, W]`` (or 1-D).
        dst_lon_2d: the target points' longitudes ``[H, W]`` (or 1-D).

    Returns:
        The sampling grid ``[H, W, 2]`` (x, y in ``[-1, 1]``).

    Raises:
        ConfigError: a target point outside the source domain.
    """
    src_lat = torch.as_tensor(src_lat_1d, dtype=torch.float64).flatten()
    src_lon = torch.as_tensor(src_lon_1d, dtype=torch.float64).flatten()
    lat = torch.as_tensor(dst_lat_2d, dtype=torch.float64)
    lon = torch.as_tensor(dst_lon_2d, dtype=torch.float64)
    if lat.ndim == 1 and lon.ndim == 1:
        lat, lon = torch.meshgrid(lat, lon, indexing="ij")
    if lat.ndim != 2 or lat.shape != lon.shape:
        raise ConfigError(
            "sampling_grid: target lat and lon must be 2-D arrays of the same shape (or both "
            f"1-D), got {tuple(lat.shape)} and {tuple(lon.shape)}."
        )
    if not (bool(torch.isfinite(lat).all()) and bool(torch.isfinite(lon).all())):
        raise ConfigError("sampling_grid: target lat/lon contain non-finite values.")
    if src_lon.numel() >= 2 and bool((src_lon[1:] <= src_lon[:-1]).any()):
        raise ConfigError("sampling_grid: the source longitudes must be strictly ascending.")
    lon = src_lon[0] + torch.remainder(lon - src_lon[0], 360.0)
    # a point just west of the first source longitude wraps to ~+360: bring it back if close
    lon = torch.where(lon > src_lon[-1] + 1e-6 * 360.0, lon - 360.0, lon)
    iy = _fractional_index(src_lat, lat, "latitude")
    ix = _fractional_index(src_lon, lon, "longitude")
    gx = 2.0 * ix / (src_lon.numel() - 1) - 1.0
    gy = 2.0 * iy / (src_lat.numel() - 1) - 1.0
    return torch.stack([gx, gy], dim=-1).float()
