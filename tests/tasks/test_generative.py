"""The generative emulator (stage-1 mean + flow-matching residual) trained through climdl train."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from climdl.tasks.checkpoint import load_emulator, read_checkpoint
from climdl.tasks.downscaling import DownscalingTask
from climdl.tasks.generative import GenerativeDownscalingTask
from tests.argv import train_argv
from tests.conftest import TINY_GENERATIVE
from tests.paths import CONFIGS


def _batch(task: GenerativeDownscalingTask, days: int = 2) -> dict[str, torch.Tensor]:
    spec = task.spec
    assert spec is not None
    g = torch.Generator().manual_seed(0)
    n_in, (h, w) = len(spec.variables), spec.in_size
    x = spec.stats.x_mean.float().view(1, -1, 1, 1) + spec.stats.x_std.float().view(
        1, -1, 1, 1
    ) * torch.randn((days, n_in, h, w), generator=g)
    raw = {
        "x": x,
        "aux": torch.zeros(days, len(spec.aux_names)),
        "y": torch.zeros(days, len(spec.targets), *spec.out_size),
    }
    return task.on_after_batch_transfer(raw, 0)


def test_generative_checkpoint_is_self_contained(
    gen_pr_ckpt: Path, pr_ckpt: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "gen.ckpt"
    shutil.copy(gen_pr_ckpt, copy)
    ckpt = torch.load(copy, weights_only=True)
    meta = ckpt["climdl"]
    assert meta["kind"] == "generative_emulator"
    assert len(meta["mean"]["sha256"]) == 64 and meta["mean"]["spec"]["targets"] == ["pr"]
    assert meta["residual"]["std"].shape == (1,) and float(meta["residual"]["std"][0]) > 0
    task = load_emulator(copy)
    assert isinstance(task, GenerativeDownscalingTask) and task.generative
    assert not task.training and not task.mean.training
    assert all(not p.requires_grad for p in task.mean.parameters())
    assert task.network_label == "unet + flow-matching residual"
    batch = _batch(task)
    noise = torch.randn((2, 3, 1, *task.spec.out_size), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        a = task.sample_physical(batch, noise)
        b = task.sample_physical(batch, noise.clone(), steps=2)
        mean = task.predict_physical(batch)
    assert a.shape == (2, 3, 1, *task.spec.out_size) and a.dtype == torch.float32
    assert torch.equal(a, b) and bool((a >= 0).all()) and torch.isfinite(a).all()
    assert mean.shape == (2, 1, *task.spec.out_size)
    det = load_emulator(pr_ckpt)
    assert type(det) is DownscalingTask and not det.generative and det.network_label == "unet"
    assert read_checkpoint(pr_ckpt)["climdl"].get("kind") is None


def test_checkpoint_needs_no_stage1_file(gen_pr_ckpt: Path, pr_ckpt: Path, tmp_path: Path) -> None:
    ckpt = torch.load(gen_pr_ckpt, weights_only=True)
    gone = tmp_path / "deleted-stage1.ckpt"  # the stage-1 file named inside no longer exists
    ckpt["hyper_parameters"]["mean_checkpoint"] = str(gone)
    torch.save(ckpt, tmp_path / "gen.ckpt")
    task = load_emulator(tmp_path / "gen.ckpt")
    assert isinstance(task, GenerativeDownscalingTask)
    assert task.hp.mean_checkpoint == str(gone) and not gone.exists()  # provenance only
    reference = load_emulator(pr_ckpt)
    batch = _batch(task)
    with torch.inference_mode():
        torch.testing.assert_close(task.predict_physical(batch), reference.predict_physical(batch))
        noise = torch.randn(1, 2, 1, *task.spec.out_size)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            members = task.sample_physical(batch, noise, steps=1)
    assert members.dtype == torch.float32 and bool((members >= 0).all())


@pytest.mark.parametrize(
    ("stage1", "expected"),
    [
        (
            "tasmax_ckpt",
            "mismatched stage 1 ({}): it predicts [tasmax] but the data's targets are [pr]",
        ),
        ("gen_pr_ckpt", "{} is a 'generative_emulator' checkpoint; the generative task's stage 1"),
        (
            None,
            "the generative task needs its stage-1 checkpoint: --model.init_args.mean_checkpoint",
        ),
    ],
)
def test_wrong_stage1_is_one_sentence(
    stage1: str | None,
    expected: str,
    request: pytest.FixtureRequest,
    use_sample_cache: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from climdl.cli import main

    path = request.getfixturevalue(stage1) if stage1 else None
    capsys.readouterr()  # the fixture's own training
    extra = ["--model.init_args.mean_checkpoint", str(path)] if path else []
    config = CONFIGS / "emulator" / "sample_generative.yaml"
    rc = main(train_argv(config, tmp_path, *TINY_GENERATIVE, *extra))
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert expected.format(path) in err and "Traceback" not in err
    assert len(err.splitlines()) == 1


def test_sharded_strategies_are_refused_in_one_sentence(
    pr_ckpt: Path, use_sample_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from climdl.cli import main

    capsys.readouterr()
    config = CONFIGS / "emulator" / "sample_generative.yaml"
    extra = ["--model.init_args.mean_checkpoint", str(pr_ckpt), "--config", "strategy/fsdp"]
    rc = main(train_argv(config, tmp_path, *TINY_GENERATIVE, *extra))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "Traceback" not in err and len(err.splitlines()) == 1
    assert "the generative task trains under the single and ddp strategy presets" in err


def test_fair_crps_and_residual_scale_helpers() -> None:
    from climdl.tasks.generative_parts import channel_std, ema_update, fair_crps, warmup_cosine

    truth = torch.tensor([1.0, 0.0, float("nan")])
    members = torch.tensor([[0.0, 0.0, 5.0], [2.0, 1.0, 5.0]])
    # point 0: |0-1|,|2-1| -> 1, spread 2*2/(2*2*1) = 1 -> 0; point 1: 0.5 - 0.5 = 0
    assert float(fair_crps(members, truth)) == 0.0
    assert float(fair_crps(torch.zeros(3, 2), torch.ones(2))) == 1.0
    chunk = torch.tensor([[1.0, 3.0], [float("nan"), 5.0]]).view(1, 2, 2, 1)
    torch.testing.assert_close(channel_std([chunk, chunk]), torch.tensor([1.0, 0.0]))
    a, b = torch.nn.BatchNorm2d(2), torch.nn.BatchNorm2d(2)
    torch.nn.init.constant_(b.weight, 3.0)
    b.num_batches_tracked += 5
    ema_update(a, b, 0.75)
    torch.testing.assert_close(a.weight, torch.full((2,), 1.5))
    assert int(a.num_batches_tracked) == 5
    f = warmup_cosine(1000)
    assert f(0) == 1 / 50 and f(49) == 1.0 and abs(f(999) - 0.1) < 1e-4


@pytest.mark.distributed
def test_ddp_two_processes(pr_ckpt: Path, sample_cache: Path, tmp_path: Path) -> None:
    """``--config configs/strategy/ddp.yaml``: two gloo processes train the residual network
    (BatchNorm converted to the global one, stage 1 frozen) and write a loadable checkpoint."""
    from climdl.parallel.testing import check, climdl_cmd, run_all, strategy_config

    config = CONFIGS / "emulator" / "sample_generative.yaml"
    args = train_argv(
        config,
        tmp_path / "run",
        "--config",
        str(strategy_config("ddp")),
        *TINY_GENERATIVE,
        "--model.init_args.mean_checkpoint",
        str(pr_ckpt),
    )
    log = tmp_path / "ddp.log"
    check(
        run_all([climdl_cmd(args)], [log], 300, envs=[{"CLIMDL_CACHE": str(sample_cache)}]), [log]
    )
    task = load_emulator(next((tmp_path / "run").rglob("last.ckpt")))
    assert isinstance(task, GenerativeDownscalingTask) and float(task.residual_std[0]) > 0
    assert task.ema is not None and all(torch.isfinite(p).all() for p in task.ema.parameters())


def test_error_sums_give_rmse_and_bias() -> None:
    from climdl.tasks.generative_parts import ErrorSums

    sums = ErrorSums(["pr", "tasmax"])
    y = torch.tensor([[1.0, float("nan")], [0.0, 0.0]]).view(1, 2, 2, 1)
    sums.update(y.nan_to_num() + torch.tensor([2.0, -1.0]).view(1, 2, 1, 1), y)
    scores = sums.scores()
    assert [float(v) for v in scores["pr"]] == [2.0, 2.0]
    assert [float(v) for v in scores["tasmax"]] == [1.0, -1.0]
    assert float(sums.scores()["pr"][0]) == 0.0  # reset
