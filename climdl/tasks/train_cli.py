"""``climdl train``: LightningCLI over the task and data module named in the config.

``climdl train --config configs/emulator/sample.yaml [--trainer.max_epochs 5] [--seed 1]
[--ckpt_path last] [--compile true]``; ``configs/clouds/sample.yaml`` trains the cloud segmenter the same way.
A ``--config`` that is no file names a packaged preset (``sample``, ``clouds/sample``,
``strategy/ddp``; see :mod:`climdl.configs`), so the same commands work from any folder.
The config's ``model:`` and ``data:`` carry ``class_path`` and ``init_args`` (any
LightningModule / LightningDataModule; options such as ``--model.base_filters 8`` reach the
init_args). After fitting, the best checkpoint is re-validated and compared with the task's
non-learned baseline, printed and written to ``<log_dir>/summary.json``:

* generative emulator (:class:`~climdl.tasks.generative.GenerativeDownscalingTask`): as the
  emulator, the RMSE being its stage-1 mean's, plus the fair CRPS of a small validation ensemble;
* emulator (:class:`~climdl.tasks.downscaling.DownscalingTask`): validation RMSE beside the
  interpolation baselines' on the same days; with ``--data.test_period`` the best checkpoint is
  also scored on the held-out test period (and the baselines with it);
* cloud segmentation (:class:`~climdl.tasks.segmentation.SegmentationTask`): per-class IoU and
  F1 of the network and of the Fmask-like threshold test on the validation scenes (and on the
  test scenes when the data module has some).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import logging.handlers
import re
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.cli import LightningCLI

from climdl.errors import ConfigError
from climdl.tasks.lightning_logging import configure_lightning_logging


class _CLI(LightningCLI):
    def add_arguments_to_parser(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument(
            "--ckpt_path",
            type=str | None,
            default=None,
            help="resume from this checkpoint ('last': the newest last*.ckpt under the run's root folder)",
        )
        parser.add_argument(
            "--quiet",
            type=bool,
            default=False,
            help="no progress bar, model summary, result tables or Lightning's notes",
        )
        parser.add_argument(
            "--compile", type=bool, default=False, help="torch.compile the network (else eager)"
        )
        parser.add_argument(
            "--channels_last",
            type=bool | None,
            default=None,
            help="NHWC network weights, true or false (default: on the CPU and on GPUs in "
            "bf16/16, on one device and under ddp)",
        )


@contextlib.contextmanager
def _held_until_checked() -> Iterator[None]:
    """Lightning's messages of the set-up (seed, accelerators) are held back and shown only
    if the block succeeds: a run refused for its options or checkpoint prints one line."""
    top = logging.getLogger("lightning")
    targets = list(top.handlers)
    held = logging.handlers.BufferingHandler(100_000)
    for h in targets:
        top.removeHandler(h)
    top.addHandler(held)
    ok = False
    try:
        yield
        ok = True
    finally:
        top.removeHandler(held)
        for h in targets:
            top.addHandler(h)
        for record in held.buffer if ok else []:
            top.handle(record)
        held.close()


def _option_error(exc: argparse.ArgumentError) -> str:
    """One sentence from jsonargparse's multi-line error."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()] or ["invalid options"]
    tag = re.search(r"constructor for the tag '([^']+)'", lines[0])
    if tag:  # a Python tag (!!python/object...): the safe YAML loader refuses it
        return (
            f"a training config uses the YAML tag {tag.group(1)}, which climdl does not load "
            "(configs are plain YAML); remove it."
        )
    text = lines[0] if not lines[0].endswith(":") or len(lines) < 2 else f"{lines[0]} {lines[1]}"
    given = next((ln for ln in lines if ln.startswith("Given value:")), None)
    if given and given not in text:
        text += f" ({given[0].lower()}{given[1:]})"
    return f"climdl train: {text.rstrip('.')}; see climdl train --help."


_NAME_LIKE = re.compile(r"(?!-)[\w./-]+")


