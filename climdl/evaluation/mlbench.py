"""Three scores exactly as CORDEX ML-Bench's evaluation code defines them, for the leaderboard.

climdl's own RMSE, RALSD and Wasserstein distance (:mod:`~climdl.evaluation.table`,
:mod:`~climdl.evaluation.spectra`, :mod:`~climdl.evaluation.distributions`) depart from the
benchmark's ``evaluation/diagnostics.py`` (WCRP-CORDEX/ml-benchmark) where its definitions are
physically questionable or cannot stream over long series. A user who submits to the benchmark
needs its numbers too, so these are written from that code's definitions (an independent
implementation, not a copy) and reported beside climdl's, labelled as the benchmark's:

* **RMSE**: the temporal RMSE at each grid point (missing days skipped), averaged over the points
  with equal weights (``rmse(..., dim="time")`` then ``.mean()``). climdl's ``rmse`` is the root
  of the mean squared error over all points and days: the two differ where the error varies in
  space (the mean of roots is at most the root of the mean).
* **RALSD**: each day's field with missing values set to 0, its full 2-D FFT power shifted so
  that the zero frequency is at ``(n // 2)``, averaged over integer annuli ``floor(r)`` of the
  pixel distance from the *array* centre ``((n - 1) / 2)``, which is half a pixel off the zero
  frequency for even sizes (so bin 0 holds the mean's power and three neighbours, and the bins
  reach the corners); the days' profiles are averaged, and the score is the **mean** over all
  bins of ``(10 log10(P_truth / max(P_pred, 1e-30)))^2`` (the ratio floored at 1e-30), without
  the root of Harris et al. (2022), in dB^2. climdl's ``ralsd`` uses physical wavenumbers centred
  on the zero frequency up to Nyquist, fills gaps with the day's mean, drops the mean, and takes
  the root (dB).
* **Wasserstein**: the exact 1-Wasserstein distance between all values of truth and prediction
  pooled over space and time, missing values counted as 0 (scipy's ``wasserstein_distance_nd``
  on 1-D samples is the exact CDF distance). climdl's ``wasserstein`` integrates the CDFs of fine
  histograms (bounded memory, missing values left out); this one must hold both series in
  memory (sorted float32 copies: 8 bytes per value), so it is left out, with a warning, above
  :data:`EXACT_W1_MAX_VALUES` values.

Seasons select the same days as the benchmark's ``time.season`` filter. For an ensemble, as for
every row, climdl reports the mean over the members of each member's value. As in the benchmark's
code, the prediction is taken as it is for the spectrum and the Wasserstein distance (climdl's
own diagnostics mask it where the truth is missing): where the truth has gaps (a sea mask) and the
prediction has values, both count, the truth's gaps as 0.
"""

from __future__ import annotations

import logging

import dask
import numpy as np
import xarray as xr
from dask.delayed import Delayed

from climdl.errors import DataError
from climdl.evaluation import _reduce, _time
from climdl.evaluation.spectra import spectrum_pair

log = logging.getLogger(__name__)

#: Values (space x time) above which the exact Wasserstein distance is left out: its two sorted
#: float32 copies would take more than 2 GiB.
EXACT_W1_MAX_VALUES = 2**28

#: The floor of the benchmark's spectral ratio and of its denominator.
_FLOOR = 1e-30


def radial_index(ny: int, nx: int) -> np.ndarray:
    """The benchmark's annulus of every cell of an *unshifted* FFT of a ``(ny, nx)`` field.

    On the shifted spectrum the annulus is ``floor(hypot(i - (ny - 1) / 2, j - (nx - 1) / 2))``;
    :func:`numpy.fft.ifftshift` carries that map back onto the unshifted cells."""
    i, j = np.indices((ny, nx))
    r = np.hypot(i - (ny - 1) / 2.0, j - (nx - 1) / 2.0).astype(np.int64)
    return np.fft.ifftshift(r)


def _block_power(x: np.ndarray) -> np.ndarray:
    """The sum over a block's days of the FFT power (missing values as 0), and the day count:
    ``(1, ny * nx + 1)``."""
    x = np.nan_to_num(np.asarray(x), nan=0.0)
    out = np.zeros((1, x.shape[1] * x.shape[2] + 1))
    for start in range(0, x.shape[0], 64):  # bounded complex temporaries
        spec = np.fft.fft2(x[start : start + 64].astype(np.float64), axes=(-2, -1))
        out[0, :-1] += (spec.real**2 + spec.imag**2).sum(axis=0).ravel()
    out[0, -1] = x.shape[0]
    return out


