"""Domain parallelism (climdl.parallel.domain): strips of rows with halo exchanges against the
whole grid in one process.

Unit level (gloo, one process per strip, ``tests/parallel/domain_script.py``): the halo layers on
an odd-sized grid (13 rows in 2 and 3 strips: forward and input gradients), the Doury UNet with
plain and residual blocks and with the orography fusion, and the cloud UNet with inception
blocks, in training mode with BatchNorm and a NaN-masked MSE, on 2 strips and on a 2 x 2
data x domain mesh: outputs, the whole-domain loss, parameter gradients (DDP's average) and the
BatchNorm running statistics. Measured: outputs within 1.5e-6, gradients within 1e-6 relative.

End to end (``climdl train`` with ``configs/strategy/domain.yaml``): 2 strips and the 4-process
data x domain mesh reproduce the single-process run's losses and first-step gradients within the
tolerances of the other presets (tests/parallel/test_training.py), and the checkpoint of the
2-strip run resumes in one process.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from climdl.errors import ConfigError
from climdl.models import DeepESD, DouryUNet
from climdl.parallel.domain import plan_for, shard_network, unshard_network
from climdl.parallel.halo import Domain, halo_exchange, partition
from climdl.parallel.launch import free_port
from climdl.parallel.testing import (
    check,
    climdl_cmd,
    grad_rel_l2,
    load_probe,
    max_rel_diff,
    probe_config,
    run_all,
    strategy_config,
)
from tests.clouds_harness import CLOUDS_CONFIG, TINY_CLOUDS, sample_clouds_argv
from tests.parallel.train_runs import TIMEOUT, run_options, train_and_probe

SCRIPT = Path(__file__).with_name("domain_script.py")


def _run(tmp_path: Path, n: int, case: str, data: int = 1) -> dict[str, float]:
    port = str(free_port())
    root = str(Path(__file__).resolve().parents[2])
    envs = [
        {
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": port,
            "RANK": str(r),
            "WORLD_SIZE": str(n),
            "PYTHONPATH": root,
        }
        for r in range(n)
    ]
    logs = [tmp_path / f"{case}-{r}.log" for r in range(n)]
    out = tmp_path / f"{case}.json"
    cmd = [sys.executable, str(SCRIPT), str(out), case, str(data)]
    check(run_all([cmd] * n, logs, 180, envs), logs)
    result: dict[str, float] = json.loads(out.read_text())
    return result


# ------------------------------------------------------------------ one process
def test_partition_cuts_on_the_pooling_multiple_and_refuses_narrow_strips() -> None:
    assert partition(13, 2) == [(0, 7), (7, 13)]
    assert partition(13, 3) == [(0, 5), (5, 9), (9, 13)]
    assert partition(128, 3, 8) == [(0, 48), (48, 88), (88, 128)]
    with pytest.raises(ConfigError, match="multiple of 8 rows"):
        partition(100, 2, 8)
    with pytest.raises(ConfigError, match="at most 2 domain blocks"):
        partition(16, 3, 8)


def test_plans_refuse_what_cannot_be_split() -> None:
    unet = DouryUNet(3, 1, in_size=(16, 16), out_size=(64, 64), base_filters=4, max_filters=8)
    assert plan_for(unet, 2).multiple == 4
    with pytest.raises(ConfigError, match="at most 16 domain blocks"):
        plan_for(unet, 17)
    flat = DouryUNet(3, 1, in_size=(16, 16), out_size=(16, 16), base_filters=4, max_filters=8)
    with pytest.raises(ConfigError, match="has none"):
        plan_for(flat, 2)
    with pytest.raises(ConfigError, match="not DeepESD"):
        plan_for(DeepESD(3, 1, in_size=(16, 16), out_size=(64, 64)), 2)


def test_halo_layers_round_trip_and_equal_the_plain_network_in_one_strip() -> None:
    torch.manual_seed(0)
    net = DouryUNet(3, 2, in_size=(16, 16), out_size=(64, 64), n_scalars=2, block="residual",
                    base_filters=4, max_filters=8, extra_filters=4)  # fmt: skip
    x, s = torch.randn(2, 3, 16, 16), torch.randn(2, 2)
    ref = net(x, s)
    names = list(net.state_dict())
    shard_network(net, Domain(1, 0), None, None)
    stage: Any = net.decoder[5]
    assert type(stage.block.conv1).__name__ == "HaloConv2d"
    assert list(net.state_dict()) == names
    assert torch.equal(net(x, s), ref)
    unshard_network(net)
    assert type(stage.block.conv1) is torch.nn.Conv2d
    assert list(net.state_dict()) == names and torch.equal(net(x, s), ref)


def test_a_strip_narrower_than_the_halo_is_one_clear_error() -> None:
    with pytest.raises(ConfigError, match="narrower than the halo"):
        halo_exchange(torch.zeros(1, 1, 1, 4), 2, 2, Domain(2, 0, None, None, 1))


# ------------------------------------------------------------------ gloo processes
@pytest.mark.distributed
@pytest.mark.parametrize("n", [2, 3])
def test_halo_layers_on_an_odd_grid_equal_the_whole_grid(tmp_path: Path, n: int) -> None:
    diff = _run(tmp_path, n, "layers_13")
    assert diff["forward"] < 1e-5 and diff["input_grad"] < 1e-5, diff


@pytest.mark.distributed
@pytest.mark.parametrize(
    ("n", "case", "data"),
    [
        (2, "unet", 1),
        (2, "unet_residual", 1),
        (2, "cloud", 1),
        (4, "unet_orog", 2),
        (4, "cloud", 2),
    ],
)
def test_strips_train_as_the_whole_domain(tmp_path: Path, n: int, case: str, data: int) -> None:
    diff = _run(tmp_path, n, case, data)
    assert diff["forward"] < 1e-5, diff
    assert diff["loss"] < 1e-5 and diff["grad_rel_l2"] < 1e-5, diff
    assert diff["running_var"] < 1e-5 and diff["same_names"] == 0, diff


@pytest.mark.distributed
@pytest.mark.parametrize("loss", ["ce_dice", "bce_dice"])
def test_the_cloud_loss_on_strips_is_the_whole_domain_loss(tmp_path: Path, loss: str) -> None:
    """Class-weighted cross-entropy or BCE, Dice and the any-cloud term, with a strip that is
    mostly without data: every sum is reduced over the strips."""
    diff = _run(tmp_path, 2, f"seg_{loss}")
    assert diff["loss"] < 1e-5 and diff["input_grad"] < 1e-6, diff


# ------------------------------------------------------------------ through climdl train
EARLY, LATE, GRAD = 1e-3, 5e-3, 1e-3  # as for the other presets (tests/parallel/test_training.py)


def _compare(ref: dict[str, Any], probe: dict[str, Any], steps: list[int], tol: float) -> None:
    assert sorted(probe["losses"]) == steps
    assert max_rel_diff(ref["losses"], probe["losses"], steps) < tol
    if 0 in probe["grads"]:
        assert grad_rel_l2(ref["grads"][0], probe["grads"][0]) < GRAD


@pytest.fixture(scope="module")
def domain_ref(sample_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One process, global batch 16, 2 epochs of 3 steps (the ddp preset on one device, so
    that batches come in DistributedSampler order)."""
    folder = tmp_path_factory.mktemp("domain-ref")
    options = run_options(16, 2, devices=1)
    return train_and_probe(folder, "ref", sample_cache, [strategy_config("ddp")], *options)[1]


