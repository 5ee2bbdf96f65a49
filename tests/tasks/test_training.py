"""Emulator training through the real CLI, checkpoints, determinism, statistics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from climdl.cli import main
from climdl.data.emulator_data import EmulatorDataModule
from climdl.errors import ConfigError, DataError
from climdl.parallel.testing import NO_LOGGERS, TINY_MODEL
from climdl.tasks.checkpoint import load_emulator, read_checkpoint
from tests.argv import train_argv
from tests.paths import CONFIGS

CONFIG = CONFIGS / "emulator" / "sample.yaml"
SMALL = [*TINY_MODEL, "--data.batch_size", "8"]


def _train(tmp_path: Path, *extra: str) -> int:
    return main(train_argv(CONFIG, tmp_path, *NO_LOGGERS, "--quiet", *SMALL, *extra))


def _two_targets(root: Path, epochs: int, *extra: str) -> list[str]:
    """The short run of ``trained`` (4 training, 2 validation batches per epoch) for ``epochs``."""
    short = "--trainer.limit_train_batches 4 --trainer.limit_val_batches 2 --quiet"
    options = ["--trainer.max_epochs", str(epochs), *short.split(), *NO_LOGGERS, *SMALL]
    return train_argv(CONFIG, root, *options, "--data.targets", "[tasmax, pr]", *extra)


@pytest.mark.parametrize(
    ("network", "targets", "loss_pr"),
    [
        ("unet", "[tasmax]", "doury_asymmetric"),
        ("deepesd", "[tasmax]", "doury_asymmetric"),
        ("unet", "[pr]", "doury_asymmetric"),
        ("unet", "[pr]", "bernoulli_gamma"),
        ("unet", "[tasmax, pr]", "mse"),
    ],
)
def test_fast_dev_run_through_the_cli(
    tmp_path: Path,
    use_sample_cache: Path,
    network: str,
    targets: str,
    loss_pr: str,
    capfd: pytest.CaptureFixture[str],
) -> None:
    rc = _train(
        tmp_path,
        "--trainer.fast_dev_run",
        "2",
        "--model.network",
        network,
        "--data.targets",
        targets,
        "--model.loss_pr",
        loss_pr,
        "--model.deepesd_filters",
        "[4, 4, 2]",
    )
    assert rc == 0
    out, err = capfd.readouterr()  # --quiet: no model summary, no Lightning notes
    assert "┏" not in out and "Seed set" not in err and "GPU available" not in err


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, sample_cache: Path) -> Path:
    """Two short epochs with checkpoints: the run directory."""
    out = tmp_path_factory.mktemp("run")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CLIMDL_CACHE", str(sample_cache))
        rc = main(_two_targets(out, 2))
    assert rc == 0
    return out


def _ckpts(run: Path) -> list[Path]:
    return sorted(run.rglob("*.ckpt"))


def test_best_and_last_checkpoints_and_summary(trained: Path) -> None:
    names = {p.name for p in _ckpts(trained)}
    assert "last.ckpt" in names and any(n.startswith("best-") for n in names)
    summary = json.loads(next(trained.rglob("summary.json")).read_text())
    assert set(summary["val_rmse"]) == {"tasmax", "pr"}
    assert summary["baseline_val_rmse"]["tasmax"] > 0
    # the config's held-out test period (1981, with the sample's truth) is scored too
    assert summary["test"]["period"] == "historical"
    assert summary["test"]["rmse"]["tasmax"] > 0 and summary["test"]["baseline_rmse"]["pr"] > 0


def test_checkpoint_is_self_contained_and_reload_is_identical(
    trained: Path, use_sample_cache: Path
) -> None:
    ckpt = next(p for p in _ckpts(trained) if p.name == "last.ckpt")
    raw = torch.load(ckpt, map_location="cpu", weights_only=True)  # safe loading works
    spec = raw["climdl"]["spec"]
    assert spec["variables"][0] == "z_500" and spec["targets"] == ["tasmax", "pr"]
    assert spec["units"]["tasmax"] == "K" and spec["units"]["pr"] == "mm day-1"
    assert (
        spec["target_grid"]["grid_mapping"]["attrs"]["grid_mapping_name"]
        == "lambert_conformal_conic"
    )
    assert tuple(spec["orography"].shape) == (128, 128)
    a, b = load_emulator(ckpt), load_emulator(ckpt)
    dm = EmulatorDataModule(
        catalog="sample-alps", experiment="Emulator_hist_future", targets=["tasmax", "pr"]
    )
    dm.setup()
    batch = next(iter(dm.val_dataloader()))
    with torch.no_grad():
        pa = a.predict_physical(a.on_after_batch_transfer(batch, 0))
        pb = b.predict_physical(b.on_after_batch_transfer(batch, 0))
    torch.testing.assert_close(pa, pb, rtol=0, atol=0)
    assert pa.shape == (batch["x"].shape[0], 2, 128, 128)
    assert float(pa[:, 1].min()) >= 0.0  # precipitation is never negative


def test_resume_from_last(trained: Path, use_sample_cache: Path) -> None:
    last_ckpt = next(p for p in _ckpts(trained) if p.name == "last.ckpt")
    rc = main(_two_targets(trained, 3, "--ckpt_path", str(last_ckpt)))
    assert rc == 0
    last = read_checkpoint(next(p for p in _ckpts(trained) if p.name == "last.ckpt"))
    assert last["epoch"] == 2


def test_ckpt_path_last_resumes_across_logger_versions(
    tmp_path: Path,
    use_sample_cache: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the config's CSV logger, each run writes into a new ``csv/version_N``; Lightning's
    own ``last`` looks only in the new, empty one and trains from scratch. climdl's finds the
    newest ``last*.ckpt`` of every version: the second run continues at epoch 1."""
    monkeypatch.chdir(tmp_path)  # the config's loggers write to runs/sample-alps, relative
    short = ["--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1"]
    base = [*SMALL, *short, "--data.test_period", "null", "--trainer.enable_progress_bar", "false"]
    assert main(train_argv(CONFIG, tmp_path, *base, "--trainer.max_epochs", "1")) == 0
    first = next(tmp_path.rglob("csv/version_0/checkpoints/last.ckpt"))
    capsys.readouterr()
    rc = main(
        train_argv(CONFIG, tmp_path, *base, "--trainer.max_epochs", "2", "--ckpt_path", "last")
    )
    assert rc == 0
    said = f"Restoring states from the checkpoint path at {first.relative_to(tmp_path)}"
    assert capsys.readouterr().err.count(said) == 1  # Lightning's note, once
    second = read_checkpoint(next(tmp_path.rglob("csv/version_1/checkpoints/last.ckpt")))
    assert second["epoch"] == 1 and second["global_step"] == 4  # 2 epochs x 2 batches, not 2


