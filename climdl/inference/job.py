"""One downscaling run's fixed context, and the work of one chunk of time.

:class:`JobConfig` holds everything that defines a run (plain, JSON-serialisable values), so the
same :class:`Job` can be rebuilt in another process: a Dask worker or another rank. A job loads the
emulators, opens the predictors lazily, checks them against the checkpoints and prepares the grid
adapter once; then :meth:`Job.read` and :meth:`Job.compute` turn chunk ``i`` of the time axis
into a CF ``xr.Dataset``. With generative checkpoints a chunk holds ``members`` samples of each
day (a ``member`` dimension), computed in batches of (day, member) pairs whose noise depends on
the day's date and the member alone (:mod:`climdl.inference.members`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import dask
import dask.threaded
import numpy as np
import torch
import xarray as xr

from climdl.errors import ConfigError
from climdl.inference.emulators import EmulatorSet, Output, as_numpy
from climdl.inference.inputs import (
    GridAdapter,
    Regrid,
    check_finite,
    check_ranges,
    open_inputs,
)
from climdl.inference.members import (
    check_option_values,
    day_keys,
    default_chunk_days,
    member_batches,
    resolve_members,
)
from climdl.inference.output import Format, chunk_dataset, encoding
from climdl.inference.parts import FINGERPRINTS, file_fingerprint
from climdl.preprocess.device import resolve_device
from climdl.tasks.speed import use_channels_last

#: Dask's threaded scheduler as a function: named by a string ("threads"), Dask first imports
#: ``distributed`` (0.1-0.3 s) to look for a client, which a chunk read never uses.
THREADS = dask.threaded.get


@dataclass(frozen=True)
class JobConfig:
    """What defines a downscaling run (see :func:`climdl.inference.downscale` for each field)."""

    checkpoints: tuple[str, ...]
    inputs: tuple[str, ...] | None = None
    catalog: str | None = None
    period: str | None = None
    kind: Literal["perfect", "imperfect"] = "imperfect"
    gcm: str | None = None
    start: str | None = None
    end: str | None = None
    regrid: Regrid = "conservative"
    min_coverage: float = 0.999
    device: str = "auto"
    precision: str = "32"
    batch_size: int | None = None
    chunk_days: int | None = None
    fmt: Format = "cf"
    emulator_output: Output = "emulator"
    forcing: str | None = None
    range_check: bool = True
    members: int | None = None
    seed: int | None = None
    sampler_steps: int | None = None
    block_rows: int | None = None
    channels_last: bool | None = None

    def to_json(self) -> str:
        """The configuration as sorted JSON (stored in the parts folder's manifest)."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> JobConfig:
        """The configuration written by :meth:`to_json`."""
        d = json.loads(text)
        for key in ("checkpoints", "inputs"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        return cls(**d)


def _autocast(precision: str, device: torch.device) -> torch.dtype | None:
    if precision in ("32", "32-true", "fp32"):
        return None
    if precision in ("bf16", "bf16-mixed"):
        return torch.bfloat16
    if precision in ("16", "16-mixed", "fp16"):
        if device.type != "cuda":
            raise ConfigError("--precision 16 needs a CUDA device; use bf16 or 32 on the CPU.")
        return torch.float16
    raise ConfigError(f"unknown precision {precision!r}; choose 32, bf16 or 16.")


def _aux(
    emulators: EmulatorSet,
    time: xr.DataArray,
    forcing: dict[str, list[float]] | None,
    device: torch.device,
) -> dict[str, torch.Tensor]:
    from climdl.data.forcing import day_of_year_features, forcing_from_table

    doy = day_of_year_features(time)
    out = {"doy_sin": doy[:, 0], "doy_cos": doy[:, 1]}
    rest = [n for n in emulators.aux_names if n not in out]
    if rest:
        if forcing is None:
            raise ConfigError(
                f"the emulator needs the forcing series {', '.join(rest)}; give --forcing CSV."
            )
        values, names = forcing_from_table(time, forcing)
        out |= {n: values[:, i] for i, n in enumerate(names)}
        lacking = [n for n in rest if n not in out]
        if lacking:
            raise ConfigError(f"the forcing table lacks {', '.join(lacking)}.")
    return {
        k: torch.from_numpy(np.ascontiguousarray(v, np.float32)).to(device) for k, v in out.items()
    }


class Job:
    """The loaded emulators, the opened predictors and the grid adapter of one run."""

    def __init__(self, config: JobConfig) -> None:
        if (config.chunk_days is not None and config.chunk_days < 1) or (
            config.batch_size is not None and config.batch_size < 1
        ):
            raise ConfigError("--chunk-days and --batch-size must be positive.")
        if not 0.0 <= config.min_coverage <= 1.0:  # NaN too
            raise ConfigError(
                f"--min-coverage must lie between 0 and 1, got {config.min_coverage}."
            )
        check_option_values(config.members, config.seed, config.sampler_steps)
        self.config = config
        self.device = resolve_device(config.device)
        # CPU: small batches cost no speed and keep the activations' memory low; GPU: fill it
        self.batch_size = config.batch_size or (256 if self.device.type == "cuda" else 16)
        self.amp = _autocast(config.precision, self.device)
        self.channels_last = use_channels_last(self.device, config.precision, config.channels_last)
        self.emulators = EmulatorSet(
            list(config.checkpoints),
            output=config.emulator_output,
            device=self.device,
            block_rows=config.block_rows,
            channels_last=self.channels_last,
        )
        self.members = resolve_members(
            generative=self.emulators.generative,
            first=str(config.checkpoints[0]),
            default_members=self.emulators.default_members(),
            members=config.members,
            seed=config.seed,
            sampler_steps=config.sampler_steps,
            fmt=config.fmt,
            output=config.emulator_output,
        )
        self.seed = config.seed or 0
        self.steps = self.emulators.sampler_steps(config.sampler_steps) if self.members else []
        self.chunk_days = config.chunk_days or default_chunk_days(self.members)
        self.ds, self.source = open_inputs(
            list(config.inputs) if config.inputs else None,
            self.emulators.variables,
            catalog=config.catalog,
            period=config.period,
            kind=config.kind,
            gcm=config.gcm,
            start=config.start,
            end=config.end,
        )
        try:  # a run refused after the inputs are open must not leave them open
            self._check_and_adapt(config)
        except BaseException:
            self.ds.close()
            raise
        t = self.ds.time
        self.calendar = str(t.dt.calendar) if hasattr(t.dt, "calendar") else "standard"
        self.targets = self.emulators.targets
        self.n_days = int(self.ds.sizes["time"])
        self.starts = list(range(0, self.n_days, self.chunk_days))
        self.space = self.ds[self.variables[0]].dims[-2:]

    def _check_and_adapt(self, config: JobConfig) -> None:
        """Units against the checkpoints, the grid adapter and the forcing table."""
        self.variables = self.emulators.variables
        self.emulators.check_units(
            {v: str(self.ds[v].attrs.get("units", "")) for v in self.variables}
        )
        self.adapter = GridAdapter(
            self.ds, self.emulators.spec.coarse_grid, config.regrid, config.min_coverage
        )
        if config.range_check:  # the first day now: a units mistake stops before any output
            first = self.ds[self.variables].isel(time=slice(0, 1))
            with dask.config.set(scheduler=THREADS):
                day = first.to_array("channel").transpose("time", "channel", ...).values
            self._check_ranges(
                self.adapter(torch.from_numpy(np.asarray(day, np.float32)).to(self.device)),
                [str(t) for t in first.time.values],
            )
        self.forcing: dict[str, list[float]] | None = None
        if config.forcing is not None:
            from climdl.data.forcing import read_forcing_table

            self.forcing = read_forcing_table(config.forcing)
        else:
            self.forcing = self.emulators.forcing_table()

    def _check_ranges(self, x: torch.Tensor, times: list[str]) -> None:
        """Predictors ``x[T, C, h, w]`` within their variables' plausible ranges (DataError)."""
        from climdl.data.files import describe

        files = self.source.files
        check_ranges(
            x,
            self.variables,
            times,
            attrs={v: self.ds[v].attrs for v in self.variables},
            where=describe(files) if files else None,
        )

    def chunk_length(self, i: int) -> int:
        """Days in chunk ``i`` (the last chunk may be short)."""
        return min(self.chunk_days, self.n_days - self.starts[i])

    def manifest(self) -> dict[str, Any]:
        """What a resumed run must share with the interrupted one.

        Paths alone would let a file rewritten in place mix two inputs in one output: each input
        carries its size, modification time and hashed ends, each checkpoint its full SHA-256."""
        c = self.config
        inputs = [str(p.resolve()) for p in self.source.files]
        fingerprints: dict[str, dict[str, int | str]] = {p: file_fingerprint(p) for p in inputs}
        for m in self.emulators.members:
            fingerprints[str(m.path.resolve())] = {"sha256": m.sha256}
        ensemble = (
            {"members": self.members, "seed": self.seed, "sampler_steps": self.steps}
            if self.members
            else {}
        )
        return ensemble | {
            "checkpoints": [e["sha256"] for e in self.emulators.describe()],
            "inputs": inputs,
            FINGERPRINTS: fingerprints,
            "first_day": str(self.ds.time.values[0]),
            "last_day": str(self.ds.time.values[-1]),
            "n_days": self.n_days,
            "chunk_days": self.chunk_days,
            "regrid": self.adapter.describe(),
            "format": c.fmt,
            "output": c.emulator_output,
            "precision": c.precision,
            "batch_size": self.batch_size,
        }

    def read(self, i: int) -> tuple[np.ndarray, xr.DataArray]:
        """Chunk ``i``'s predictors [T, C, h, w] (float32) and times, read from the files."""
        return self._read(slice(self.starts[i], self.starts[i] + self.chunk_days))

    def read_days(self, days: np.ndarray) -> tuple[np.ndarray, xr.DataArray]:
        """The predictors [T, C, h, w] (float32) and times of the days at indices ``days``."""
        return self._read(np.asarray(days, dtype=np.int64))

    def _read(self, when: slice | np.ndarray) -> tuple[np.ndarray, xr.DataArray]:
        part = self.ds[self.variables].isel(time=when)
        with dask.config.set(scheduler=THREADS):
            arr = part.to_array("channel").transpose("time", "channel", *self.space).values
        return np.ascontiguousarray(arr, dtype=np.float32), part.time.load()

    def model_inputs(
        self, x_np: np.ndarray, times: xr.DataArray
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Predictors [T, C, h, w] regridded on the device and checked, and the 1-D inputs."""
        x_host = torch.from_numpy(x_np)
        if self.device.type == "cuda":  # page-locked: the copy runs asynchronously, at full speed
            x_host = x_host.pin_memory()
        x = self.adapter(x_host.to(self.device, non_blocking=True))
        check_finite(x, self.variables, [str(t) for t in times.values])
        if self.config.range_check:
            self._check_ranges(x, [str(t) for t in times.values])
        return x, _aux(self.emulators, times, self.forcing, self.device)

    def compute(
        self,
        x_np: np.ndarray,
        times: xr.DataArray,
        emit: Callable[[int, np.ndarray], None] | None = None,
    ) -> xr.Dataset:
        """Regrid on the device, check, predict in batches: the chunk as a CF Dataset.

        ``emit(offset, values)`` (deterministic emulators) receives each batch's predictions
        [B, V, H, W] as soon as they are computed (a view that is not written again), with the
        batch's first day counted from the chunk's start: the streamed output compresses them
        while the next batches run."""
        bs = self.batch_size
        x, aux = self.model_inputs(x_np, times)
        if self.members:
            return self._compute_members(x, aux, times)
        out = np.empty((x.shape[0], len(self.targets), *self.emulators.spec.out_size), np.float32)
        for a in range(0, x.shape[0], bs):  # filled in place: no list of batches, no concatenation
            out[a : a + bs] = as_numpy(
                self.emulators.predict(
                    x[a : a + bs], {n: v[a : a + bs] for n, v in aux.items()}, self.amp
                )
            )
            if emit is not None:
                emit(a, out[a : a + bs])
        return chunk_dataset(out, times, self.emulators.spec, self.targets, self.config.fmt)

    def _compute_members(
        self, x: torch.Tensor, aux: dict[str, torch.Tensor], times: xr.DataArray
    ) -> xr.Dataset:
        """The chunk's ensemble [T, M, V, H, W], in batches of at most ``batch_size`` samples
        (days x members); each member's noise is fixed by its day and index alone."""
        assert self.members is not None
        keys = day_keys(times)
        shape = (x.shape[0], self.members, len(self.targets), *self.emulators.spec.out_size)
        out = np.empty(shape, np.float32)
        steps = self.config.sampler_steps
        for days, mem in member_batches(x.shape[0], self.members, self.batch_size):
            out[days, mem] = as_numpy(
                self.emulators.predict_members(
                    x[days],
                    {n: v[days] for n, v in aux.items()},
                    keys=keys[days],
                    seed=self.seed,
                    members=range(mem.start, mem.stop),
                    steps=steps,
                    autocast=self.amp,
                )
            )
        return chunk_dataset(
            out, times, self.emulators.spec, self.targets, self.config.fmt, members=self.members
        )

    def part_encoding(self, chunk: xr.Dataset) -> dict[str, dict[str, Any]]:
        """Encoding of a stored chunk: uncompressed (the join compresses) and without a fill
        value (NaN stays NaN, and xarray need not copy the data to substitute it)."""
        enc = encoding(chunk, self.targets, self.calendar, self.config.fmt, compress=False)
        for t in self.targets:
            enc[t]["_FillValue"] = None
        return enc

    def final_encoding(self) -> dict[str, dict[str, Any]]:
        """Encoding of the joined output (compressed, chunked for the whole series)."""
        lead = (1,) if self.members is None else (1, self.members)
        sample = chunk_dataset(
            np.zeros((*lead, len(self.targets), *self.emulators.spec.out_size), np.float32),
            self.ds.time[:1],
            self.emulators.spec,
            self.targets,
            self.config.fmt,
            members=self.members,
        )
        return encoding(sample, self.targets, self.calendar, self.config.fmt, n_time=self.n_days)
