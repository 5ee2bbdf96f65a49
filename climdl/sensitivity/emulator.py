"""How far a bounded, adversarial nudge of the predictors can move an emulator's answer.

:func:`run_emulator_sensitivity` opens the checkpoints and the predictors exactly as ``climdl
downscale`` does (:class:`climdl.inference.job.Job`: the unit and range checks, the grid adapter,
the day-of-year and forcing inputs), samples days evenly over the series and streams them in
batches through :class:`~climdl.sensitivity.emulator_batch.TargetSensitivity` (the attacks,
their measures and the saliency maps of one target on one batch), once per target of each
checkpoint. Only running sums of the maps and a few numbers per day are kept, so memory does not
grow with the number of days; :mod:`climdl.sensitivity.output` writes ``sensitivity.nc`` and
``summary.csv``. Generative (ensemble) checkpoints are refused: their members are random draws
around the stage-1 mean, whose own checkpoint is the deterministic emulator to analyse.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import xarray as xr

from climdl.errors import ConfigError, DataError, OutputError
from climdl.inference.inputs import Regrid
from climdl.inference.job import Job, JobConfig
from climdl.inference.members import check_option_values
from climdl.sensitivity.attacks import Box
from climdl.sensitivity.bounds import DEFAULT_EMULATOR_BOUNDS, describe, parse_bounds, radius
from climdl.sensitivity.emulator_batch import (
    TargetSensitivity,
    day_seed,
    member_forward,
    saliency_baseline,
    saliency_forward,
    target_forward,
    wet_threshold,
)
from climdl.sensitivity.output import (
    ATTACKS,
    OUTPUT_NAME,
    SUMMARY_NAME,
    SummaryRow,
    TargetMaps,
    check_out_dir,
    emulator_attrs,
    emulator_dataset,
    summary_rows,
    write_outputs,
)
from climdl.sensitivity.staging import staged_run, write_report

__all__ = [
    "ATTACKS",
    "OUTPUT_NAME",
    "SensitivityResult",
    "run_emulator_sensitivity",
    "sample_days",
]

Progress = Callable[[int, int], None]


@dataclass
class SensitivityResult:
    """What :func:`run_emulator_sensitivity` wrote and found.

    Attributes:
        path: the sensitivity NetCDF (``out_dir/sensitivity.nc``).
        summary: one row per target and attack (also in ``out_dir/summary.csv``).
        summary_path: the CSV of the summary.
        seconds: wall time of the run.
        n_days: days analysed.
        device: the device the networks ran on.
        bounds: the bounds used (:func:`climdl.sensitivity.bounds.describe`).
        report_paths: ``report.html`` and ``report.md`` (with ``report=True``), else empty.
    """

    path: Path
    summary: list[SummaryRow]
    summary_path: Path
    seconds: float
    n_days: int
    device: str
    bounds: str
    report_paths: tuple[Path, ...] = ()


def sample_days(n_days: int, days: int | None) -> np.ndarray:
    """``days`` indices spread evenly over ``n_days`` (first and last included); all for None.

    Args:
        n_days: days in the series.
        days: how many to analyse, or None for every day.

    Returns:
        Sorted, distinct day indices.
    """
    if days is None or days >= n_days:
        return np.arange(n_days)
    if days < 1:
        raise ConfigError(f"--days must be at least 1 (or all), got {days}.")
    return np.unique(np.round(np.linspace(0, n_days - 1, days)).astype(np.int64))


GENERATIVE_REFUSAL = (
    "{path} is a generative checkpoint; climdl sensitivity analyses deterministic emulators; "
    "give the generative model's stage-1 checkpoint (its mean)."
)
"""The one sentence refusing a generative checkpoint (``{path}``: the file)."""


def run_emulator_sensitivity(
    checkpoints: str | Path | Sequence[str | Path],
    *,
    inputs: Sequence[str] | str | None = None,
    catalog: str | None = None,
    period: str | None = None,
    kind: Literal["perfect", "imperfect"] = "perfect",
    gcm: str | None = None,
    start: str | None = None,
    end: str | None = None,
    regrid: Regrid = "conservative",
    forcing: str | Path | None = None,
    eps: str | None = None,
    days: int | None = 64,
    pgd_steps: int = 5,
    random_draws: int = 8,
    ig_steps: int = 16,
    seed: int = 0,
    batch_size: int | None = None,
    device: str = "auto",
    out_dir: str | Path,
    overwrite: bool = False,
    history: str | None = None,
    progress: Progress | None = None,
    report: bool = False,
) -> SensitivityResult:
    """Attack emulator(s) within physical bounds on sampled days; write ``sensitivity.nc``.

    The files (and the report) are written into a temporary folder that becomes ``out_dir``'s
    content only once all of them are complete (:func:`climdl.io.staged_folder.staged_folder`):
    a full disk or an interrupt leaves no partial run behind.

    Args:
        checkpoints: emulator checkpoint(s) from ``climdl train``.
        inputs: predictor files or globs (or use ``catalog`` + ``period``).
        catalog: a catalog entry whose test predictors are used (instead of ``inputs``).
        period: the catalog entry's test period.
        kind: the catalog entry's predictors, ``perfect`` (upscaled RCM) or ``imperfect`` (GCM).
        gcm: the catalog entry's GCM (default: the entry's training GCM).
        start: first date of the series (inclusive).
        end: last date of the series (inclusive).
        regrid: remapping of predictors on another grid (``conservative`` or ``bilinear``).
        forcing: CSV of yearly forcing series, for emulators that use one (default: the
            series stored in the checkpoint).
        eps: the bounds (``"t=0.5 K, q=5 %"``, see :func:`climdl.sensitivity.bounds.parse_bounds`);
            default :data:`~climdl.sensitivity.bounds.DEFAULT_EMULATOR_BOUNDS` (families the
            models lack skipped).
        days: days analysed, spread evenly over the series (first and last included); None
            for every day.
        pgd_steps: PGD ascent steps.
        random_draws: random corners of the bounds' box per day.
        ig_steps: integrated-gradient quadrature points.
        seed: seed of the random draws (the same seed gives the same file).
        batch_size: days per batch (default 8 on the CPU, 64 on a GPU).
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        out_dir: the output folder: ``sensitivity.nc`` and ``summary.csv`` are written in it.
        overwrite: replace the outputs of an earlier run in ``out_dir``.
        history: the command line for the ``history`` attribute.
        progress: ``progress(days_done, days_total)``.
        report: also write the stand-alone report (``report.html``, ``report.md``,
            ``figures/``) in ``out_dir``, as part of the same set.

    Returns:
        The file written, the summary table, the time taken, the days, device and bounds.

    Raises:
        ConfigError: bad bounds (a variable the models do not use, negative, without a unit,
            ...), days, steps or draws below 1, contradictory input options, a generative
            checkpoint (give its stage-1 checkpoint).
        DataError: predictors the emulators cannot use (variables, units, grid, values).
        OutputError: earlier outputs in ``out_dir`` (without ``overwrite``), or a folder that
            cannot be written.
    """
    t0 = time.perf_counter()
    for name, value in (
        ("--pgd-steps", pgd_steps),
        ("--random-draws", random_draws),
        ("--ig-steps", ig_steps),
        ("--days", 1 if days is None else days),
        ("--batch-size", 1 if batch_size is None else batch_size),
    ):
        if value < 1:
            raise ConfigError(f"{name} must be at least 1, got {value}.")
    check_option_values(None, seed, None)  # the same range and sentence as downscale's --seed
    out = Path(out_dir)
    check_out_dir(out, overwrite)
    ckpts = [checkpoints] if isinstance(checkpoints, (str, Path)) else list(checkpoints)
    files = [inputs] if isinstance(inputs, str) else (list(inputs) if inputs else None)
    job = Job(
        JobConfig(
            checkpoints=tuple(str(c) for c in ckpts),
            inputs=tuple(files) if files else None,
            catalog=catalog,
            period=period,
            kind=kind,
            gcm=gcm,
            start=start,
            end=end,
            regrid=regrid,
            forcing=None if forcing is None else str(forcing),
            device=device,
            batch_size=batch_size,
        )
    )
    try:
        for m in job.emulators.members:
            if m.generative:
                raise ConfigError(GENERATIVE_REFUSAL.format(path=m.path))
        return _run(
            job,
            out,
            eps=eps,
            days=days,
            pgd_steps=pgd_steps,
            random_draws=random_draws,
            ig_steps=ig_steps,
            seed=seed,
            batch_size=batch_size,
            overwrite=overwrite,
            history=history,
            progress=progress,
            t0=t0,
            report=report,
        )
    finally:
        job.ds.close()


def _run(
    job: Job,
    out: Path,
    *,
    eps: str | None,
    days: int | None,
    pgd_steps: int,
    random_draws: int,
    ig_steps: int,
    seed: int,
    batch_size: int | None,
    overwrite: bool,
    history: str | None,
    progress: Progress | None,
    t0: float,
    report: bool,
) -> SensitivityResult:
    """The run of :func:`run_emulator_sensitivity` once the job is open."""
    mine = {(out / OUTPUT_NAME).resolve(), (out / SUMMARY_NAME).resolve()}
    for f in job.source.files:
        if f.resolve() in mine:
            raise OutputError(f"the output would replace the input {f}; choose another --out.")
    channels = job.variables
    spec = job.emulators.spec
    units = {v: job.emulators.members[0].spec.units.get(v, "") for v in channels}
    for m in job.emulators.members:
        units |= {v: m.spec.units[v] for v in m.variables}
    bounds = parse_bounds(
        DEFAULT_EMULATOR_BOUNDS if eps is None else eps, channels, units, defaults=eps is None
    )
    chosen = sample_days(job.n_days, days)
    bs = batch_size or (64 if job.device.type == "cuda" else 8)
    members = job.emulators.members
    for m in members:
        m.task.eval().requires_grad_(False)
    targets = [(m, t) for m in members for t in m.targets]
    wet = {t: wet_threshold(m, t) for m, t in targets}
    n_meas = {t: 3 if wet[t] is None else 4 for _, t in targets}
    table = {t: np.zeros((len(chosen), len(ATTACKS), n_meas[t]), np.float64) for _, t in targets}
    shape = (len(channels), *spec.in_size)
    sal = {t: torch.zeros(shape, dtype=torch.float64) for _, t in targets}
    sens = {t: torch.zeros(shape, dtype=torch.float64) for _, t in targets}
    times = []
    if progress:
        progress(0, len(chosen))
    for a in range(0, len(chosen), bs):
        batch_days = chosen[a : a + bs]
        x_np, t_b = job.read_days(batch_days)
        times.append(t_b)
        x, aux = job.model_inputs(x_np, t_b)
        box = Box(radius(x, bounds, channels))
        for k, (m, t) in enumerate(targets):
            ts = TargetSensitivity(
                target_forward(member_forward(m, channels, aux), m.targets.index(t)),
                pgd_steps=pgd_steps,
                random_draws=random_draws,
                ig_steps=ig_steps,
                wet_threshold=wet[t],
            )
            gens = [torch.Generator().manual_seed(day_seed(seed, int(d), k)) for d in batch_days]
            along = target_forward(saliency_forward(m, channels, aux, x), m.targets.index(t))
            meas, saliency, bound_sens = ts.run(
                x, box, saliency_baseline(m, x, channels), gens, saliency=along
            )
            if not torch.isfinite(meas).all():
                raise DataError(
                    f"the {t} emulator gives non-finite values for perturbed predictors on "
                    f"{str(t_b.values[0])[:10]}; check the inputs and the checkpoint."
                )
            table[t][a : a + len(batch_days)] = meas.detach().cpu().double().numpy()
            sal[t] += saliency.detach().double().sum(dim=0).cpu()
            sens[t] += bound_sens.detach().double().sum(dim=0).cpu()
        if progress:
            progress(a + len(batch_days), len(chosen))
    time_axis = xr.concat(times, dim="time")
    n = float(len(chosen))
    maps = [
        TargetMaps(
            name=t,
            attrs=dict(m.spec.target_attrs.get(t, {})),
            units=m.spec.target_attrs.get(t, {}).get("units", m.spec.units.get(t, "")),
            measures=table[t],
            saliency=(sal[t] / n).float().numpy(),
            bound_sensitivity=(sens[t] / n).float().numpy(),
            baseline=(
                "the day's spatial mean of each predictor, the day's spatial moments held (the "
                "model standardises each daily map by them): attributions of the anomaly pattern"
                if m.task.hp.input_norm == "daily_map"
                else "the training mean of each predictor"
            ),
        )
        for m, t in targets
    ]
    described = describe(bounds)
    attrs = emulator_attrs(
        job,
        bounds=described,
        pgd_steps=pgd_steps,
        random_draws=random_draws,
        ig_steps=ig_steps,
        seed=seed,
        n_days=len(chosen),
        wet_day=any(w is not None for w in wet.values()),
        history=history,
    )
    predictor_bound = [bounds[c].text if c in bounds else "0 (fixed)" for c in channels]
    ds = emulator_dataset(time_axis, channels, predictor_bound, spec.coarse_grid, maps, attrs)
    rows = summary_rows(maps)
    pages: tuple[Path, ...] = ()
    # the whole set, or nothing; an earlier run's files (report included) count as this run's
    with staged_run(out, overwrite=overwrite) as stage:
        write_outputs(ds, rows, stage, job.calendar, overwrite=True)
        if report:
            pages = write_report(stage, out)
    return SensitivityResult(
        path=out / OUTPUT_NAME,
        summary=rows,
        summary_path=out / SUMMARY_NAME,
        report_paths=pages,
        seconds=time.perf_counter() - t0,
        n_days=len(chosen),
        device=str(job.device),
        bounds=described,
    )
