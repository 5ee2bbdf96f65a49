"""In-process checks of climdl.parallel: UNet stage cuts, global BatchNorm, tensor-parallel
plans, launch detection, pipeline helpers and the strategy presets (no process group)."""

from __future__ import annotations

import re
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from climdl.errors import ConfigError
from climdl.models import DeepESD, DouryUNet
from climdl.models.heads import FineCovariateHead
from climdl.parallel import launch
from climdl.parallel.pipeline import PipelineStrategy
from climdl.parallel.pipeline_plan import Absent, microbatches
from climdl.parallel.stages import (
    balanced_cuts,
    carry_after,
    part_flops,
    split,
    unet_parts,
)
from climdl.parallel.strategies import build_strategy, tensor_parallel_plan
from climdl.parallel.syncbn import GlobalBatchNorm, GlobalSyncBatchNorm, convert_batchnorm
from climdl.parallel.testing import CONFIGS, SAMPLE


def _net(head: bool = True, scalars: int = 6, out: int = 32) -> nn.Module:
    torch.manual_seed(0)
    unet = DouryUNet(
        5,
        3,
        in_size=(8, 8),
        out_size=(out, out),
        n_scalars=scalars,
        base_filters=4,
        max_filters=8,
        extra_filters=4,
    )
    return FineCovariateHead(unet, 3, torch.randn(2, out, out), 2) if head else unet


def _chain(stages: list, x: torch.Tensor, s: torch.Tensor | None) -> torch.Tensor:
    carry: tuple[torch.Tensor, ...] = (x,) if s is None else (x, s)
    for stage in stages:
        out = stage(*carry)
        carry = out if isinstance(out, tuple) else (out,)
    assert len(carry) == 1
    return carry[0]


@pytest.mark.parametrize(("head", "scalars"), [(True, 6), (False, 6), (True, 0)])
def test_any_cut_of_the_unet_chains_to_the_same_forward_and_gradients(
    head: bool, scalars: int
) -> None:
    net = _net(head, scalars)
    x = torch.randn(4, 5, 8, 8)
    s = torch.randn(4, scalars) if scalars else None
    ref = net(x, s)
    ref.square().mean().backward()
    ref_grads = {k: p.grad.clone() for k, p in net.named_parameters()}
    n = len(unet_parts(net))
    for cuts in ([], [1], [2], [3, 5], [4], [n - 1], list(range(1, n))):
        net.zero_grad()
        out = _chain(split(net, cuts), x, s)
        torch.testing.assert_close(out, ref, rtol=0, atol=0)
        out.square().mean().backward()
        for k, p in net.named_parameters():
            torch.testing.assert_close(p.grad, ref_grads[k], rtol=0, atol=0)


def test_carries_count_scalars_and_skips_in_flight() -> None:
    net = _net()
    names = [p.name for p in unet_parts(net)]
    assert names[:4] == ["entry", "enc0", "enc1", "enc2"] and names[-2:] == ["head", "fuse"]
    assert carry_after(net, names.index("enc2")) == carry_after(net, 3)
    assert carry_after(net, 3).scalars and carry_after(net, 3).skips == 2  # entry, enc0, enc1 done
    after_dec0 = carry_after(net, names.index("dec1"))
    assert not after_dec0.scalars and after_dec0.skips == 2  # 3 encoded, 1 consumed
    assert carry_after(net, names.index("head")).skips == 0


def test_balanced_cuts_minimise_the_largest_stage() -> None:
    assert balanced_cuts([1, 1, 1, 1], 2) == [2]
    assert balanced_cuts([1, 1, 1, 9], 2) == [3]
    costs = [5.0, 1, 1, 1, 1, 1]
    cuts = balanced_cuts(costs, 3)
    bounds = [0, *cuts, len(costs)]
    assert len(cuts) == 2 and max(sum(costs[a:b]) for a, b in pairwise(bounds)) == 5
    assert balanced_cuts([1.0], 1) == []
    with pytest.raises(ConfigError, match="cannot cut"):
        balanced_cuts([1.0, 2.0], 3)
    flops = part_flops(_net())
    assert len(flops) == len(unet_parts(_net())) and max(flops) > 0
    with pytest.raises(ConfigError, match="increase strictly"):
        split(_net(), [3, 3])


