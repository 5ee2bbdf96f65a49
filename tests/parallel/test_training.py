"""Distributed training through the real ``climdl train`` on CPU with gloo, against one process.

A single-process run of the sample config (global batch 16, 3 epochs of 3 steps, the ddp preset
with one device so that batches come in DistributedSampler order) is the reference. Two
processes with 8 samples each - DDP, FSDP2, a simulated two-node job under torchrun and under
SLURM - and tensor parallelism (both ranks see the 16) must reproduce its losses and first-step
gradients; BatchNorm runs over the global batch (climdl.parallel.syncbn). Checkpoints must carry
the run on: FSDP2's sharded checkpoint resumes on 2 and then on 1 rank, a killed rank under
torchrun --max-restarts and a SLURM requeue resume from the last checkpoint, all ending where
the uninterrupted run ends.

Tolerances (float32, Adam): losses of the first 3 steps and first-step gradients within 1e-3
relative (measured: 2e-5 to 6e-5); losses up to step 9 within 5e-3 (measured: 7e-4; Adam's
sign-like updates of near-zero gradients grow the float differences step by step); weights at
step 9 within 1e-4 relative L2 (measured: 1e-6).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from climdl.parallel.launch import free_port
from climdl.parallel.testing import (
    check,
    climdl_cmd,
    grad_rel_l2,
    load_probe,
    max_rel_diff,
    probe_config,
    run_all,
    state_rel_l2,
    strategy_config,
    torchrun_cmd,
    train_args,
)
from tests.parallel.train_runs import TIMEOUT, run_options, train_and_probe

pytestmark = pytest.mark.distributed

EARLY, LATE, GRAD, WEIGHTS = 1e-3, 5e-3, 1e-3, 1e-4


def _compare(
    ref: dict[str, Any], probe: dict[str, Any], steps: list[int], tol: float = EARLY
) -> None:
    assert sorted(probe["losses"]) == steps
    assert max_rel_diff(ref["losses"], probe["losses"], steps) < tol
    if 0 in probe["grads"]:
        assert grad_rel_l2(ref["grads"][0], probe["grads"][0]) < GRAD


@pytest.fixture(scope="module")
def ref(
    sample_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Any]]:
    """The single-process reference: 9 steps of global batch 16."""
    folder = tmp_path_factory.mktemp("ref")
    options = run_options(16, 3, devices=1)
    return train_and_probe(folder, "ref", sample_cache, [strategy_config("ddp")], *options)


SYNCBN_SCRIPT = """
import json, sys, torch, torch.distributed as dist
from torch import nn
from climdl.parallel.syncbn import GlobalBatchNorm
dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(0)
x, w = torch.randn(12, 3, 4, 4) * 3 + 1, torch.randn(12, 3, 4, 4)
ref, glob = nn.BatchNorm2d(3), GlobalBatchNorm(3)
with torch.no_grad():
    ref.weight.copy_(torch.randn(3)); glob.weight.copy_(ref.weight)
rows = slice(0, 5) if rank == 0 else slice(5, 12)  # uneven slices: counts must weigh in
xa = x.clone().requires_grad_()
(ref(xa) * w).sum().backward()
xl = x[rows].clone().requires_grad_()
out = glob(xl)
(out * w[rows]).sum().backward()
wg = glob.weight.grad.clone(); dist.all_reduce(wg)
with torch.no_grad():
    ref_out = nn.functional.batch_norm(x, None, None, ref.weight, ref.bias, True, 0.0, ref.eps)
diff = {"out": (out - ref_out[rows]).abs().max().item(),
        "input_grad": (xl.grad - xa.grad[rows]).abs().max().item(),
        "weight_grad": (wg - ref.weight.grad).abs().max().item(),
        "running_var": (glob.running_var - ref.running_var).abs().max().item(),
        "running_mean": (glob.running_mean - ref.running_mean).abs().max().item()}
if rank == 0:
    open(sys.argv[1], "w").write(json.dumps(diff))