def test_ckpt_path_last_without_a_checkpoint_starts_from_the_beginning(
    tmp_path: Path, use_sample_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A first run with ``--ckpt_path last`` (a SLURM job's first submission) trains from the
    start and says so once."""
    rc = main(_two_targets(tmp_path, 1, "--ckpt_path", "last", "--quiet", "false"))
    assert rc == 0
    assert capsys.readouterr().err.count("--ckpt_path last: no last checkpoint yet") == 1


def test_bad_checkpoints_are_refused(tmp_path: Path) -> None:
    bad = tmp_path / "x.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="not a readable"):
        load_emulator(bad)
    torch.save({"state_dict": {}}, bad)
    with pytest.raises(DataError, match="not a climdl"):
        load_emulator(bad)
    with pytest.raises(DataError, match="does not exist"):
        load_emulator(tmp_path / "missing.ckpt")


def test_same_seed_same_weights(tmp_path: Path, use_sample_cache: Path) -> None:
    weights = []
    for run in ("a", "b"):
        rc = _train(
            tmp_path / run,
            "--trainer.max_epochs",
            "1",
            "--trainer.limit_train_batches",
            "2",
            "--trainer.limit_val_batches",
            "1",
            "--seed",
            "7",
        )
        assert rc == 0
        ckpt = next(p for p in (tmp_path / run).rglob("last.ckpt"))
        weights.append(torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"])
    assert weights[0].keys() == weights[1].keys()
    for k in weights[0]:
        if isinstance(weights[0][k], torch.Tensor):
            torch.testing.assert_close(weights[0][k], weights[1][k], rtol=0, atol=0)
        else:
            assert weights[0][k] == weights[1][k]


def test_statistics_use_training_days_only(use_sample_cache: Path) -> None:
    dm = EmulatorDataModule(
        catalog="sample-alps",
        experiment="ESD_pseudo_reality",
        split="years",
        val_years=[1961],
        targets=["tasmax"],
        orography=False,
    )
    with pytest.raises(DataError, match="leave no training"):
        dm.setup()
    dm = EmulatorDataModule(
        catalog="sample-alps",
        experiment="Emulator_hist_future",
        split="years",
        val_years=[2080],
        targets=["tasmax"],
        orography=False,
    )
    dm.setup()
    stats = dm.spec().stats
    x, y = dm.source.read(dm.train_idx)
    np.testing.assert_allclose(stats.y_mean.numpy(), [y.mean()], rtol=1e-5)
    np.testing.assert_allclose(stats.x_mean.numpy(), x.mean(axis=(0, 2, 3)), rtol=1e-4)
    _, y_all = dm.source.read(np.arange(dm.train_idx.size + dm.val_idx.size))
    assert abs(float(y_all.mean()) - float(stats.y_mean[0])) > 0.5  # the warm 2080 is excluded


def test_random_split_is_seeded_and_disjoint(use_sample_cache: Path) -> None:
    a = EmulatorDataModule(catalog="sample-alps", split_seed=1, orography=False)
    b = EmulatorDataModule(catalog="sample-alps", split_seed=1, orography=False)
    a.setup(), b.setup()
    np.testing.assert_array_equal(a.val_idx, b.val_idx)
    assert not set(a.train_idx) & set(a.val_idx)
    assert abs(a.val_idx.size / (a.val_idx.size + a.train_idx.size) - 0.2) < 0.01


def test_masked_targets_are_excluded_and_reported(use_sample_cache: Path) -> None:
    from climdl.tasks.downscaling import DownscalingTask

    dm = EmulatorDataModule(catalog="sample-alps", targets=["tasmax"], orography=False)
    dm.setup()
    task = DownscalingTask(base_filters=4, max_filters=8, extra_filters=4, use_orography=False)
    task.build(dm.spec())
    batch = next(iter(dm.train_dataloader()))
    batch["y"][:, :, :10, :] = float("nan")
    b = task.on_after_batch_transfer(batch, 0)
    loss, _ = task.compute_loss(b)
    assert torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in task.parameters() if p.grad is not None)


def test_lazy_reading_matches_in_memory(use_sample_cache: Path) -> None:
    eager = EmulatorDataModule(catalog="sample-alps", orography=False)
    lazy = EmulatorDataModule(catalog="sample-alps", orography=False, memory_budget_gb=0.0)
    eager.setup(), lazy.setup()
    assert eager.source.in_memory and not lazy.source.in_memory
    idx = np.array([5, 1, 300])
    for a, b in zip(eager.source.read(idx), lazy.source.read(idx), strict=True):
        np.testing.assert_array_equal(a, b)


def test_residual_to_baseline_starts_from_the_baseline(use_sample_cache: Path) -> None:
    """With a zero correction, the residual emulator predicts exactly the fitted baseline."""
    from climdl.models.tasmax_baseline import TasmaxBaseline
    from climdl.tasks.downscaling import DownscalingTask

    dm = EmulatorDataModule(catalog="sample-alps", targets=["tasmax"])
    dm.setup()
    task = DownscalingTask(
        base_filters=4, max_filters=8, extra_filters=4, head_features=4, residual_to_baseline=True
    )
    spec = task.spec_from_data(dm)
    task.build(spec)
    last = task.net.fuse[-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)
    batch = next(iter(dm.val_dataloader()))
    with torch.no_grad():
        pred = task.predict_physical(task.on_after_batch_transfer(batch, 0))[:, 0]
        base = TasmaxBaseline(spec, spec.tasmax_baseline)(batch["x"])
    torch.testing.assert_close(pred, base, rtol=1e-5, atol=1e-3)


def test_test_period_loader_reads_held_out_years(use_sample_cache: Path) -> None:
    dm = EmulatorDataModule(catalog="sample-alps", test_period="historical", test_kind="imperfect")
    batches = list(dm.test_dataloader())
    assert sum(b["x"].shape[0] for b in batches) == 365
    assert batches[0]["y"].shape[1:] == (1, 128, 128)
    with pytest.raises(ConfigError, match="test_period"):
        list(EmulatorDataModule(catalog="sample-alps").test_dataloader())


@pytest.mark.slow
def test_unet_beats_interpolation_on_held_out_year(tmp_path: Path, use_sample_cache: Path) -> None:
    """Train the sample config briefly; on the held-out 1981 the UNet beats the baseline."""
    rc = main(train_argv(CONFIG, tmp_path, "--trainer.max_epochs", "5", *NO_LOGGERS, "--quiet"))
    assert rc == 0
    summary = json.loads(next(tmp_path.rglob("summary.json")).read_text())
    unet, base = summary["test"]["rmse"]["tasmax"], summary["test"]["baseline_rmse"]["tasmax"]
    assert unet < base, (unet, base)


def test_last_takes_the_newest_of_every_version_and_a_slurm_requeue(tmp_path: Path) -> None:
    """``--ckpt_path last``'s candidates: each logger version's ``last*.ckpt`` and the
    ``hpc_ckpt_N.ckpt`` Lightning writes on SLURM's signal before a requeue (newest wins);
    ``consolidated-*`` files and files elsewhere are not candidates."""
    import os

    from climdl.parallel.checkpoint import newest_last_checkpoint

    v0, v1 = tmp_path / "csv/version_0/checkpoints", tmp_path / "csv/version_1/checkpoints"
    for folder in (v0, v1):
        folder.mkdir(parents=True)
    files = {
        v0 / "last.ckpt": 100,
        v1 / "last.ckpt": 200,
        v1 / "consolidated-last.ckpt": 500,
        tmp_path / "hpc_ckpt_1.ckpt": 300,
    }
    for path, mtime in files.items():
        path.write_bytes(b"x")
        os.utime(path, (mtime, mtime))
    folders = [tmp_path, v0, v1]
    assert newest_last_checkpoint(folders) == tmp_path / "hpc_ckpt_1.ckpt"
    os.utime(v0 / "last.ckpt", (400, 400))
    assert newest_last_checkpoint(folders) == v0 / "last.ckpt"
    assert newest_last_checkpoint([tmp_path / "missing"]) is None
