"""``segment`` across ranks: every share of the rows of tiles delivers exactly the whole run's
rows (bit for bit, blended or exact tiling, a model with spatial context), the shares cover
the scene once, and ``torchrun`` with two ranks writes the one-process file."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from climdl.inference.segment_tiling import (
    block_rows,
    plan_exact,
    plan_tiles,
    run_exact,
    run_tiled,
    split_blocks,
)
from climdl.parallel.testing import torchrun_cmd
from tests.clouds_harness import train_tiny_segmenter

K = 3


def _context_model(x: np.ndarray) -> np.ndarray:
    """Probabilities from a 5 x 5 box blur of the bands: each pixel depends on its neighbours,
    so blended tiles overlap in what they compute (unlike a pointwise model)."""
    t = torch.from_numpy(x)
    blur = torch.nn.functional.avg_pool2d(t, 5, stride=1, padding=2, count_include_pad=False)
    w = torch.tensor([[1.0, -0.5], [0.2, 0.7], [-0.8, 0.1]])
    logits = torch.einsum("kc,bchw->bkhw", w, blur) * 3.0
    return torch.softmax(logits, 1).numpy()


def _run(scene: np.ndarray, grid: object, blocks: range | None) -> dict[int, np.ndarray]:
    rows: dict[int, np.ndarray] = {}

    def write(y0: int, probs: np.ndarray) -> None:
        for i in range(probs.shape[1]):
            assert y0 + i not in rows  # each row once
            rows[y0 + i] = probs[:, i].copy()

    read = lambda a, b: scene[:, a:b]  # noqa: E731
    if hasattr(grid, "halo"):
        run_exact(read, _context_model, grid, K, write, 2, None, blocks)  # type: ignore[arg-type]
    else:
        run_tiled(read, _context_model, grid, K, write, 2, None, blocks)  # type: ignore[arg-type]
    return rows


@settings(max_examples=25, deadline=None)
@given(
    h=st.integers(8, 80),
    w=st.integers(8, 40),
    tile_units=st.integers(1, 4),
    overlap_frac=st.floats(0.0, 0.5),
    world=st.integers(2, 5),
    exact=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_shares_deliver_the_whole_runs_rows_bit_for_bit(
    h: int, w: int, tile_units: int, overlap_frac: float, world: int, exact: bool, seed: int
) -> None:
    scene = np.random.default_rng(seed).normal(size=(2, h, w)).astype(np.float32)
    tile = 8 * tile_units + (16 if exact else 0)
    grid = (
        plan_exact(h, w, tile, (4, 4), 8)
        if exact
        else plan_tiles(h, w, tile, int(overlap_frac * tile), 8)
    )
    whole = _run(scene, grid, None)
    assert sorted(whole) == list(range(h))
    got: dict[int, np.ndarray] = {}
    shares = split_blocks(len(grid.rows), world)
    end = 0
    for share in shares:
        if not share:
            continue
        part = _run(scene, grid, share)
        y0, y1 = block_rows(grid, share)
        assert y0 == end and sorted(part) == list(range(y0, y1))  # contiguous, in order
        end = y1
        got |= part
    assert end == h
    for r in range(h):
        np.testing.assert_array_equal(got[r], whole[r])


def test_split_blocks_is_contiguous_and_complete() -> None:
    assert split_blocks(5, 2) == [range(0, 2), range(2, 5)]
    assert split_blocks(1, 3) == [range(0, 0), range(0, 0), range(0, 1)]
    assert [len(r) for r in split_blocks(10, 4)] == [2, 3, 2, 3]


@pytest.mark.distributed
def test_two_ranks_write_the_one_process_mask(tmp_path: Path) -> None:
    from climdl.cli import main

    ckpt = train_tiny_segmenter(tmp_path / "run")
    scene = tmp_path / "run" / "scenes" / "scene_000.nc"
    opts = ["--probabilities", "--tile", "16", "--overlap", "4", "--batch-size", "3", "-q"]
    single, shared = tmp_path / "single.nc", tmp_path / "shared.nc"
    argv = ["segment", "--checkpoint", str(ckpt), "--input", str(scene)]
    assert main([*argv, "--output", str(single), "--device", "cpu", *opts]) == 0
    # the same thread count in every process: bitwise-equal convolutions
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))
    cmd = torchrun_cmd(
        ["--nproc-per-node", "2", "--master-port", "29543"],
        [*argv, "--output", str(shared), "--device", "cpu", *opts],
    )
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with xr.open_dataset(single) as a, xr.open_dataset(shared) as b:
        np.testing.assert_array_equal(a["cloud_mask"].values, b["cloud_mask"].values)
        np.testing.assert_array_equal(a["probability"].values, b["probability"].values)
    assert not list(tmp_path.glob(".*segment-parts"))
