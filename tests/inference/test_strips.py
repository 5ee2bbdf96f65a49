"""Strip-wise emulator inference (``climdl downscale --block-rows``): exact halos, the whole
grid's values, activation memory that falls with the block, and clear refusals."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn

from climdl.cli import main
from climdl.errors import ConfigError
from climdl.inference.receptive import chain_rows
from climdl.inference.strips import (
    fine_modules,
    forward_strip,
    plan_strips,
    predict_strips,
    split_network,
)
from climdl.models import DeepESD, DouryUNet
from climdl.models.blocks import BlockKind
from climdl.models.heads import FineCovariateHead
from climdl.tasks.checkpoint import load_emulator
from climdl.tasks.downscaling import DownscalingTask
from tests.argv import downscale_argv
from tests.paths import FIXTURES

EMULATOR = FIXTURES / "emulator-0.1.ckpt"  # tasmax (residual to its baseline) + pr, orography
PREDICTORS = FIXTURES / "predictors-0.1.nc"


def _network(
    block: BlockKind, fuse: bool, side: int = 8, out: int = 64, seed: int = 0
) -> tuple[nn.Module, DouryUNet]:
    """A tiny Doury UNet (``side`` -> ``out``, 1-D inputs), optionally with the orography
    fusion, in eval mode with BatchNorm statistics that are not the identity."""
    torch.manual_seed(seed)
    unet = DouryUNet(
        3,
        4 if fuse else 2,
        (side, side),
        (out, out),
        n_scalars=2,
        base_filters=4,
        max_filters=8,
        extra_filters=4,
        block=block,
    )
    net: nn.Module = FineCovariateHead(unet, 4, torch.randn(1, out, out), 2) if fuse else unet
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert m.running_mean is not None and m.running_var is not None
            m.running_mean.normal_(0.0, 0.1)
            m.running_var.uniform_(0.5, 2.0)
            m.bias.data.uniform_(0.0, 0.5)  # keeps many ReLUs open: dependencies show
    return net.eval(), unet


@pytest.mark.parametrize("block", ["plain", "residual", "inception"])
@pytest.mark.parametrize("fuse", [False, True], ids=["no-orography", "orography"])
@pytest.mark.parametrize(
    ("block_rows", "n_strips"),
    [(8, 8), (24, 3), (40, 2), (5, 13), (64, 1)],
    ids=["one-coarse-row", "odd-not-dividing", "not-dividing", "not-coarse-rows", "whole"],
)
def test_strips_give_the_whole_grid(
    block: BlockKind, fuse: bool, block_rows: int, n_strips: int
) -> None:
    """Strips of 1 coarse row, 3 strips of 24/24/16 rows, 40/24 rows, strips of 5 rows that cut
    coarse rows, one strip: each equals the whole-grid forward pass, and together they cover
    every output row once."""
    net, unet = _network(block, fuse)
    x, s = torch.randn(3, 3, 8, 8), torch.randn(3, 2)
    plan = plan_strips(net, block_rows)
    assert len(plan.strips) == n_strips and plan.factor == 8
    assert [st.rows[1] - st.rows[0] for st in plan.strips[:-1]] == [block_rows] * (n_strips - 1)
    assert [r for st in plan.strips for r in range(*st.rows)] == list(range(64))
    with torch.no_grad():
        whole = net(x, s)
        coarse = unet.forward_coarse(x, s)
        parts = torch.cat([forward_strip(net, coarse, st) for st in plan.strips], 2)
    torch.testing.assert_close(parts, whole, rtol=0, atol=1e-5)


@pytest.mark.parametrize("block", ["plain", "residual"])
def test_halo_is_exactly_the_receptive_field(block: BlockKind) -> None:
    """Perturbing coarse row i changes exactly the fine rows whose computed dependence
    (:func:`chain_rows` over the fine levels, the head and the 3x3 fusion) holds row i: the
    halo is wide enough (no wrong rows) and no wider (no wasted rows). In float64, so that
    faint far dependences are not lost to rounding."""
    net, unet = _network(block, fuse=True)
    net.double()
    assert isinstance(net, FineCovariateHead)
    mods = fine_modules(unet, net)
    deps = [chain_rows(mods, y, y) for y in range(64)]
    x = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    h = unet.forward_coarse(x, torch.randn(1, 2, dtype=torch.float64))
    with torch.no_grad():
        base = net.fuse_strip(unet.forward_fine(h), 0)
        for i in range(8):
            h2 = h.clone()
            h2[:, :, i] += 10.0 * torch.randn_like(h2[:, :, i])
            diff = (net.fuse_strip(unet.forward_fine(h2), 0) - base).abs().amax(dim=(0, 1, 3))
            changed = diff.nonzero().flatten().tolist()
            assert changed == [y for y, (lo, hi) in enumerate(deps) if lo <= i <= hi], i
    # 3 fine levels + the fusion: 2 coarse rows above a strip, 3 below (the transposed convs
    # read one row below); cropped level by level: the last level keeps 1 row above and below
    # (the fusion's 3x3 conv)
    plan = plan_strips(net, 8)
    assert plan.halo == (2, 3)
    assert [
        (st.levels[-1][0] - st.rows[0], st.levels[-1][1] - st.rows[1]) for st in plan.strips[1:-1]
    ] == [(-1, 1)] * 6


def _fine_bytes(net: nn.Module, unet: DouryUNet, block_rows: int | None) -> int:
    """Bytes of the outputs of the fine part's layers during its largest strip (whole grid:
    ``block_rows=None``), counted by forward hooks on every leaf module."""
    head = net if isinstance(net, FineCovariateHead) else None
    leaves = [
        m for top in fine_modules(unet, head) for m in top.modules() if not list(m.children())
    ]
    counted = [0]

    def hook(_m: nn.Module, _i: object, out: torch.Tensor) -> None:
        counted[0] += out.numel() * out.element_size()

    handles = [m.register_forward_hook(hook) for m in leaves]
    x, s = torch.randn(2, 3, 16, 16), torch.randn(2, 2)
    try:
        with torch.no_grad():
            if block_rows is None:
                net(x, s)
                return counted[0]
            plan = plan_strips(net, block_rows)
            coarse = unet.forward_coarse(x, s)
            peak = 0
            for st in plan.strips:
                counted[0] = 0
                forward_strip(net, coarse, st)
                peak = max(peak, counted[0])
            return peak
    finally:
        for hd in handles:
            hd.remove()


def test_activation_memory_falls_with_the_block() -> None:
    """16 x 16 -> 128 x 128: the fine part's activations of one strip fall with its rows, about
    as rows / 128 plus a few rows of halo per level (measured: 0.52 at 64 rows, 0.11 at 8)."""
    net, unet = _network("plain", fuse=True, side=16, out=128)
    whole = _fine_bytes(net, unet, None)
    sizes = [_fine_bytes(net, unet, n) for n in (128, 64, 32, 8)]
    assert sizes[0] == whole  # one strip is the whole grid
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == len(sizes)
    assert sizes[1] <= 0.6 * whole and sizes[-1] <= 0.15 * whole


def test_task_strips_equal_predict_physical() -> None:
    """The stored 0.1 emulator (tasmax residual to its baseline, pr, orography fusion): the
    physical predictions strip by strip are the whole grid's (the baseline cut to each strip)."""
    task = load_emulator(EMULATOR)
    assert isinstance(task, DownscalingTask) and task.spec is not None
    assert task.baseline is not None and isinstance(task.net, FineCovariateHead)
    with xr.open_dataset(PREDICTORS) as ds:
        x = torch.from_numpy(
            ds[list(task.spec.variables)].to_array("c").transpose("time", "c", ...).values
        ).float()
    aux = torch.randn(x.shape[0], len(task.spec.aux_names))
    batch = task.on_after_batch_transfer({"x": x, "aux": aux}, 0)
    with torch.no_grad():
        whole = task.predict_physical(batch)
        for n in (8, 24):
            got = predict_strips(task, batch, plan_strips(task.net, n))
            torch.testing.assert_close(got, whole, rtol=0, atol=1e-4)