@pytest.mark.distributed
def test_two_strips_train_as_one_process_and_resume_in_one(
    domain_ref: dict[str, Any], sample_cache: Path, tmp_path: Path
) -> None:
    """``--config configs/strategy/domain.yaml``: 2 processes each hold half of every day's
    128 x 128 grid (the UNet's 32-128 levels and the orography fusion), then the checkpoint
    carries on in one process."""
    configs = [strategy_config("domain")]
    options = run_options(16, 1, "--data.test_period", "historical")  # scored after the fit
    run, probe = train_and_probe(tmp_path, "dom", sample_cache, configs, *options)
    _compare(domain_ref, probe, [0, 1, 2], EARLY)
    assert probe["world_size"] == 2
    assert probe["ranks"][0]["modules"].get("HaloConv2d", 0) > 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["val_rmse"]["tasmax"] > 0
    # the test period and its baselines are scored on whole grids after the split is undone
    assert summary["test"]["rmse"]["tasmax"] > 0 and summary["test"]["baseline_rmse"]
    resume = run_options(16, 2, "--ckpt_path", "last", devices=1)
    ddp = [strategy_config("ddp")]
    _, one = train_and_probe(tmp_path, "one", sample_cache, ddp, *resume, run_dir=run)
    _compare(domain_ref, one, [3, 4, 5], LATE)


@pytest.mark.distributed
def test_a_data_by_domain_mesh_trains_as_one_process(
    domain_ref: dict[str, Any], sample_cache: Path, tmp_path: Path
) -> None:
    """4 processes: 2 data groups of 8 days, each day in 2 strips."""
    configs = [strategy_config("domain")]
    options = run_options(8, 1, devices=4)
    _, probe = train_and_probe(tmp_path, "mesh", sample_cache, configs, *options)
    _compare(domain_ref, probe, [0, 1, 2], EARLY)
    assert probe["world_size"] == 4


@pytest.mark.distributed
def test_the_cloud_unet_trains_on_two_strips_as_one_process(tmp_path: Path) -> None:
    """``climdl train --config configs/clouds/sample.yaml --config .../domain.yaml``: every crop
    (and validation scene) in two strips, against the same run in one process."""
    from climdl.cli import main

    assert main(sample_clouds_argv(tmp_path / "scenes", 4, (48, 40), 3)) == 0
    probes = {}
    for name, devices in (("one", "1"), ("two", "2")):
        preset = strategy_config("ddp" if devices == "1" else "domain")
        probe = tmp_path / f"{name}.pt"
        cfg = probe_config(tmp_path, probe)
        args = ["train", "--config", str(CLOUDS_CONFIG), "--config", str(preset),
                "--config", str(cfg), "--trainer.default_root_dir", str(tmp_path / name),
                "--data.root", str(tmp_path / "scenes"), "--data.test_root", "null",
                "--trainer.max_epochs", "1", *TINY_CLOUDS, "--trainer.devices", devices]  # fmt: skip
        log = tmp_path / f"{name}.log"
        check(run_all([climdl_cmd(args)], [log], TIMEOUT), [log])
        probes[name] = load_probe(probe)
    _compare(probes["one"], probes["two"], sorted(probes["one"]["losses"]), EARLY)
    assert probes["two"]["ranks"][0]["modules"].get("HaloConv2d", 0) > 0
