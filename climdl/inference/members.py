"""Ensemble members of a generative downscaling run: their noise, options and coordinate.

A generative emulator turns standard-normal noise into one sample of the fine fields given the
coarse predictors (:meth:`~climdl.tasks.generative.GenerativeDownscalingTask.sample_physical`,
deterministic given the noise). Member ``k`` of day ``d`` is therefore fixed by its noise alone,
which is drawn here from a generator seeded by ``(seed, the emulator's targets, day, k)``: the
same member comes out whatever the chunking, the batch size, the rank or Dask worker that
computes it, the ``--start`` of the run or the order of the checkpoints. The day is keyed by its
calendar date (``year*10000 + month*100 + day``), which every calendar has, not by its position
in the series.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import xarray as xr

from climdl.errors import ConfigError

MEMBER = "member"
"""Name of the ensemble dimension and its coordinate (CORDEX ML-Bench, CF ``realization``)."""
MEMBER_ATTRS = {"standard_name": "realization", "long_name": "ensemble member", "units": "1"}
MLBENCH_MEMBERS = 10
"""Members a CORDEX ML-Bench generative submission carries."""
SAMPLE_CONFIG = "configs/emulator/sample_generative.yaml"
BASELINE_REFUSAL = (
    "--baseline is not offered with generative checkpoints; run it with the stage-1 "
    "(deterministic) checkpoint instead."
)
_YEAR_DAYS = 365
_MASK63 = (1 << 63) - 1


def day_key(t: Any) -> int:
    """``year*10000 + month*100 + day`` of one date (cftime, datetime, pandas or numpy).

    Args:
        t: the day's date, in any calendar.

    Returns:
        The key (e.g. 19810230 for 30 February 1981 of a 360-day calendar).
    """
    if isinstance(t, np.datetime64):
        return day_keys(np.asarray([t]))[0]
    return int(t.year) * 10000 + int(t.month) * 100 + int(t.day)


def day_keys(times: xr.DataArray | np.ndarray | Sequence[Any]) -> list[int]:
    """:func:`day_key` of every date of ``times`` (vectorised for numpy datetimes).

    Args:
        times: dates (an xarray time coordinate, a numpy array or a sequence).

    Returns:
        One key per date, in order.
    """
    values = np.asarray(times.values if isinstance(times, xr.DataArray) else times)
    if np.issubdtype(values.dtype, np.datetime64):
        d = values.astype("datetime64[D]")
        months = d.astype("datetime64[M]")
        year = months.astype(np.int64) // 12 + 1970
        month = months.astype(np.int64) % 12 + 1
        day = (d - months).astype(np.int64) + 1
        return [int(k) for k in year * 10000 + month * 100 + day]
    return [day_key(t) for t in values.ravel()]


def target_stream(targets: Sequence[str]) -> int:
    """A stable number for an emulator's targets (CRC-32 of their names): the noise of the pr
    emulator differs from the tasmax one's, and neither depends on the order or the number of
    the checkpoints given to the run."""
    return zlib.crc32(",".join(targets).encode())


def member_seed(seed: int, emulator: int, key: int, member: int) -> int:
    """The 63-bit seed of member ``member`` of the day ``key`` for the emulator ``emulator``.

    Args:
        seed: the run's ``--seed`` (non-negative).
        emulator: the emulator's :func:`target_stream` (pr and tasmax differ).
        key: the day's :func:`day_key`.
        member: the member's index (0-based).

    Returns:
        A seed for ``torch.Generator.manual_seed``.
    """
    words = np.random.SeedSequence([seed, emulator, key, member]).generate_state(2, np.uint32)
    return ((int(words[0]) << 32) | int(words[1])) & _MASK63


def member_noise(
    seed: int,
    emulator: int,
    keys: Sequence[int],
    members: Sequence[int],
    shape: Sequence[int],
) -> torch.Tensor:
    """Standard-normal noise [B, M, *shape] (float32, CPU) of ``members`` on the days ``keys``.

    Each (day, member) has its own generator (:func:`member_seed`), so a member's noise does
    not depend on which other days or members share its batch.

    Args:
        seed: the run's seed.
        emulator: the emulator's :func:`target_stream`.
        keys: :func:`day_key` of each day of the batch (B of them).
        members: indices of the members wanted (M of them).
        shape: one sample's shape, [V, H, W] of the emulator's targets.

    Returns:
        The noise.
    """
    out = torch.empty((len(keys), len(members), *shape), dtype=torch.float32)
    gen = torch.Generator("cpu")
    for b, key in enumerate(keys):
        for j, k in enumerate(members):
            gen.manual_seed(member_seed(seed, emulator, key, k))
            out[b, j] = torch.randn(tuple(shape), generator=gen, dtype=torch.float32)
    return out


def default_chunk_days(members: int | None) -> int:
    """Days per chunk when ``--chunk-days`` is not given: a year, divided among the members
    (``max(1, 365 // N)``) so that a chunk's memory does not grow with N.

    Args:
        members: members of the run (None: a deterministic run).

    Returns:
        Days per chunk.
    """
    return _YEAR_DAYS if members is None else max(1, _YEAR_DAYS // members)


def member_coord(n: int) -> xr.Variable:
    """The ``member`` coordinate 0..n-1 (int32, CF ``realization``).

    Args:
        n: number of members.

    Returns:
        The coordinate variable.
    """
    return xr.Variable((MEMBER,), np.arange(n, dtype=np.int32), dict(MEMBER_ATTRS))


def sampler_description(steps: Sequence[int]) -> str:
    """The ``sampler`` global attribute: ``flow matching, Heun, K steps``.

    Args:
        steps: the ODE steps of each generative emulator of the run.

    Returns:
        One line (steps listed per emulator when they differ).
    """
    kinds = sorted(set(steps))
    what = " / ".join(str(k) for k in kinds) if len(kinds) > 1 else str(kinds[0])
    return f"flow matching, Heun, {what} steps"


def check_option_values(members: int | None, seed: int | None, sampler_steps: int | None) -> None:
    """Out-of-range ``--members``, ``--seed`` or ``--sampler-steps`` (before anything loads).

    Args:
        members: the requested members (None: not given).
        seed: the requested seed (None: not given).
        sampler_steps: the requested ODE steps (None: not given).

    Raises:
        ConfigError: a value out of range.
    """
    if members is not None and members < 1:
        raise ConfigError("--members must be at least 1.")
    if sampler_steps is not None and sampler_steps < 1:
        raise ConfigError("--sampler-steps must be at least 1.")
    if seed is not None and not 0 <= seed < 2**63:  # stored as a 64-bit NetCDF attribute
        raise ConfigError(f"--seed must be an integer from 0 to 2**63-1, got {seed}.")


def resolve_members(
    *,
    generative: bool,
    first: str,
    default_members: int | None,
    members: int | None,
    seed: int | None,
    sampler_steps: int | None,
    fmt: str,
    output: str,
) -> int | None:
    """The run's number of members, or None for a deterministic run; refuses options that do
    not fit the loaded checkpoints.

    Args:
        generative: whether the run's emulators are generative (all of them, or none).
        first: the first checkpoint's path (named in the errors).
        default_members: the first generative emulator's ``hp.members`` (used without
            ``--members``).
        members: ``--members`` (None: not given).
        seed: ``--seed`` (None: not given).
        sampler_steps: ``--sampler-steps`` (None: not given).
        fmt: ``cf`` or ``mlbench``.
        output: ``emulator`` or ``baseline``.

    Returns:
        The members (None: a deterministic run).

    Raises:
        ConfigError: an option the checkpoints cannot honour.
    """
    check_option_values(members, seed, sampler_steps)
    if not generative:
        if members is not None:
            raise ConfigError(
                f"{first} is deterministic; --members needs generative checkpoints "
                f"({SAMPLE_CONFIG})."
            )
        if seed is not None or sampler_steps is not None:
            raise ConfigError(
                f"--seed and --sampler-steps need generative checkpoints; {first} is deterministic."
            )
        return None
    if output != "emulator":
        raise ConfigError(BASELINE_REFUSAL)
    n = members if members is not None else int(default_members or MLBENCH_MEMBERS)
    if fmt == "mlbench" and n != MLBENCH_MEMBERS:
        raise ConfigError(
            f"--format mlbench needs exactly {MLBENCH_MEMBERS} members (the benchmark's "
            f"generative layout), not {n}; pass --members {MLBENCH_MEMBERS}."
        )
    return n


def member_batches(n_days: int, members: int, batch_size: int) -> list[tuple[slice, slice]]:
    """(days, members) blocks covering ``n_days`` x ``members`` with at most ``batch_size``
    samples each: whole days of all members when a day fits, else slices of one day's members.

    Args:
        n_days: days of the chunk.
        members: members per day.
        batch_size: samples per forward pass.

    Returns:
        The blocks, in day then member order.
    """
    if members <= batch_size:
        step = batch_size // members
        return [
            (slice(a, min(a + step, n_days)), slice(0, members)) for a in range(0, n_days, step)
        ]
    return [
        (slice(d, d + 1), slice(m, min(m + batch_size, members)))
        for d in range(n_days)
        for m in range(0, members, batch_size)
    ]