def resolve_config(value: str) -> str:
    """A ``--config`` value as LightningCLI reads it: a file that exists stays as given; a
    name-like value that is no file (a folder called ``sample`` included) is a packaged preset
    (``sample``, ``strategy/ddp``, ``configs/emulator/sample.yaml`` from any folder); anything
    else (inline YAML) passes.

    Args:
        value: the argument of ``--config``.

    Returns:
        the path (or inline YAML) to hand to LightningCLI.

    Raises:
        ConfigError: a name that is neither a file nor a preset (the message lists the presets).
    """
    if Path(value).is_file() or not _NAME_LIKE.fullmatch(value):
        return value
    from climdl.configs import preset_path

    return str(preset_path(value))


def _translate(argv: Sequence[str]) -> list[str]:
    out: list[str] = []
    after_config = False
    for a in argv:
        if after_config:
            out.append(resolve_config(a))
        elif a == "--seed":
            out.append("--seed_everything")
        elif a.startswith("--seed="):
            out.append("--seed_everything=" + a.split("=", 1)[1])
        elif a.startswith(("--config=", "-c=")):
            flag, value = a.split("=", 1)
            out.append(f"{flag}={resolve_config(value)}")
        else:
            out.append(a)
        after_config = a in ("--config", "-c") and not after_config
    return out


def run_train(argv: Sequence[str]) -> int:
    """Parse, fit, re-validate the best checkpoint, compare with the baselines; exit code."""
    from climdl.parallel.checkpoint import check_checkpoint_path, guard_checkpoint_loads
    from climdl.parallel.launch import close_process_groups_at_exit

    args = _translate(argv)
    _check_one_strategy_preset(args)
    for flag in ("--quiet", "--compile"):  # alone: true; "--quiet false": one argument
        if flag in args:
            i = args.index(flag)
            given = [a.lower() for a in args[i + 1 : i + 2]]
            value = args.pop(i + 1).lower() if given in (["true"], ["false"]) else "true"
            args[i] = f"{flag}={value}"
    quiet = "--quiet=true" in args
    configure_lightning_logging(quiet)
    # Lightning's notes on climdl's own design and on its internals: nothing a user can act on
    for note in (
        "LightningCLI's args parameter is intended",  # climdl passes its argv on purpose
        "You have overridden `on_after_batch_transfer`",  # the task normalises on the device
        r"`isinstance\(treespec, LeafSpec\)` is deprecated",  # Lightning vs torch 2.13
        r"Found \d+ module\(s\) in eval mode",  # a generative task's frozen stage 1
    ):
        warnings.filterwarnings("ignore", message=note)
    with _held_until_checked():  # a refused run prints its error alone
        try:
            cli = _CLI(
                L.LightningModule,
                L.LightningDataModule,
                subclass_mode_model=True,
                subclass_mode_data=True,
                args=args,
                run=False,
                save_config_kwargs={"overwrite": True},
                seed_everything_default=123,
                trainer_defaults={
                    "enable_progress_bar": not quiet,
                    "enable_model_summary": not quiet,
                },
                parser_kwargs={"exit_on_error": False},  # one line, not the whole usage
            )
        except argparse.ArgumentError as exc:
            raise ConfigError(_option_error(exc)) from exc
        trainer, model, dm = cli.trainer, cli.model, cli.datamodule
        from climdl.tasks.downscaling import DownscalingTask
        from climdl.tasks.generative import GenerativeDownscalingTask
        from climdl.tasks.segmentation import SegmentationTask

        if not isinstance(model, DownscalingTask | GenerativeDownscalingTask | SegmentationTask):
            raise ConfigError(
                f"model.class_path must be climdl.tasks.downscaling.DownscalingTask, "
                f"climdl.tasks.generative.GenerativeDownscalingTask or "
                f"climdl.tasks.segmentation.SegmentationTask, got {type(model).__name__}."
            )
        model.speed = dataclasses.replace(
            model.speed,
            compile=bool(cli.config.get("compile")),
            channels_last=cli.config.get("channels_last"),
        )
        # every checkpoint Lightning loads (given, 'last', hpc, the best one re-validated) is
        # checked first and read with weights_only: a crafted file runs no code
        guard_checkpoint_loads(trainer.strategy)
        ckpt_path = cli.config.get("ckpt_path")
        if ckpt_path == "last":
            ckpt_path = _last_checkpoint(trainer, bool(cli.config.get("quiet")))
        if ckpt_path and ckpt_path not in ("last", "best", "hpc") and "://" not in ckpt_path:
            check_checkpoint_path(ckpt_path)  # before any process or data set-up
        if isinstance(model, GenerativeDownscalingTask):
            _check_generative_strategy(trainer.strategy)
            model.load_stage1(dm)  # a missing or mismatched stage 1 fails here, in one line
        _check_domain_strategy(trainer.strategy, model, dm)
    close_process_groups_at_exit()  # not left to the interpreter's teardown (aborts gloo runs)
    return _fit_and_report(cli, trainer, model, dm, ckpt_path)