dist.destroy_process_group()
"""


def test_global_batchnorm_over_two_processes_equals_batchnorm_of_the_whole_batch(
    tmp_path: Path,
) -> None:
    script = tmp_path / "syncbn.py"
    script.write_text(SYNCBN_SCRIPT)
    port = str(free_port())
    envs = [
        {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "RANK": str(r), "WORLD_SIZE": "2"}
        for r in range(2)
    ]
    logs = [tmp_path / f"r{r}.log" for r in range(2)]
    out = tmp_path / "diff.json"
    check(run_all([[sys.executable, str(script), str(out)]] * 2, logs, 120, envs), logs)
    diff = json.loads(out.read_text())
    assert max(diff.values()) < 1e-5, diff


def test_ddp_matches_single_process(
    ref: tuple[Path, dict[str, Any]], sample_cache: Path, tmp_path: Path
) -> None:
    """``climdl train --config ... --config configs/strategy/ddp.yaml`` (Lightning launches
    the second process)."""
    configs = [strategy_config("ddp")]
    run, probe = train_and_probe(tmp_path, "ddp", sample_cache, configs, *run_options(8, 1))
    _compare(ref[1], probe, [0, 1, 2])
    assert probe["world_size"] == 2
    assert probe["ranks"][0]["modules"].get("GlobalBatchNorm", 0) > 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["val_rmse"]["tasmax"] > 0


@pytest.fixture(scope="module")
def fsdp(
    sample_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Any]]:
    """FSDP2 on 2 ranks for the first epoch; its checkpoints are sharded folders."""
    folder = tmp_path_factory.mktemp("fsdp")
    configs, options = [strategy_config("fsdp")], run_options(8, 1)
    return train_and_probe(
        folder, "fsdp-a", sample_cache, configs, *options, run_dir=folder / "run"
    )


def test_fsdp2_matches_single_process(
    ref: tuple[Path, dict[str, Any]], fsdp: tuple[Path, dict[str, Any]]
) -> None:
    run, probe = fsdp
    _compare(ref[1], probe, [0, 1, 2])
    layouts = probe["ranks"][0]["layouts"]
    assert layouts["net.net.decoder.6.block.conv1.weight"] == "('data_parallel',):['Shard(dim=0)']"
    last = run / "checkpoints" / "last.ckpt"
    assert last.is_dir() and len(list(last.glob("*.distcp"))) == 2


def test_fsdp2_checkpoint_resumes_on_two_then_one_rank(
    ref: tuple[Path, dict[str, Any]], fsdp: tuple[Path, dict[str, Any]], sample_cache: Path
) -> None:
    """Sharded checkpoint (2 ranks) -> resume on 2 ranks -> resume on 1 rank (global batch kept
    at 16): the 9 steps continue the single-process trajectory, Adam state included."""
    from climdl.parallel.cli import register
    from climdl.tasks.checkpoint import load_emulator, read_checkpoint

    run, _ = fsdp
    folder = run.parent
    configs, resume = [strategy_config("fsdp")], ["--ckpt_path", "last"]
    options = run_options(8, 2, *resume)
    _, two = train_and_probe(folder, "fsdp-b", sample_cache, configs, *options, run_dir=run)
    _compare(ref[1], two, [3, 4, 5], LATE)
    options = run_options(16, 3, *resume, devices=1)
    _, one = train_and_probe(folder, "fsdp-c", sample_cache, configs, *options, run_dir=run)
    _compare(ref[1], one, [6, 7, 8], LATE)
    assert one["world_size"] == 1
    full = run / "consolidated.ckpt"  # through `climdl consolidate`
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["consolidate", str(run / "checkpoints" / "last.ckpt"), "-o", str(full)]
    )
    assert args.func(args) == 0
    assert load_emulator(full).net is not None  # one file for inference
    got, want = read_checkpoint(full), read_checkpoint(ref[0] / "checkpoints" / "last.ckpt")
    assert got["global_step"] == want["global_step"] == 9
    assert {float(s["step"]) for s in got["optimizer_states"][0]["state"].values()} == {9.0}
    diffs = state_rel_l2(want, got)
    assert diffs["weights"] < WEIGHTS and diffs["exp_avg_sq"] < 1e-2, diffs


def test_tensor_parallel_matches_single_process(
    ref: tuple[Path, dict[str, Any]], sample_cache: Path, tmp_path: Path
) -> None:
    """Both ranks read the whole batch; the 1-D MLP's Linear layers are split between them."""
    configs = [strategy_config("tensor")]
    _, probe = train_and_probe(tmp_path, "tensor", sample_cache, configs, *run_options(16, 1))
    _compare(ref[1], probe, [0, 1, 2])
    layouts = probe["ranks"][0]["layouts"]
    assert "tensor_parallel" in layouts["net.net.scalar_mlp.0.weight"]
    assert "Shard(dim=0)" in layouts["net.net.scalar_mlp.0.weight"]  # column-wise
    assert "Shard(dim=1)" in layouts["net.net.scalar_mlp.1.weight"]  # row-wise


