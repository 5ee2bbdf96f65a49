"""``downscale``: a trained emulator applied to a predictor series, streamed to CF NetCDF.

Time is processed in fixed chunks (``chunk_days``, a year by default): one background I/O thread
reads the next chunk and writes the previous one while the current one is regridded (on the
device), normalised and passed through the network in batches. Peak memory is therefore a few chunks
whatever the length of the series. Each finished chunk is stored as its own file
(:mod:`climdl.inference.parts`), which makes runs resumable and lets several ranks split the
chunks (``torchrun --nproc-per-node N -m climdl downscale ...`` or SLURM ``srun``); the chunks are
joined into one compressed file at the end. Without an output path the predictions come back as
an in-memory ``xr.Dataset``.
"""

from __future__ import annotations

import logging
import os
import time as _time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import dask
import numpy as np
import torch
import xarray as xr

from climdl.errors import ConfigError
from climdl.inference.emulators import EmulatorSet, Output, as_numpy
from climdl.inference.inputs import GridAdapter, InputSource, Regrid, check_finite, open_inputs
from climdl.inference.output import Format, chunk_dataset, default_output, encoding, global_attrs
from climdl.inference.parts import PartStore

log = logging.getLogger(__name__)

Precision = Literal["32", "bf16", "16"]
Progress = Callable[[int, int], None]


@dataclass
class DownscaleResult:
    """What a run produced: the dataset (lazily reopened from the file when one was written)."""

    dataset: xr.Dataset
    path: Path | None
    n_days: int
    seconds: float
    device: str
    grid: str
    chunks_computed: int
    chunks_resumed: int = 0
    rank: int = 0
    world_size: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def years_per_second(self) -> float:
        return self.n_days / 365.25 / max(self.seconds, 1e-9)


def _device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA device is available; use --device cpu.")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise ConfigError(f"unknown device {device!r}; choose auto, cpu or cuda.")
    return torch.device(device)


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