def _last_checkpoint(trainer: L.Trainer, quiet: bool) -> str | None:
    """``--ckpt_path last``: the newest ``last*.ckpt`` this run's checkpoint callbacks wrote,
    whichever logger version it was, or a newer SLURM requeue checkpoint
    (:func:`climdl.parallel.checkpoint.newest_last_checkpoint`), or None (a first run:
    training starts from the beginning, said once on rank 0; a file found, Lightning names)."""
    from climdl.parallel.checkpoint import checkpoint_folders, newest_last_checkpoint

    found = newest_last_checkpoint(checkpoint_folders(trainer))
    if found is None and not quiet and trainer.is_global_zero:
        print("--ckpt_path last: no last checkpoint yet: training from the start.", file=sys.stderr)
    return None if found is None else str(found)


def _check_generative_strategy(strategy: Any) -> None:
    """The generative task trains on one device or data-parallel (its residual network is
    small; FSDP, tensor and pipeline parallelism are wired for the deterministic UNet only)."""
    from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy

    from climdl.parallel.domain import DomainParallelStrategy
    from climdl.parallel.pipeline import PipelineStrategy

    plain_ddp = isinstance(strategy, DDPStrategy) and not isinstance(
        strategy, PipelineStrategy | DomainParallelStrategy
    )
    if not (isinstance(strategy, SingleDeviceStrategy) or plain_ddp):
        raise ConfigError(
            f"the generative task trains under the single and ddp strategy presets, not "
            f"{type(strategy).__name__}."
        )


def _check_one_strategy_preset(args: Sequence[str]) -> None:
    """Refuse two stacked configs that each choose ``trainer.strategy`` (e.g. domain.yaml and
    fsdp.yaml): the later one would silently replace the first. multinode.yaml and
    restartable.yaml choose none and stack on any preset."""
    import yaml

    chosen: list[tuple[str, str]] = []
    for i, a in enumerate(args):
        if a in ("--config", "-c") and i + 1 < len(args):
            path = Path(args[i + 1])
        elif a.startswith(("--config=", "-c=")):
            path = Path(a.split("=", 1)[1])
        else:
            continue
        try:
            doc = yaml.safe_load(path.read_text()) if path.is_file() else None
        except (OSError, yaml.YAMLError):
            continue  # the CLI's own parser reports an unreadable config
        trainer = doc.get("trainer") if isinstance(doc, dict) else None
        strategy = trainer.get("strategy") if isinstance(trainer, dict) else None
        if strategy is None:
            continue
        name = strategy.get("class_path", "?") if isinstance(strategy, dict) else str(strategy)
        chosen.append((path.name, str(name).rsplit(".", 1)[-1]))
    if len({name for _, name in chosen}) > 1:
        listed = " and ".join(f"{f} ({n})" for f, n in chosen)
        raise ConfigError(
            f"{listed} each choose trainer.strategy; stack one strategy preset (multinode.yaml "
            "and restartable.yaml combine with any)."
        )


