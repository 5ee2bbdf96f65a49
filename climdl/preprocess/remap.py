"""Sparse regridding weights and their application on whatever device the data are on.

A :class:`RegridWeights` holds the remapping matrix (float64, CPU master copy) with the grid
shapes and per-cell coverage; :func:`apply` remaps a tensor with one sparse matmul on its own
device and dtype, leaving out NaN sources and renormalising over the valid weight. The weights
are built in :mod:`climdl.preprocess.regrid`.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from numpy.typing import ArrayLike
from torch import Tensor

from climdl.errors import DataError

_CACHE: dict[str, RegridWeights] = {}


class RegridWeights:
    """Sparse remapping matrix ``[n_dst, n_src]`` with the grid shapes and per-cell coverage.

    Rows sum to 1 wherever any source falls in the destination cell (weights are fractions of
    the *covered* area); ``coverage`` is the covered fraction of each destination cell (0..1).
    The float64 CPU matrix is the master copy; device/dtype copies are made once and cached.

    Args:
        matrix: the weights, SciPy CSR ``[n_dst, n_src]``.
        src_shape: the source grid's shape.
        dst_shape: the destination grid's shape.
        coverage: covered fraction of each destination cell, ``dst_shape`` (or flat).
        method: how the weights were made (``conservative``, ``bilinear``).
        overlap: for conservative weights, the source area (m^2) each destination cell
            received, ``dst_shape`` (or flat); ``sum(regridded * overlap)`` is then the source's
            area integral. None: not known (bilinear weights, weights read from a file).
    """

    def __init__(
        self,
        matrix: sp.csr_matrix | sp.csr_array,
        src_shape: tuple[int, ...],
        dst_shape: tuple[int, ...],
        coverage: ArrayLike,
        method: str,
        overlap: ArrayLike | None = None,
    ) -> None:
        csr = sp.csr_matrix(matrix, dtype=np.float64)
        csr.sort_indices()
        self.src_shape, self.dst_shape, self.method = tuple(src_shape), tuple(dst_shape), method
        if csr.shape != (int(np.prod(dst_shape)), int(np.prod(src_shape))):
            raise ValueError(f"matrix shape {csr.shape} does not match {dst_shape} x {src_shape}")
        with warnings.catch_warnings():  # "sparse CSR support is in beta": we rely only on matmul
            warnings.simplefilter("ignore", UserWarning)
            self.matrix: Tensor = torch.sparse_csr_tensor(
                torch.from_numpy(csr.indptr.astype(np.int64)),
                torch.from_numpy(csr.indices.astype(np.int64)),
                torch.from_numpy(csr.data),
                size=csr.shape,
                check_invariants=False,
            )
        self.coverage: Tensor = torch.as_tensor(np.asarray(coverage, np.float64).reshape(dst_shape))
        self.overlap: Tensor | None = (
            None
            if overlap is None
            else torch.as_tensor(np.asarray(overlap, np.float64).reshape(dst_shape))
        )
        self._copies: dict[tuple[torch.device, torch.dtype], Tensor] = {}

    @property
    def n_src(self) -> int:
        """Number of source cells."""
        return int(np.prod(self.src_shape))

    @property
    def n_dst(self) -> int:
        """Number of destination cells."""
        return int(np.prod(self.dst_shape))

    def to_scipy(self) -> sp.csr_matrix:
        """The weights as a SciPy CSR matrix ``[n_dst, n_src]`` (for saving)."""
        m = self.matrix
        return sp.csr_matrix(
            (m.values().numpy(), m.col_indices().numpy(), m.crow_indices().numpy()),
            shape=tuple(m.shape),
        )

    def matrix_on(self, device: torch.device | str, dtype: torch.dtype = torch.float32) -> Tensor:
        """The matrix on ``device`` in ``dtype`` (cached after the first call)."""
        dev = torch.device(device)
        if dev.type == "cuda" and dev.index is None:  # "cuda" and "cuda:0" share one copy
            dev = torch.device("cuda", torch.cuda.current_device())
        key = (dev, dtype)
        if key not in self._copies:
            self._copies[key] = self.matrix.to(dtype=dtype).to(device=dev)
        return self._copies[key]

    def to(self, device: torch.device | str, dtype: torch.dtype = torch.float32) -> RegridWeights:
        """Prepare (and cache) the matrix on ``device``; returns ``self`` for chaining."""
        self.matrix_on(device, dtype)
        return self

    def __call__(
        self, x: Tensor, min_coverage: float | None = None, nan_aware: bool = True
    ) -> Tensor:
        """Regrid ``x[..., *src_shape]`` with :func:`apply` (see there)."""
        return apply(self, x, min_coverage=min_coverage, nan_aware=nan_aware)

    def save(self, path: str | Path) -> None:
        """Write the weights to a ``.npz`` file."""
        m = self.to_scipy()
        np.savez_compressed(
            path, data=m.data, indices=m.indices, indptr=m.indptr, src_shape=self.src_shape,
            dst_shape=self.dst_shape, coverage=self.coverage.numpy(), method=self.method,
        )  # fmt: skip

    @classmethod
    def load(cls, path: str | Path) -> RegridWeights:
        """Read weights written by :meth:`save`."""
        with np.load(path) as f:
            src, dst = tuple(int(i) for i in f["src_shape"]), tuple(int(i) for i in f["dst_shape"])
            m = sp.csr_matrix(
                (f["data"], f["indices"], f["indptr"]), shape=(int(np.prod(dst)), int(np.prod(src)))
            )
            return cls(m, src, dst, f["coverage"], str(f["method"]))


def apply(
    weights: RegridWeights, x: Tensor, min_coverage: float | None = None, nan_aware: bool = True
) -> Tensor:
    """Remap ``x[..., *src_shape]`` to ``[..., *dst_shape]`` with one sparse matmul on x's device.

    With ``nan_aware`` NaN sources are excluded and the weights renormalised over the valid
    ones; destinations with no valid source (or with ``coverage < min_coverage``) become NaN.
    Half-precision inputs are computed in float32 and cast back.

    Args:
        weights: the remapping weights.
        x: the fields ``[..., *src_shape]``.
        min_coverage: destinations covered less than this become NaN; None: no limit.
        nan_aware: leave NaN sources out and renormalise (else NaN spreads).

    Returns:
        The remapped fields ``[..., *dst_shape]``, in x's dtype.
    """
    ns = len(weights.src_shape)
    if tuple(x.shape[x.ndim - ns :]) != weights.src_shape:
        raise DataError(
            f"The field has spatial shape {tuple(x.shape[-ns:])} but the regridding weights expect {weights.src_shape}."
        )
    lead = x.shape[: x.ndim - ns]
    work = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    w = weights.matrix_on(x.device, work)
    cols = x.reshape(-1, weights.n_src).to(work).T
    if nan_aware:
        valid = ~torch.isnan(cols)
        both = torch.cat([torch.where(valid, cols, 0.0), valid.to(work)], dim=1)
        num, den = (w @ both).T.chunk(2, dim=0)
        y = torch.where(den > 0, num / den, torch.nan)
    else:
        y = (w @ cols.contiguous()).T
        y = torch.where(w.crow_indices().diff().bool(), y, torch.nan)
    y = y.reshape(*lead, *weights.dst_shape)
    if min_coverage is not None:
        y = torch.where(weights.coverage.to(x.device) >= min_coverage, y, torch.nan)
    return y.to(x.dtype)
