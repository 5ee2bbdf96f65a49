"""Probabilistic scores of an ensemble prediction: fair CRPS, spread-skill ratio, rank histogram.

:func:`ensemble_scores` streams over truth and ensemble in one Dask pass: each chunk of days
(every member of it, the ``member`` dim rechunked whole) is reduced by a fused NumPy kernel to
per-point sums per season (count, fair CRPS, ensemble variance, squared error of the ensemble
mean) and to rank counts per season, so memory is bounded by a few chunks whatever the length
of the series. :class:`EnsembleScores` derives the summary numbers from those sums.

* Fair CRPS (Ferro 2014; Zamo & Naveau 2018), per point and day:
  ``mean_i |x_i - y| - 1/(2 M (M-1)) sum_{i,j} |x_i - x_j|``; the double sum comes from the
  sorted members in O(M log M): ``sum_{i<j} (x_(j) - x_(i)) = sum_k (2k - M + 1) x_(k)``. With
  one member it is the absolute error.
* Spread-skill ratio (Fortin et al. 2014): ``sqrt((M+1)/M mean(var_ens)) / RMSE(ens. mean)``
  over all valid points and days (variance with ddof=1); 1 for a calibrated ensemble, < 1
  under-dispersive. NaN for one member (no spread).
* Rank histogram: the rank of the truth among the M members (M+1 bins); ties (dry days of pr)
  are broken uniformly at random with a generator seeded by the calendar day, so the counts are
  reproducible whatever the chunking.

Points where the truth or any member is missing are left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dask.array as dsa
import numpy as np
import xarray as xr

from climdl.evaluation import _time
from climdl.evaluation._reduce import is_dask, spatial_dims, time_first
from climdl.evaluation.diagnostics import season_codes

#: The dimension of the members in a prediction.
MEMBER = "member"
#: Per-point sums per season: valid pairs, fair CRPS, ensemble variance, squared error of the mean.
ENS_STATS = ("n", "crps", "var", "se")
#: Seed of the tie-breaking draws of the rank histogram (combined with the calendar day).
TIE_SEED = 15_2026
#: Days per piece of a block (bounds the float64 temporaries).
_PIECE = 16


def _tie_draws(keys: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Uniform [0, 1) draws of each day (``keys``: its calendar day), one per point."""
    return np.stack(
        [np.random.default_rng([TIE_SEED, int(k)]).random(shape) for k in keys]
    ).reshape(len(keys), *shape)


def _pieces(block: np.ndarray) -> Any:
    """(start, truth, members, valid) of each piece of days of a (time, 1 + M, *space) block;
    invalid points (truth or any member missing) are set to 0."""
    for start in range(0, block.shape[0], _PIECE):
        piece = block[start : start + _PIECE].astype(np.float64)
        y, x = piece[:, 0], piece[:, 1:]
        valid = np.isfinite(y) & np.isfinite(x).all(axis=1)
        yield start, np.where(valid, y, 0.0), np.where(valid[:, None], x, 0.0), valid


def _sums_block(block: np.ndarray, codes: np.ndarray, ngroups: int) -> np.ndarray:
    """The :data:`ENS_STATS` sums of one block of days, shape (4, ngroups, *space).

    ``block`` is (time, 1 + M, *space) with the truth first; ``codes`` the season of each day.
    """
    m = block.shape[1] - 1
    space = block.shape[2:]
    sums = np.zeros((len(ENS_STATS), ngroups, *space), dtype=np.float64)
    weights = (2 * np.arange(m) - m + 1).astype(np.float64).reshape(1, m, *([1] * len(space)))
    for start, y, x, valid in _pieces(block):
        err = np.abs(x - y[:, None]).mean(axis=1)
        mean = x.mean(axis=1)
        if m > 1:
            pair = (np.sort(x, axis=1) * weights).sum(axis=1)  # sum_{i<j} |x_i - x_j|
            crps = err - pair / (m * (m - 1))
            var = x.var(axis=1, ddof=1)
        else:
            crps, var = err, np.zeros_like(err)
        c = codes[start : start + y.shape[0]]
        for g in range(ngroups):
            sel = c == g
            if sel.any():
                ok = valid[sel]
                for i, v in enumerate((ok, crps[sel], var[sel], (mean[sel] - y[sel]) ** 2)):
                    sums[i, g] += np.where(ok, v, 0.0).sum(axis=0)
    return sums