def test_cli_block_rows_writes_the_same_file(tmp_path: Path) -> None:
    """``climdl downscale --block-rows 8`` (4 strips of 1 coarse row) and ``12`` (12 + 12 + 8
    rows, cutting coarse rows) write the values of the run without the option."""
    outs = {}
    for name, extra in {
        "whole": [],
        "8": ["--block-rows", "8"],
        "12": ["--block-rows", "12"],
    }.items():
        out = tmp_path / f"{name}.nc"
        assert main(downscale_argv(EMULATOR, PREDICTORS, out, "--quiet", *extra)) == 0
        with xr.open_dataset(out) as ds:
            outs[name] = {v: ds[v].values for v in ("tasmax", "pr")}
    for name in ("8", "12"):
        for v in ("tasmax", "pr"):
            assert np.isfinite(outs[name][v]).all()
            np.testing.assert_allclose(outs[name][v], outs["whole"][v], rtol=0, atol=1e-4)


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--block-rows", "0"], r"--block-rows must be a positive number of output rows, got 0\."),
        (["--block-rows", "-8"], "positive number"),
        (["--block-rows", "8", "--baseline"], "applies to the emulator networks"),
    ],
)
def test_bad_block_rows_are_one_clear_line(
    extra: list[str], match: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "o.nc"
    assert main(downscale_argv(EMULATOR, PREDICTORS, out, "--quiet", *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("climdl: error: --block-rows")
    assert re.search(match, err)
    assert not out.exists()


def test_networks_without_the_split_are_refused() -> None:
    """DeepESD has no coarse/fine split: one sentence naming the checkpoint."""
    net = DeepESD(3, 1, in_size=(8, 8), out_size=(64, 64))
    with pytest.raises(
        ConfigError, match=r"needs a Doury UNet emulator, but x\.ckpt holds a DeepESD"
    ):
        split_network(net, "x.ckpt")
    with pytest.raises(ConfigError, match="Doury UNet"):
        plan_strips(FineCovariateHead(net, 1, torch.zeros(1, 64, 64), 1), 8)


def test_generative_checkpoints_are_refused(
    gen_pr_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = downscale_argv(gen_pr_ckpt, PREDICTORS, tmp_path / "o.nc", "--block-rows", "8", "-q")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "generative checkpoints sample on the whole grid" in err


def test_block_rows_travel_with_the_job_config() -> None:
    """Dask workers and other ranks rebuild the job from its JSON: the option goes along."""
    from climdl.inference.job import JobConfig

    config = JobConfig(checkpoints=("a.ckpt",), block_rows=16)
    assert JobConfig.from_json(config.to_json()).block_rows == 16
    assert JobConfig(checkpoints=("a.ckpt",)).block_rows is None