def _profile(total: np.ndarray, index: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The mean day's power (``total[:-1] / total[-1]``) averaged over each annulus."""
    return np.bincount(index, weights=total[:-1]) / np.maximum(counts, 1) / total[-1]


def psd(da: xr.DataArray, *, season: str | None = None) -> xr.DataArray:
    """The benchmark's time-mean radially averaged power spectrum of ``da`` (lazy on Dask).

    Returns a DataArray over ``bin`` (the integer annulus, in pixels from the array centre).
    The radial average is linear, so the days' power is summed first and averaged once: the
    same numbers as averaging each day's profile.

    Raises:
        DataError: ``da`` is not ``(time, y, x)``.
    """
    x = _time.select_season(_reduce.time_first(da), season)
    if x.ndim != 3:
        raise DataError(f"a spectrum needs (time, y, x) data; got dims {x.dims}.")
    ny, nx = x.shape[1], x.shape[2]
    index = radial_index(ny, nx).ravel()
    counts = np.bincount(index)
    if _reduce.is_dask(x):
        arr = x.data.rechunk({1: -1, 2: -1})
        parts = arr.map_blocks(
            _block_power,
            chunks=((1,) * arr.numblocks[0], (ny * nx + 1,)),
            drop_axis=2,
            dtype=np.float64,
        )
        profile = (
            parts.sum(axis=0)
            .rechunk(-1)
            .map_blocks(
                _profile, index=index, counts=counts, chunks=(counts.size,), dtype=np.float64
            )
        )
    else:
        profile = _profile(_block_power(np.asarray(x.values))[0], index, counts)
    return xr.DataArray(
        profile,
        dims=("bin",),
        coords={"bin": ("bin", np.arange(counts.size), {"long_name": "annulus (pixels)"})},
        name="psd_mlbench",
        attrs={"units": f"({da.attrs.get('units', '1')})2", "long_name": "ML-Bench PSD"},
    )


def ralsd(psd_truth: xr.DataArray | np.ndarray, psd_pred: xr.DataArray | np.ndarray) -> float:
    """The benchmark's RALSD: the mean over all annuli of the squared dB ratio (dB^2).

    Raises:
        DataError: the spectra have different lengths.
    """
    a, b = spectrum_pair(psd_truth, psd_pred)
    ratio = a / np.maximum(b, _FLOOR)
    return float(np.mean((10.0 * np.log10(np.maximum(ratio, _FLOOR))) ** 2))


class _Series:
    """A lazy series handed to a Dask task untouched (Dask would compute a DataArray argument
    whole; the task reads it block by block instead)."""

    def __init__(self, da: xr.DataArray) -> None:
        self.da = da


def _sorted_values(da: xr.DataArray) -> np.ndarray:
    """All values of ``da`` as float32, missing as 0, sorted: read a block of days at a time
    into one array (no second copy of the series)."""
    out = np.empty(da.size, dtype=np.float32)
    per_day = max(1, da.size // max(da.shape[0], 1))
    step = max(1, (16 << 20) // per_day)  # ~64 MB of float32 per read
    for start in range(0, da.shape[0], step):
        part = da.isel(time=slice(start, start + step))
        # inside a Dask task: computed in this thread (no nested pool, no global setting)
        values = part.compute(scheduler="synchronous").values
        block = np.asarray(values, dtype=np.float32).ravel()
        out[start * per_day : start * per_day + block.size] = np.nan_to_num(
            block, nan=0.0, posinf=np.inf, neginf=-np.inf
        )
    out.sort()
    return out


def _exact_w1(truth: _Series, pred: _Series) -> float:
    """Exact W1 of two equally sized samples: the mean gap between their order statistics."""
    a = _sorted_values(truth.da)
    b = _sorted_values(pred.da)
    if a.size == 0:
        return float("nan")
    total = 0.0
    for start in range(0, a.size, 1 << 22):  # float64 sums over bounded slices
        sl = slice(start, start + (1 << 22))
        total += float(np.abs(a[sl].astype(np.float64) - b[sl]).sum())
    return total / a.size


def wasserstein(
    truth: xr.DataArray, pred: xr.DataArray, *, season: str | None = None
) -> float | Delayed:
    """The benchmark's Wasserstein distance of all values (missing as 0); lazy on Dask.

    Both series are held in memory, sorted (4 bytes per value each), and read a block at a
    time; NaN, with a warning, above :data:`EXACT_W1_MAX_VALUES` values. Truth and prediction
    must be aligned (same shape)."""
    t = _time.select_season(_reduce.time_first(truth), season)
    p = _time.select_season(_reduce.time_first(pred), season)
    if t.shape != p.shape:
        raise DataError(f"truth {t.shape} and prediction {p.shape} differ in shape.")
    if t.size > EXACT_W1_MAX_VALUES:
        log.warning(
            "%s: the benchmark's exact Wasserstein distance needs all %d values of each series "
            "in memory; left out above %d (climdl's histogram-based one is reported)",
            truth.name,
            t.size,
            EXACT_W1_MAX_VALUES,
        )
        return float("nan")
    if _reduce.is_dask(t) or _reduce.is_dask(p):
        return dask.delayed(_exact_w1, pure=False)(_Series(t), _Series(p))
    return _exact_w1(_Series(t), _Series(p))
