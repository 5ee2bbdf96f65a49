"""Pipeline parallelism through ``climdl train`` (configs/strategy/pipeline.yaml) on CPU with gloo.

Two ranks each hold one stage of the UNet; a batch of 16 runs as 4 micro-batches of 4. The
reference is the single-process run with gradient accumulation over the same micro-batches
(batch 4, ``accumulate_grad_batches 4``, DistributedSampler order): BatchNorm sees micro-batches
in both, so losses, gradients and checkpoints must agree to float precision (measured: losses
within 7e-8 relative, gradients and checkpoints bit-identical; tolerance 1e-5). The GPipe run
cuts before ``enc2`` (the 1-D inputs and two skips cross the cut), the 1F1B run resumes its
checkpoint with a cut before ``dec1`` (three skips cross).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from climdl.parallel.testing import grad_rel_l2, max_rel_diff, state_rel_l2, strategy_config
from tests.parallel.train_runs import run_options, train_and_probe

pytestmark = pytest.mark.distributed

TOL = 1e-5


def _cut(schedule: str, before: str) -> list[str]:
    """The pipeline strategy's options: its schedule and the one module the second stage starts at."""
    return [
        "--trainer.strategy.init_args.schedule",
        schedule,
        "--trainer.strategy.init_args.split_before",
        f"[{before}]",
    ]


@pytest.fixture(scope="module")
def accumulated(
    sample_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Any]]:
    """One process, 4 micro-batches of 4 accumulated per step, 2 epochs of 3 steps; NCHW
    weights like the pipeline's stages (compared to 1e-5: the layouts' kernels round apart)."""
    folder = tmp_path_factory.mktemp("accumulated")
    accumulate = ["--trainer.accumulate_grad_batches", "4", "--trainer.limit_train_batches", "12"]
    accumulate += ["--channels_last", "false"]
    options = run_options(4, 2, *accumulate, devices=1)
    return train_and_probe(folder, "ref", sample_cache, [strategy_config("ddp")], *options)


@pytest.fixture(scope="module")
def gpipe(
    sample_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Any]]:
    """Two stages, GPipe, first epoch."""
    folder = tmp_path_factory.mktemp("pipeline")
    options = run_options(16, 1, *_cut("gpipe", "enc2"))
    configs = [strategy_config("pipeline")]
    return train_and_probe(folder, "gpipe", sample_cache, configs, *options, run_dir=folder / "run")


def test_gpipe_matches_accumulated_single_process(
    accumulated: tuple[Path, dict[str, Any]], gpipe: tuple[Path, dict[str, Any]]
) -> None:
    from climdl.tasks.checkpoint import load_emulator

    run, probe = gpipe
    ref = accumulated[1]
    assert sorted(probe["losses"]) == [0, 1, 2] and probe["world_size"] == 2
    assert max_rel_diff(ref["losses"], probe["losses"], [0, 1, 2]) < TOL
    assert grad_rel_l2(ref["grads"][0], probe["grads"][0]) < TOL
    # each rank kept its own stage only; the checkpoint is one file with the whole network
    assert all(r["modules"].get("Absent", 0) > 0 for r in probe["ranks"])
    last = run / "checkpoints" / "last.ckpt"
    assert last.is_file()
    assert load_emulator(last).net is not None


def test_1f1b_resumes_the_gpipe_checkpoint_with_another_cut(
    accumulated: tuple[Path, dict[str, Any]], gpipe: tuple[Path, dict[str, Any]], sample_cache: Path
) -> None:
    run, _ = gpipe
    options = run_options(16, 2, "--ckpt_path", "last", *_cut("1f1b", "dec1"))
    configs = [strategy_config("pipeline")]
    _, probe = train_and_probe(run.parent, "1f1b", sample_cache, configs, *options, run_dir=run)
    ref_dir, ref = accumulated
    assert sorted(probe["losses"]) == [3, 4, 5]
    assert max_rel_diff(ref["losses"], probe["losses"], [3, 4, 5]) < TOL
    got = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    want = torch.load(ref_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert got["global_step"] == want["global_step"] == 6
    diffs = state_rel_l2(want, got)
    assert max(diffs.values()) < TOL, diffs
