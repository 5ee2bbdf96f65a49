"""Climate-change signal: the change of an index from a historical to a future period.

The CORDEX ML-Bench preprint reports that emulators trained on the historical period alone
underestimate the change signal; this module compares the emulator's signal with the RCM's.
The signal is ``index(future) - index(historical)`` per grid point; for precipitation (and any
variable whose relative change is the physical quantity, ``relative=True``) it is the relative
change in percent, ``100 (future / historical - 1)``, as usual for precipitation projections.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import xarray as xr

from climdl.evaluation.indices import mean

IndexFn = Callable[..., xr.DataArray]

#: Variables whose signal is a relative change (percent).
RELATIVE_VARIABLES = frozenset({"pr"})


def is_relative(variable: str) -> bool:
    """Whether the signal of ``variable`` is given as a relative change."""
    return variable in RELATIVE_VARIABLES


def change(
    historical: xr.DataArray | xr.Dataset,
    future: xr.DataArray | xr.Dataset,
    *,
    relative: bool = False,
) -> xr.DataArray:
    """``future - historical`` of two index fields, or the change in percent if ``relative``."""
    if relative:
        out = (100.0 * (future / historical - 1.0)).where(historical != 0)
        units = "%"
    else:
        out = future - historical
        units = str(getattr(future, "attrs", {}).get("units", ""))
    assert isinstance(out, xr.DataArray)
    out = out.rename("signal")
    out.attrs = {"units": units, "long_name": "climate-change signal (future - historical)"}
    return out


def climate_change_signal(
    historical: xr.DataArray,
    future: xr.DataArray,
    *,
    index_fn: IndexFn = mean,
    relative: bool | None = None,
    season: str | None = None,
    **index_kwargs: Any,
) -> xr.DataArray:
    """Signal of ``index_fn`` (default the mean) between two periods of one simulation.

    ``relative`` defaults to True for precipitation (by the DataArray's name).

    Args:
        historical: the simulation's historical period.
        future: the simulation's future period.
        index_fn: the index whose change is taken (default :func:`~climdl.evaluation.indices.mean`).
        relative: a relative change (percent) instead of a difference; None: by variable.
        season: only the days of ``DJF``, ``MAM``, ``JJA`` or ``SON`` (or the benchmark's words);
            None: all days.
        **index_kwargs: passed to ``index_fn`` (thresholds, quantile).

    Returns:
        The signal per grid point (``future - historical``, or percent when relative).
    """
    rel = is_relative(str(future.name)) if relative is None else relative
    i0 = index_fn(historical, season=season, **index_kwargs)
    i1 = index_fn(future, season=season, **index_kwargs)
    return change(i0, i1, relative=rel)


def signal_bias(
    truth_hist: xr.DataArray,
    truth_future: xr.DataArray,
    pred_hist: xr.DataArray,
    pred_future: xr.DataArray,
    **kwargs: Any,
) -> xr.DataArray:
    """Emulated minus RCM signal per grid point (same index and units as the signals).

    Args:
        truth_hist: the RCM's historical period.
        truth_future: the RCM's future period.
        pred_hist: the emulator's historical period.
        pred_future: the emulator's future period.
        **kwargs: passed to :func:`climate_change_signal` (``index_fn``, ``season``, ...).

    Returns:
        The emulated signal minus the RCM's, per grid point.
    """
    s0 = climate_change_signal(truth_hist, truth_future, **kwargs)
    s1 = climate_change_signal(pred_hist, pred_future, **kwargs)
    out = (s1 - s0).rename("signal_bias")
    out.attrs = {"units": s0.attrs["units"], "long_name": "bias of the climate-change signal"}
    return out
