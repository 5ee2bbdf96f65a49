"""The generative emulator (stage-1 mean + flow-matching residual) trained through climdl train."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from climdl.tasks.checkpoint import load_emulator, read_checkpoint
from climdl.tasks.downscaling import DownscalingTask
from climdl.tasks.generative import GenerativeDownscalingTask


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