def _dist() -> tuple[int, int]:
    """(rank, world size) from torchrun/SLURM variables; joins a gloo group for barriers."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size()


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def _aux(emulators: EmulatorSet, time: xr.DataArray, forcing: dict[str, list[float]] | None,
         device: torch.device) -> dict[str, torch.Tensor]:
    from climdl.data.emulator_data import day_of_year_features, forcing_from_table

    doy = day_of_year_features(time)
    out = {"doy_sin": doy[:, 0], "doy_cos": doy[:, 1]}
    rest = [n for n in emulators.aux_names if n not in out]
    if rest:
        if forcing is None:
            raise ConfigError(f"the emulator needs the forcing series {', '.join(rest)}; give --forcing CSV.")
        values, names = forcing_from_table(time, forcing)
        out |= {n: values[:, i] for i, n in enumerate(names)}
        lacking = [n for n in rest if n not in out]
        if lacking:
            raise ConfigError(f"the forcing table lacks {', '.join(lacking)}.")
    return {k: torch.from_numpy(np.ascontiguousarray(v, np.float32)).to(device) for k, v in out.items()}


def downscale(
    checkpoints: str | Path | Sequence[str | Path],
    inputs: Sequence[str] | str | None = None,
    output: str | Path | None = None,
    *,
    catalog: str | None = None,
    period: str | None = None,
    kind: Literal["perfect", "imperfect"] = "imperfect",
    gcm: str | None = None,
    start: str | None = None,
    end: str | None = None,
    regrid: Regrid = "conservative",
    min_coverage: float = 0.999,
    device: str = "auto",
    precision: Precision | str = "32",
    batch_size: int = 64,
    chunk_days: int = 365,
    fmt: Format = "cf",
    emulator_output: Output = "emulator",
    forcing: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    history: str | None = None,
    progress: Progress | None = None,
    max_chunks: int | None = None,
) -> DownscaleResult:
    """Downscale a predictor series with one or several trained emulators.

    Args:
        checkpoints: emulator checkpoint(s) from ``climdl train`` (one per target, or joint).
        inputs: predictor files or globs (or use ``catalog`` + ``period``).
        output: NetCDF file (or an existing folder: the name is derived; with ``fmt="mlbench"``
            the submission tree is built inside it). ``None``: return the predictions in memory.
        catalog, period, kind, gcm: a catalog entry's test predictors (``kind`` perfect|imperfect).
        start, end: inclusive dates restricting the period.
        regrid: how predictors on another grid are remapped: ``conservative`` or ``bilinear``.
        min_coverage: conservative remapping refuses training cells covered less than this.
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        precision: ``32``, ``bf16`` (autocast, GPUs) or ``16`` (CUDA only).
        batch_size: days per forward pass.
        chunk_days: days per chunk (read, computed and stored together; the resume unit).
        fmt: ``cf`` (compressed CF-1.10) or ``mlbench`` (the benchmark's submission layout).
        emulator_output: ``emulator`` or ``baseline`` (the fitted interpolation baseline).
        forcing: CSV of yearly forcing series, when the emulator was trained with one and the
            table in its checkpoint does not cover the period.
        resume: continue an interrupted run of the same output from its finished chunks.
        overwrite: replace an existing output (and discard an interrupted run).
        history: the command line for the ``history`` attribute.
        progress: ``callback(days_done, days_total)``.
        max_chunks: stop after computing this many chunks, leaving the run resumable (tests).
    """
    t0 = _time.perf_counter()
    if chunk_days < 1 or batch_size < 1:
        raise ConfigError("--chunk-days and --batch-size must be positive.")
    ckpts = [checkpoints] if isinstance(checkpoints, (str, Path)) else list(checkpoints)
    dev = _device(device)
    amp = _autocast(str(precision), dev)
    emulators = EmulatorSet(ckpts, output=emulator_output, device=dev)
    inputs_list = [inputs] if isinstance(inputs, str) else (list(inputs) if inputs else None)
    ds, source = open_inputs(inputs_list, emulators.variables, catalog=catalog, period=period, kind=kind,
                             gcm=gcm, start=start, end=end)
    emulators.check_units({v: str(ds[v].attrs.get("units", "")) for v in emulators.variables})
    adapter = GridAdapter(ds, emulators.spec["coarse_grid"], regrid, min_coverage)
    table = None
    if forcing is not None:
        from climdl.data.emulator_data import read_forcing_table

        table = read_forcing_table(forcing)
    elif emulators.forcing_table() is not None:
        table = emulators.forcing_table()
    calendar = str(ds.time.dt.calendar) if hasattr(ds.time.dt, "calendar") else "standard"
    targets = emulators.targets
    n_days = int(ds.sizes["time"])
    starts = list(range(0, n_days, chunk_days))
    experiment = emulators.members[0].experiment
    out_path = _resolve_output(output, source, targets, fmt, experiment)

    rank, world = _dist() if out_path is not None else (0, 1)
    store = None
    attrs = None
    if out_path is not None:
        manifest = {
            "checkpoints": [e["sha256"] for e in emulators.describe()],
            "inputs": [str(p.resolve()) for p in source.files],
            "first_day": str(ds.time.values[0]), "last_day": str(ds.time.values[-1]), "n_days": n_days,
            "chunk_days": chunk_days, "regrid": adapter.describe(), "format": fmt,
            "output": emulator_output, "precision": str(precision), "batch_size": batch_size,
        }
        if rank == 0:
            store = PartStore(out_path, manifest, resume=resume, overwrite=overwrite)
        _barrier(world)
        if rank != 0:
            store = PartStore(out_path, manifest, create=False)
        assert store is not None
        attrs = global_attrs(emulators=emulators.describe(), source_files=source.files, kind=source.kind,
                             gcm=source.gcm, domain=source.domain or ds.attrs.get("domain"),
                             regrid=adapter.describe(), history=history or "climdl.inference.downscale()",
                             previous_history=str(ds.attrs["history"]) if "history" in ds.attrs else None,
                             fmt=fmt, output=emulator_output)
    finished = store.done() if store is not None else set()
    todo = [i for i in range(len(starts)) if i % world == rank and i not in finished]
    if max_chunks is not None:
        todo = todo[:max_chunks]
    variables = emulators.variables
    space = ds[variables[0]].dims[-2:]

    def read(i: int) -> tuple[np.ndarray, xr.DataArray]:
        part = ds[variables].isel(time=slice(starts[i], starts[i] + chunk_days))
        with dask.config.set(scheduler="threads"):
            arr = part.to_array("channel").transpose("time", "channel", *space).values
        return np.ascontiguousarray(arr, dtype=np.float32), part.time.load()

    results: list[xr.Dataset] = []
    done_days = sum(min(chunk_days, n_days - starts[i]) for i in finished if i % world == rank)
    if progress:
        progress(done_days, n_days)
    # one I/O thread: reads of the next chunk and writes of the last overlap the computation, but
    # never each other (HDF5 is not thread-safe)
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending_read: Future[tuple[np.ndarray, xr.DataArray]] | None = (
            pool.submit(read, todo[0]) if todo else None)
        pending_write: Future[None] | None = None
        for k, i in enumerate(todo):
            assert pending_read is not None
            x_np, times = pending_read.result()
            pending_read = pool.submit(read, todo[k + 1]) if k + 1 < len(todo) else None
            x = adapter(torch.from_numpy(x_np).to(dev))
            check_finite(x, variables, [str(t) for t in times.values])
            aux = _aux(emulators, times, table, dev)
            preds = [as_numpy(emulators.predict(x[a : a + batch_size],
                                                {n: v[a : a + batch_size] for n, v in aux.items()}, amp))
                     for a in range(0, x.shape[0], batch_size)]
            chunk = chunk_dataset(np.concatenate(preds), times, emulators.spec, targets, fmt)
            if store is None:
                results.append(chunk)
            else:
                if pending_write is not None:
                    pending_write.result()
                enc_part = encoding(chunk, targets, calendar, fmt, compress=False)
                pending_write = pool.submit(store.write, i, chunk, enc_part)
            done_days += int(times.size)
            if progress:
                progress(done_days, n_days)
        if pending_write is not None:
            pending_write.result()
    resumed = len([i for i in finished if i % world == rank])
    if store is None:
        out = xr.concat(results, dim="time", data_vars="minimal", coords="minimal", compat="override",
                        join="override") if results else xr.Dataset()
        return DownscaleResult(out, None, n_days, _time.perf_counter() - t0, str(dev), adapter.describe(),
                               len(todo), rank=rank, world_size=world)
    _barrier(world)
    assert attrs is not None
    if max_chunks is not None and len(store.done()) < len(starts):
        return DownscaleResult(xr.Dataset(), None, n_days, _time.perf_counter() - t0, str(dev),
                               adapter.describe(), len(todo), resumed, rank, world)
    if rank == 0:
        sample = chunk_dataset(np.zeros((1, len(targets), *emulators.spec["out_size"]), np.float32),
                               ds.time[:1], emulators.spec, targets, fmt)
        enc_final = encoding(sample, targets, calendar, fmt)
        _fix_time_chunks(enc_final, targets, n_days)
        store.join(len(starts), enc_final, attrs)
    _barrier(world)
    seconds = _time.perf_counter() - t0
    assert out_path is not None
    reopened = xr.open_dataset(out_path, decode_times=xr.coders.CFDatetimeCoder(use_cftime=True),
                               decode_coords="all", chunks={})
    return DownscaleResult(reopened, out_path, n_days, seconds, str(dev), adapter.describe(), len(todo),
                           resumed, rank, world)


def _fix_time_chunks(enc: dict[str, dict[str, Any]], targets: Sequence[str], n_days: int) -> None:
    """Chunk sizes of the joined file follow the full series length, not the sample's."""
    for t in targets:
        cs = enc[t].get("chunksizes")
        if cs:
            enc[t]["chunksizes"] = (min(n_days, 365), *cs[1:])


def _resolve_output(output: str | Path | None, source: InputSource, targets: Sequence[str],
                    fmt: Format, experiment: str | None) -> Path | None:
    if output is None:
        return None
    out = Path(output)
    if out.is_dir() or str(output).endswith(os.sep):
        stem = source.files[0].stem if len(source.files) == 1 else (
            f"{source.gcm or 'input'}_{source.period or 'series'}")
        return default_output(out, targets=targets, stem=stem, fmt=fmt, domain=source.domain,
                              experiment=experiment, period=source.period, kind=source.kind)
    if out.suffix.lower() not in (".nc", ".nc4"):
        raise ConfigError(f"--output {out} should be a .nc file or an existing folder.")
    return out