def test_two_node_torchrun_job_survives_a_killed_rank(
    ref: tuple[Path, dict[str, Any]], sample_cache: Path, tmp_path: Path
) -> None:
    """Two torchrun agents (``--nnodes 2``, one process each, c10d rendezvous) on this machine,
    with the config's loggers on and a RestartCheckpoint every 3 steps (restartable.yaml's);
    rank 1 is SIGKILLed at step 4 and torchrun (``--max-restarts 1``) restarts both ranks,
    which resume from the step-3 checkpoint (``--ckpt_path last``, although the loggers have
    moved on to a new version folder) and finish where the uninterrupted run finishes."""
    marker = tmp_path / "killed"
    probe_path = tmp_path / "killed.pt"
    fault = {"step": 4, "rank": 1, "marker": str(marker)}
    cfg = probe_config(tmp_path, probe_path, fault, restart_every=3)
    configs = [strategy_config("ddp"), strategy_config("multinode"), cfg]
    options = run_options(8, 3, "--ckpt_path", "last", devices=1)
    args = train_args(tmp_path / "run", configs, *options, loggers=True)
    endpoint = f"127.0.0.1:{free_port()}"
    rdzv = [
        "--nnodes",
        "2",
        "--nproc-per-node",
        "1",
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        endpoint,
        "--rdzv-id",
        "climdl-test",
        "--max-restarts",
        "1",
    ]
    env = {"CLIMDL_CACHE": str(sample_cache), "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}
    logs = [tmp_path / f"node{k}.log" for k in range(2)]
    check(run_all([torchrun_cmd(rdzv, args)] * 2, logs, TIMEOUT, [env, env], cwd=tmp_path), logs)
    assert marker.exists()  # the fault happened
    probe = load_probe(probe_path)
    _compare(ref[1], probe, [3, 4, 5, 6, 7, 8], LATE)  # the restart lost steps 3-4 only
    assert (tmp_path / "run" / "checkpoints" / "last-step.ckpt").is_file()
    assert len(list(tmp_path.glob("runs/sample-alps/csv/version_*"))) == 2  # one per attempt
    ranks = probe["ranks"]
    assert {r["node_rank"] for r in ranks} == {0, 1} and ranks[0]["num_nodes"] == 2
    assert ranks[0]["environment"] == "TorchElasticEnvironment"


def _slurm_env(cache: Path, rank: int, ntasks: int, port: str, restart: int = 0) -> dict[str, str]:
    return {
        "CLIMDL_CACHE": str(cache),
        "SLURM_NTASKS": str(ntasks),
        "SLURM_NTASKS_PER_NODE": "1",
        "SLURM_NNODES": str(ntasks),
        "SLURM_PROCID": str(rank),
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": str(rank),
        "SLURM_NODELIST": "localhost",
        "SLURM_JOB_NAME": "climdl-test",
        "SLURM_JOB_ID": "4242",
        "SLURM_RESTART_COUNT": str(restart),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": port,
    }


def test_two_node_slurm_job(
    ref: tuple[Path, dict[str, Any]], sample_cache: Path, tmp_path: Path
) -> None:
    """Two tasks with the variables srun sets on two nodes: Lightning's SLURMEnvironment."""
    probe_path = tmp_path / "slurm.pt"
    cfg = probe_config(tmp_path, probe_path)
    configs = [strategy_config("ddp"), strategy_config("multinode"), cfg]
    args = train_args(tmp_path / "run", configs, *run_options(8, 1, devices=1))
    port = str(free_port())
    logs = [tmp_path / f"task{k}.log" for k in range(2)]
    envs = [_slurm_env(sample_cache, k, 2, port) for k in range(2)]
    check(run_all([climdl_cmd(args)] * 2, logs, TIMEOUT, envs, cwd=tmp_path), logs)
    probe = load_probe(probe_path)
    _compare(ref[1], probe, [0, 1, 2])
    assert {r["node_rank"] for r in probe["ranks"]} == {0, 1}
    assert probe["ranks"][0]["environment"] == "SLURMEnvironment"
    assert probe["ranks"][0]["launcher"] == "slurm"


def test_slurm_requeue_resumes_from_the_hpc_checkpoint(
    ref: tuple[Path, dict[str, Any]], sample_cache: Path, tmp_path: Path
) -> None:
    """SIGUSR1 (SLURM's ``--signal=SIGUSR1@90`` warning) at step 3: Lightning writes
    ``hpc_ckpt_1.ckpt`` and calls ``scontrol requeue`` (a stand-in that records the call and
    kills the job, as SLURM would); the requeued job resumes from it on its own."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"
    scontrol.write_text('#!/bin/sh\necho "$@" >> "$FAKE_SCONTROL_LOG"\nkill -9 $PPID\n')
    scontrol.chmod(0o755)
    probe_path = tmp_path / "requeue.pt"
    cfg = probe_config(tmp_path, probe_path, {"step": 3, "rank": 0, "signal": "SIGUSR1"})
    args = train_args(
        tmp_path / "run", [strategy_config("ddp"), cfg], *run_options(16, 3, devices=1)
    )
    port = str(free_port())
    extra = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "FAKE_SCONTROL_LOG": str(tmp_path / "scontrol.log"),
    }
    for attempt, expected in ((0, -9), (1, 0)):
        log = tmp_path / f"attempt{attempt}.log"
        env = {**_slurm_env(sample_cache, 0, 1, port, attempt), **extra}
        check(run_all([climdl_cmd(args)], [log], TIMEOUT, [env], cwd=tmp_path), [log], expected)
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "4242"]
    assert (tmp_path / "run" / "hpc_ckpt_1.ckpt").is_file()
    probe = load_probe(probe_path)
    _compare(ref[1], probe, [3, 4, 5, 6, 7, 8], 1e-5)  # same process count: exact resume
    got = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert (
        state_rel_l2(torch.load(ref[0] / "checkpoints" / "last.ckpt", weights_only=True), got)[
            "weights"
        ]
        < 1e-6
    )
