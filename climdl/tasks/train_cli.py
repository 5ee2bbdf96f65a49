"""``climdl train``: LightningCLI over :class:`DownscalingTask` and :class:`EmulatorDataModule`.

``climdl train --config configs/emulator/sample.yaml [--trainer.max_epochs 5] [--seed 1]
[--ckpt_path last]``. After fitting, the best checkpoint is re-validated and its validation RMSE
is printed beside the non-learned baselines' on the same days, and written to
``<log_dir>/summary.json``; with ``--data.test_period`` the best checkpoint is also scored on the
held-out test period (and the baselines with it).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch.cli import LightningCLI

from climdl.data.emulator_data import EmulatorDataModule
from climdl.tasks.downscaling import DownscalingTask


class _CLI(LightningCLI):
    def add_arguments_to_parser(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("--ckpt_path", type=str | None, default=None,
                            help="resume from this checkpoint ('last' for the newest)")
        parser.add_argument("--quiet", type=bool, default=False, help="no progress bar or summary table")


def _translate(argv: Sequence[str]) -> list[str]:
    out: list[str] = []
    for a in argv:
        if a == "--seed":
            out.append("--seed_everything")
        elif a.startswith("--seed="):
            out.append("--seed_everything=" + a.split("=", 1)[1])
        else:
            out.append(a)
    return out


def run_train(argv: Sequence[str]) -> int:
    """Parse, fit, re-validate the best checkpoint, compare with the baselines; exit code."""
    args = _translate(argv)
    if "--quiet" in args:
        args[args.index("--quiet")] = "--quiet=true"
    cli = _CLI(DownscalingTask, EmulatorDataModule, args=args, run=False,
               save_config_kwargs={"overwrite": True}, seed_everything_default=123,
               trainer_defaults={"enable_progress_bar": "--quiet=true" not in args})
    trainer, model, dm = cli.trainer, cli.model, cli.datamodule
    trainer.fit(model, datamodule=dm, ckpt_path=cli.config.get("ckpt_path"))
    if not trainer.is_global_zero:
        return 0
    ckpt_cb: Any = trainer.checkpoint_callback
    best = str(ckpt_cb.best_model_path) if ckpt_cb is not None else ""
    metrics = trainer.validate(model, datamodule=dm, ckpt_path=best or None, verbose=False)[0]
    from climdl.tasks.baseline import baseline_rmse

    base = baseline_rmse(dm)
    tested = bool(dm.test_period or dm.test_predictors)
    test_metrics: Mapping[str, float] = {}
    test_base: dict[str, float] = {}
    if tested:
        test_metrics = trainer.test(model, datamodule=dm, ckpt_path=best or None, verbose=False)[0]
        test_base = baseline_rmse(dm, "test")
    summary: dict[str, Any] = {
        "best_checkpoint": best,
        "last_checkpoint": str(Path(best).with_name("last.ckpt")) if best else "",
        "val_rmse": {t: metrics.get(f"val_rmse_{t}") for t in model.y_norm.names},
        "val_bias": {t: metrics.get(f"val_bias_{t}") for t in model.y_norm.names},
        "baseline_val_rmse": base,
        "test": ({"period": dm.test_period, "kind": dm.test_kind,
                  "rmse": {t: test_metrics.get(f"test_rmse_{t}") for t in model.y_norm.names},
                  "bias": {t: test_metrics.get(f"test_bias_{t}") for t in model.y_norm.names},
                  "baseline_rmse": test_base} if tested else None),
        "epochs": trainer.current_epoch,
        "val_days": int(dm.val_idx.size),
        "train_days": int(dm.train_idx.size),
    }
    log_dir = Path(trainer.log_dir or trainer.default_root_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    (log_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    if not cli.config.get("quiet"):
        from rich.console import Console
        from rich.table import Table

        table = Table("target", f"{model.hparams.network} val RMSE", "baseline val RMSE", "units",
                      title=f"validation on {dm.val_idx.size} held-out days (best checkpoint)")
        for t in model.y_norm.names:
            table.add_row(t, f"{summary['val_rmse'][t]:.3f}", f"{base.get(t, float('nan')):.3f}",
                          str(dm.spec()["units"].get(t, "")))
        Console(stderr=True).print(table)
        if tested:
            table = Table("target", f"{model.hparams.network} test RMSE", "baseline test RMSE", "units",
                          title=f"test period {dm.test_period or 'files'} ({dm.test_kind} predictors)")
            for t in model.y_norm.names:
                table.add_row(t, f"{summary['test']['rmse'][t]:.3f}", f"{test_base.get(t, float('nan')):.3f}",
                              str(dm.spec()["units"].get(t, "")))
            Console(stderr=True).print(table)
        print(f"best checkpoint: {best}\nsummary: {log_dir / 'summary.json'}", file=sys.stderr)
    return 0