def test_pipeline_needs_the_unet_and_checks_its_options() -> None:
    with pytest.raises(ConfigError, match="Doury UNet"):
        unet_parts(DeepESD(5, 1, in_size=(8, 8), out_size=(16, 16), filters=(2,)))
    with pytest.raises(ConfigError, match="gpipe or 1f1b"):
        PipelineStrategy(schedule="interleaved")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="n_microbatches"):
        PipelineStrategy(n_microbatches=0)
    assert PipelineStrategy().distributed_sampler_kwargs == {"num_replicas": 1, "rank": 0}
    assert [microbatches(b, 4) for b in (16, 10, 7, 3, 1)] == [4, 2, 1, 3, 1]
    with pytest.raises(RuntimeError, match="pipeline rank 1"):
        Absent(1, "net.head")(torch.zeros(1))


def test_global_batchnorm_is_plain_batchnorm_in_one_process_and_round_trips() -> None:
    torch.manual_seed(0)
    net = _net()
    keys = list(net.state_dict())
    bn = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    converted = convert_batchnorm(net)
    assert converted is net
    glob = [m for m in net.modules() if isinstance(m, GlobalBatchNorm)]
    assert len(glob) == len(bn) > 0 and list(net.state_dict()) == keys
    assert glob[0].weight is bn[0].weight and glob[0].running_mean is bn[0].running_mean
    x = torch.randn(6, 8, 5, 5)
    plain = nn.BatchNorm2d(8)
    g = GlobalBatchNorm(8)
    torch.testing.assert_close(g(x), plain(x))
    torch.testing.assert_close(g.running_var, plain.running_var)
    plugin = GlobalSyncBatchNorm()
    plugin.revert(net)
    assert not any(isinstance(m, GlobalBatchNorm) for m in net.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == len(bn)


def test_tensor_parallel_plan_pairs_the_dense_layers() -> None:
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel

    plan = tensor_parallel_plan(_net())
    assert list(plan) == [f"net.scalar_mlp.{i}" for i in range(4)]
    assert [type(s) for s in plan.values()] == [ColwiseParallel, RowwiseParallel] * 2
    odd = DouryUNet(5, 1, in_size=(8, 8), out_size=(16, 16), n_scalars=3, scalar_mlp=(4, 4, 4))
    styles = tensor_parallel_plan(odd)
    assert [type(s) for s in styles.values()] == [ColwiseParallel, RowwiseParallel, ColwiseParallel]
    assert "Replicate" in repr(styles["scalar_mlp.2"].output_layouts)
    esd = tensor_parallel_plan(DeepESD(5, 1, in_size=(8, 8), out_size=(16, 16), filters=(2,)))
    assert list(esd) == ["dense"]
    assert tensor_parallel_plan(_net(scalars=0)) == {}


def test_launch_detection_reads_torchrun_and_slurm_variables() -> None:
    torchrun = {
        "RANK": "3",
        "WORLD_SIZE": "4",
        "LOCAL_RANK": "1",
        "LOCAL_WORLD_SIZE": "2",
        "GROUP_RANK": "1",
        "TORCHELASTIC_RUN_ID": "x",
        "MASTER_ADDR": "n0",
        "MASTER_PORT": "29500",
        "TORCHELASTIC_RESTART_COUNT": "2",
    }
    info = launch.detect(torchrun)
    assert (
        info.launcher,
        info.global_rank,
        info.local_rank,
        info.node_rank,
        info.num_nodes,
        info.restart_count,
        info.master_port,
    ) == ("torchrun", 3, 1, 1, 2, 2, 29500)
    slurm = {
        "SLURM_NTASKS": "8",
        "SLURM_PROCID": "5",
        "SLURM_LOCALID": "1",
        "SLURM_NODEID": "2",
        "SLURM_NNODES": "4",
        "SLURM_JOB_NAME": "train",
        "SLURM_JOB_ID": "77",
        "SLURM_RESTART_COUNT": "1",
    }
    info = launch.detect(slurm)
    assert (
        info.launcher,
        info.global_rank,
        info.world_size,
        info.node_rank,
        info.num_nodes,
        info.restart_count,
        info.job_id,
    ) == ("slurm", 5, 8, 2, 4, 1, "77")
    assert "rank 5/8" in info.describe()
    assert launch.detect({**slurm, "SLURM_JOB_NAME": "bash"}).launcher == "single"
    assert launch.detect({}).world_size == 1
    port = launch.free_port()
    assert 0 < port < 65536


def test_build_strategy_names() -> None:
    from lightning.pytorch.strategies import DDPStrategy, ModelParallelStrategy

    assert build_strategy("single") == "auto"
    assert isinstance(build_strategy("ddp"), DDPStrategy)
    assert isinstance(build_strategy("fsdp"), ModelParallelStrategy)
    assert isinstance(build_strategy("pipeline", schedule="gpipe"), PipelineStrategy)
    assert type(build_strategy("domain", domain_size=4)).__name__ == "DomainParallelStrategy"
    with pytest.raises(ConfigError, match="unknown strategy"):
        build_strategy("zero")  # type: ignore[arg-type]


STRATEGY_FILES = sorted((CONFIGS / "strategy").glob("*.yaml"))


@pytest.mark.parametrize("path", STRATEGY_FILES, ids=[p.stem for p in STRATEGY_FILES])
def test_every_preset_key_has_a_comment(path: Path) -> None:
    for line in path.read_text().splitlines():
        m = re.match(r"^\s*(- )?([\w+]+):\s*(\S.*)?$", line.split("#")[0])
        if m and m.group(3):  # a key with a value on its line
            assert "#" in line, f"{path.name}: no comment on {line.strip()!r}"


@pytest.mark.parametrize(
    ("stack", "check"),
    [
        (["ddp", "multinode", "restartable"], "ddp"),
        (["fsdp"], "fsdp"),
        (["tensor"], "tensor"),
        (["pipeline"], "pipeline"),
        (["single"], "single"),
        (["domain", "multinode"], "domain"),
    ],
)
def test_presets_stack_on_the_training_config(
    stack: list[str], check: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The presets parse with LightningCLI on top of the sample config and build the intended
    trainer (nothing is fitted)."""
    monkeypatch.setenv("PL_GLOBAL_SEED", "0")  # seed_everything sets it; restored afterwards
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.cli import LightningCLI
    from lightning.pytorch.strategies import DDPStrategy, ModelParallelStrategy

    args = ["--config", str(SAMPLE)]
    for name in stack:
        args += ["--config", str(CONFIGS / "strategy" / f"{name}.yaml")]
    cli = LightningCLI(
        L.LightningModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=[*args, "--trainer.logger", "false"],
        run=False,
    )
    trainer = cli.trainer
    if check == "ddp":
        assert isinstance(trainer.strategy, DDPStrategy) and trainer.num_nodes == 2
        steps = [c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)]
        assert len(steps) == 2 and steps[1]._every_n_train_steps == 200  # appended, not replaced
        assert isinstance(trainer.strategy._layer_sync, GlobalSyncBatchNorm)
    elif check == "fsdp":
        assert type(trainer.strategy).__name__ == "FSDP2Strategy"
        assert isinstance(trainer.strategy._layer_sync, GlobalSyncBatchNorm)
    elif check == "tensor":
        assert type(trainer.strategy) is ModelParallelStrategy
    elif check == "domain":
        from climdl.parallel.domain import DomainParallelStrategy

        strategy = trainer.strategy
        assert isinstance(strategy, DomainParallelStrategy) and strategy.domain_size == 2
        assert trainer.num_nodes == 2 and strategy.data_size == 2  # 4 processes: 2 x 2 mesh
        assert strategy.distributed_sampler_kwargs["num_replicas"] == 2
    elif check == "pipeline":
        assert isinstance(trainer.strategy, PipelineStrategy)
        assert trainer.strategy.schedule_name == "1f1b" and trainer.strategy.n_microbatches == 4
    else:
        assert trainer.num_devices == 1


def test_restart_checkpoint_lives_in_the_run_folder(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from climdl.parallel.checkpoint import RestartCheckpoint

    with pytest.raises(ConfigError, match="start with 'last'"):
        RestartCheckpoint(filename="step")
    with pytest.raises(ConfigError, match="every_n_train_steps"):
        RestartCheckpoint(every_n_train_steps=0)
    cb = RestartCheckpoint(every_n_train_steps=5)
    trainer: Any = SimpleNamespace(default_root_dir=str(tmp_path))
    assert cb._find_last_checkpoints(trainer) == set()
    (tmp_path / "checkpoints").mkdir()
    for name in ("last-step.ckpt", "last.ckpt", "best-epoch=001.ckpt"):
        (tmp_path / "checkpoints" / name).write_bytes(b"")
    found = {Path(p).name for p in cb._find_last_checkpoints(trainer)}
    assert found == {"last-step.ckpt", "last.ckpt"}


def test_parallel_subcommands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse
    import json

    from climdl.errors import DataError
    from climdl.parallel.cli import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    for key, value in {
        "SLURM_NTASKS": "4",
        "SLURM_PROCID": "2",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "1",
        "SLURM_NNODES": "2",
        "SLURM_JOB_NAME": "job",
    }.items():
        monkeypatch.setenv(key, value)
    for key in ("RANK", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(key, raising=False)
    args = parser.parse_args(["launch-info", "--json"])
    assert args.func(args) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["launcher"], info["global_rank"], info["node_rank"]) == ("slurm", 2, 1)
    args = parser.parse_args(["consolidate", str(tmp_path)])
    with pytest.raises(DataError, match="not a sharded checkpoint"):
        args.func(args)


def _sbatch(tmp_path: Path, run: Path) -> list[str]:
    """Run scripts/slurm/train.sbatch with stand-ins for srun and scontrol: srun's arguments."""
    import os
    import subprocess

    from climdl.parallel.testing import REPO

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "srun").write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$SRUN_ARGS"\n')
    (bin_dir / "scontrol").write_text("#!/bin/sh\necho node017\necho node018\n")
    for f in ("srun", "scontrol"):
        (bin_dir / f).chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "SRUN_ARGS": str(tmp_path / "srun.txt"),
        "SLURM_JOB_ID": "123",
        "SLURM_JOB_NAME": "t",
        "SLURM_JOB_NODELIST": "node[017-018]",
        "SLURM_JOB_NUM_NODES": "2",
        "SLURM_NTASKS_PER_NODE": "4",
        "SLURM_CPUS_PER_TASK": "8",
        "RUN_DIR": str(run),
        "STRATEGY": "fsdp",
    }
    subprocess.run(
        ["bash", str(REPO / "scripts" / "slurm" / "train.sbatch"), "--seed", "3"],
        env=env,
        check=True,
        timeout=60,
        capture_output=True,
        cwd=tmp_path,
    )
    return (tmp_path / "srun.txt").read_text().splitlines()


def test_sbatch_template_resumes_from_the_newest_checkpoint(tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = _sbatch(tmp_path, run)
    assert args[:2] == ["--kill-on-bad-exit=1", "climdl"] and "--ckpt_path" not in args
    assert "configs/strategy/fsdp.yaml" in args and "configs/strategy/restartable.yaml" in args
    i, j = args.index("--trainer.num_nodes"), args.index("--trainer.devices")
    assert (args[i + 1], args[j + 1], args[-2:]) == ("2", "4", ["--seed", "3"])
    (run / "checkpoints" / "last-step.ckpt").mkdir(parents=True)  # a sharded checkpoint folder
    args = _sbatch(tmp_path, run)
    assert args[args.index("--ckpt_path") + 1] == str(run / "checkpoints" / "last-step.ckpt")
    (run / "hpc_ckpt_1.ckpt").write_bytes(b"")  # SIGUSR1 was handled: Lightning resumes by itself
    assert "--ckpt_path" not in _sbatch(tmp_path, run)