def _check_domain_strategy(strategy: Any, model: Any, dm: Any) -> None:
    """Domain parallelism splits the Doury UNet and the cloud UNet only; say so before any
    process or data set-up (the grid's divisibility is checked when the network is built)."""
    from climdl.parallel.domain import DomainParallelStrategy
    from climdl.tasks.generative import GenerativeDownscalingTask
    from climdl.tasks.segmentation import SegmentationTask

    if not isinstance(strategy, DomainParallelStrategy):
        return
    world = strategy.num_nodes * strategy.num_processes
    if world % strategy.domain_size:
        raise ConfigError(
            f"{world} processes (devices x num_nodes) cannot form domain groups of "
            f"{strategy.domain_size}; use a multiple of domain_size."
        )
    if isinstance(model, SegmentationTask):
        crop, m = int(getattr(dm, "crop_size", 0) or 0), 2 ** int(model.hparams.get("depth", 0))
        if crop and crop // m < strategy.domain_size:
            raise ConfigError(
                f"crops of {crop} rows cannot be cut into {strategy.domain_size} strips of "
                f"multiples of {m} rows (the cloud UNet's 2**depth); use data.crop_size >= "
                f"{m * strategy.domain_size} or a smaller domain_size."
            )
        return
    network = model.hparams.get("network")
    if isinstance(model, GenerativeDownscalingTask) or network != "unet":
        raise ConfigError(
            "the domain strategy preset splits the unet emulator and the cloud UNet only, not "
            f"{network or type(model).__name__}; use the ddp or fsdp preset."
        )