def _ranks_block(
    block: np.ndarray, codes: np.ndarray, keys: np.ndarray, ngroups: int
) -> np.ndarray:
    """Counts of the truth's rank among the members per season, shape (ngroups, M + 1).

    Ties are broken uniformly at random with one draw per point and day, seeded by the day's
    calendar key (``keys``), so the counts do not depend on the blocks.
    """
    m = block.shape[1] - 1
    ranks = np.zeros((ngroups, m + 1), dtype=np.int64)
    for start, y, x, valid in _pieces(block):
        n = y.shape[0]
        below = (x < y[:, None]).sum(axis=1)
        tied = (x == y[:, None]).sum(axis=1)
        u = _tie_draws(keys[start : start + n], block.shape[2:])
        rank = np.minimum(below + np.floor(u * (tied + 1)).astype(np.int64), m)
        c = codes[start : start + n]
        for g in range(ngroups):
            sel = (c == g).reshape(-1, *([1] * (rank.ndim - 1))) & valid
            ranks[g] += np.bincount(rank[sel], minlength=m + 1)
    return ranks


def _block_size(days: int, members: int) -> int:
    """Days per block of the ensemble pass: about the bytes of a one-model chunk of ``days``."""
    return max(8, -(-days * 2 // (members + 1)))


def ensemble_scores(truth: xr.DataArray, ens: xr.DataArray) -> tuple[xr.DataArray, xr.DataArray]:
    """Lazy per-season sums of the ensemble scores of ``ens`` against ``truth``.

    Args:
        truth: the reference series (time and spatial dims).
        ens: the ensemble on the same days and grid, with a ``member`` dim (any chunking: the
            members are rechunked whole, the days into blocks of about one model's chunk).

    Returns:
        The sums, dims ``(stat, group, *spatial)`` with ``stat`` in :data:`ENS_STATS` and
        ``group`` the seasons DJF, MAM, JJA, SON; and the rank counts, dims ``(group, rank)``.
    """
    t = time_first(truth)
    e = ens.transpose("time", MEMBER, *spatial_dims(t))
    m = e.sizes[MEMBER]
    codes = season_codes(t["time"])
    keys = _time.day_keys(t["time"])
    ng = len(_time.SEASONS)
    sdims = spatial_dims(t)
    coords = {k: v for k, v in t.coords.items() if "time" not in v.dims}
    if is_dask(t) or is_dask(e):
        tt = dsa.asarray(t.data)[:, None]
        days = int(max(tt.chunks[0])) if is_dask(t) else 365
        arr = dsa.concatenate([tt, dsa.asarray(e.data)], axis=1)
        arr = arr.rechunk({0: _block_size(days, m), **{i: -1 for i in range(1, arr.ndim)}})
        starts = np.r_[0, np.cumsum(arr.chunks[0])]
        nb = arr.numblocks[0]

        def span(block_info: dict[Any, Any] | None) -> slice:
            assert block_info is not None
            i = block_info[0]["chunk-location"][0]
            return slice(starts[i], starts[i + 1])

        def sums_block(b: np.ndarray, block_info: dict[Any, Any] | None = None) -> np.ndarray:
            return _sums_block(b, codes[span(block_info)], ng)[None]

        def ranks_block(b: np.ndarray, block_info: dict[Any, Any] | None = None) -> np.ndarray:
            s = span(block_info)
            return _ranks_block(b, codes[s], keys[s], ng)[None]

        sums: Any = arr.map_blocks(
            sums_block,
            new_axis=[2],
            dtype=np.float64,
            chunks=((1,) * nb, (len(ENS_STATS),), (ng,), *arr.chunks[2:]),
        ).sum(axis=0)
        ranks: Any = arr.map_blocks(
            ranks_block,
            drop_axis=list(range(1, arr.ndim)),
            new_axis=[1, 2],
            dtype=np.int64,
            chunks=((1,) * nb, (ng,), (m + 1,)),
        ).sum(axis=0)
    else:
        block = np.concatenate([np.asarray(t.values)[:, None], np.asarray(e.values)], axis=1)
        sums, ranks = _sums_block(block, codes, ng), _ranks_block(block, codes, keys, ng)
    out = xr.DataArray(
        sums,
        dims=("stat", "group", *sdims),
        coords={**coords, "stat": list(ENS_STATS), "group": list(_time.SEASONS)},
    )
    counts = xr.DataArray(
        ranks,
        dims=("group", "rank"),
        coords={"group": list(_time.SEASONS), "rank": np.arange(m + 1)},
    )
    return out, counts


@dataclass
class EnsembleScores:
    """The scores of one ensemble from the sums of :func:`ensemble_scores` (computed).

    Attributes:
        sums: dims ``(stat, group, *spatial)``.
        ranks: rank counts, dims ``(group, rank)``.
    """

    sums: xr.DataArray
    ranks: xr.DataArray

    @property
    def members(self) -> int:
        """The number of members M."""
        return int(self.ranks.sizes["rank"]) - 1

    def _sums(self, season: str | None) -> xr.DataArray:
        return self.sums.sum("group") if season is None else self.sums.sel(group=season, drop=True)

    def crps_map(self, season: str | None = None) -> xr.DataArray:
        """Temporal mean of the fair CRPS at each point (NaN where no valid day)."""
        s = self._sums(season)
        n = s.sel(stat="n", drop=True)
        return s.sel(stat="crps", drop=True) / n.where(n > 0)

    def _totals(self, season: str | None) -> tuple[float, float, float]:
        s = self._sums(season)
        tot = {k: float(s.sel(stat=k).sum()) for k in ENS_STATS}
        return tot["n"], tot["var"], tot["se"]

    def spread(self, season: str | None = None) -> float:
        """``sqrt((M+1)/M mean(var_ens))`` over all valid points and days; NaN for M = 1."""
        n, var, _ = self._totals(season)
        m = self.members
        if m < 2 or n == 0:
            return float("nan")
        return float(np.sqrt((m + 1) / m * var / n))

    def rmse(self, season: str | None = None) -> float:
        """RMSE of the ensemble mean over all valid points and days."""
        n, _, se = self._totals(season)
        return float(np.sqrt(se / n)) if n > 0 else float("nan")

    def ssr(self, season: str | None = None) -> float:
        """Spread-skill ratio (Fortin et al. 2014); NaN for M = 1 or a perfect mean."""
        skill = self.rmse(season)
        return self.spread(season) / skill if skill > 0 else float("nan")

    def rank_counts(self, season: str | None = None) -> np.ndarray:
        """Counts of the truth's rank, M + 1 bins."""
        r = self.ranks.sum("group") if season is None else self.ranks.sel(group=season)
        return np.asarray(r.values, dtype=np.int64)

    def rank_frequency(self, season: str | None = None) -> np.ndarray:
        """Relative frequencies of the truth's rank (sum 1; NaN without valid values)."""
        c = self.rank_counts(season).astype(np.float64)
        total = c.sum()
        return c / total if total > 0 else np.full_like(c, np.nan)

    def reliability_index(self) -> float:
        """``sum_j |f_j - 1/(M+1)|`` (Delle Monache et al. 2006): 0 for a flat histogram."""
        f = self.rank_frequency()
        return float(np.abs(f - 1.0 / f.size).sum())

    def outer_ratio(self) -> float:
        """Mean frequency of the two outer bins times M + 1: > 1 U-shaped (under-dispersive),
        < 1 dome-shaped (over-dispersive), 1 flat."""
        f = self.rank_frequency()
        return float((f[0] + f[-1]) / 2.0 * f.size)

    def chi_square(self) -> float:
        """Pearson's chi-square of the counts against a flat histogram (M degrees of freedom)."""
        c = self.rank_counts().astype(np.float64)
        expected = c.sum() / c.size
        return float(((c - expected) ** 2 / expected).sum()) if expected > 0 else float("nan")