def _fit_and_report(
    cli: Any, trainer: L.Trainer, model: Any, dm: Any, ckpt_path: str | None
) -> int:
    """Fit, re-validate the best checkpoint on every rank, write the summary on rank 0.

    Returns:
        The exit code (0).
    """
    from climdl.tasks.segmentation import SegmentationTask

    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    ckpt_cb: Any = trainer.checkpoint_callback
    best = str(ckpt_cb.best_model_path) if ckpt_cb is not None else ""
    # every rank re-validates (a distributed strategy's collectives need all ranks); rank 0 reports
    quiet = bool(cli.config.get("quiet")) or not trainer.is_global_zero
    if isinstance(model, SegmentationTask):
        summary = _segmentation_summary(trainer, model, dm, best, quiet)
    else:
        summary = _emulator_summary(trainer, model, dm, best, quiet)
    log_dir = Path(trainer.log_dir or trainer.default_root_dir)  # a collective under DDP
    if not trainer.is_global_zero:
        return 0
    log_dir.mkdir(parents=True, exist_ok=True)
    (log_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    if not quiet:
        print(f"best checkpoint: {best}\nsummary: {log_dir / 'summary.json'}", file=sys.stderr)
    return 0


def _emulator_summary(
    trainer: L.Trainer, model: Any, dm: Any, best: str, quiet: bool
) -> dict[str, Any]:
    """Validation (and test) RMSE of the emulator beside the interpolation baselines'."""
    metrics = trainer.validate(model, datamodule=dm, ckpt_path=best or None, verbose=False)[0]
    from climdl.tasks.baseline import baseline_rmse

    base = baseline_rmse(dm, model.spec)
    tested = bool(dm.test_period or dm.test_predictors)
    test_metrics: Mapping[str, float] = {}
    test_base: dict[str, float] = {}
    if tested:
        test_metrics = trainer.test(model, datamodule=dm, ckpt_path=best or None, verbose=False)[0]
        test_base = baseline_rmse(dm, model.spec, "test")
    # a generative model's RMSE is its stage-1 mean's; its ensemble's CRPS comes beside it
    label = "stage-1 mean" if model.generative else model.network_label
    summary: dict[str, Any] = {
        "task": "generative downscaling" if model.generative else "downscaling",
        "best_checkpoint": best,
        "last_checkpoint": str(Path(best).with_name("last.ckpt")) if best else "",
        "val_rmse": {t: metrics.get(f"val_rmse_{t}") for t in model.spec.targets},
        "val_bias": {t: metrics.get(f"val_bias_{t}") for t in model.spec.targets},
        **(
            {"val_crps": {t: metrics.get(f"val_crps_{t}") for t in model.spec.targets}}
            if model.generative
            else {}
        ),
        "baseline_val_rmse": base,
        "test": (
            {
                "period": dm.test_period,
                "kind": dm.test_kind,
                "rmse": {t: test_metrics.get(f"test_rmse_{t}") for t in model.spec.targets},
                "bias": {t: test_metrics.get(f"test_bias_{t}") for t in model.spec.targets},
                "baseline_rmse": test_base,
            }
            if tested
            else None
        ),
        "epochs": trainer.current_epoch,
        "val_days": int(dm.val_idx.size),
        "train_days": int(dm.train_idx.size),
    }
    if not quiet:
        from rich.console import Console
        from rich.table import Table

        table = Table(
            "target",
            f"{label} val RMSE",
            "baseline val RMSE",
            "units",
            title=f"validation on {dm.val_idx.size} held-out days (best checkpoint)",
        )
        for t in model.spec.targets:
            table.add_row(
                t,
                f"{summary['val_rmse'][t]:.3f}",
                f"{base.get(t, float('nan')):.3f}",
                str(dm.spec().units.get(t, "")),
            )
        Console(stderr=True).print(table)
        if tested:
            table = Table(
                "target",
                f"{label} test RMSE",
                "baseline test RMSE",
                "units",
                title=f"test period {dm.test_period or 'files'} ({dm.test_kind} predictors)",
            )
            for t in model.spec.targets:
                table.add_row(
                    t,
                    f"{summary['test']['rmse'][t]:.3f}",
                    f"{test_base.get(t, float('nan')):.3f}",
                    str(dm.spec().units.get(t, "")),
                )
            Console(stderr=True).print(table)
    return summary


def _segmentation_summary(
    trainer: L.Trainer, model: Any, dm: Any, best: str, quiet: bool
) -> dict[str, Any]:
    """Per-class IoU/F1 of the segmenter and of the threshold baseline on held-out scenes."""
    from climdl.tasks.seg_metrics import jsonable, scores
    from climdl.tasks.threshold_scores import baseline_confusion, comparison_rows

    classes = list(model.classes)
    trainer.validate(model, datamodule=dm, ckpt_path=best or None, verbose=False)
    parts: dict[str, dict[str, Any]] = {}
    splits = [("val", dm.val_sources)]
    if dm.test_sources:
        trainer.test(model, datamodule=dm, ckpt_path=best or None, verbose=False)
        splits.append(("test", dm.test_sources))
    for name, sources in splits:
        parts[name] = {
            "scenes": [s.name for s in sources],
            "model": jsonable(scores(model.last_confusion[name], classes)),
            "baseline": jsonable(scores(baseline_confusion(sources), classes)),
            "confusion_model": model.last_confusion[name].tolist(),
        }
    summary: dict[str, Any] = {
        "task": "cloud_segmentation",
        "best_checkpoint": best,
        "last_checkpoint": str(Path(best).with_name("last.ckpt")) if best else "",
        "classes": classes,
        "baseline": "Fmask-like spectral threshold test (climdl.models.threshold)",
        "val": parts["val"],
        "test": parts.get("test"),
        "epochs": trainer.current_epoch,
        "train_scenes": len(dm.train_sources),
    }
    if not quiet:
        from rich.console import Console
        from rich.table import Table

        for name, part in parts.items():
            table = Table(
                "class",
                "CNN IoU",
                "threshold IoU",
                "CNN F1",
                "threshold F1",
                title=f"{name}: {len(part['scenes'])} held-out scenes (best checkpoint)",
            )
            for row in comparison_rows(part["model"], part["baseline"], classes):
                table.add_row(*row)
            Console(stderr=True).print(table)
    return summary
