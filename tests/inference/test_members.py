"""``climdl downscale --members``: seeded noise, member output, resume, ranks, Dask, bad input.

Most tests run a stand-in generative emulator (:class:`_Stub`: the tiny pr UNet's mean times
``exp(0.3 * noise)``) so that they test the ensemble plumbing in seconds; the end-to-end ones
use the tiny trained generative checkpoint (``gen_pr_ckpt``).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cftime
import numpy as np
import pytest
import torch
import xarray as xr

from climdl.cli import main
from climdl.inference import downscale
from climdl.inference.members import (
    day_keys,
    default_chunk_days,
    member_batches,
    member_noise,
    member_seed,
)
from climdl.inference.parts import parts_dir
from climdl.parallel.testing import torchrun_cmd
from tests.argv import downscale_argv
from tests.cfcheck import cf_errors

DECODE = xr.coders.CFDatetimeCoder(use_cftime=True)
STUB = "stubgen"
MARCH = ("--start", "1981-03-01", "--end", "1981-03-20")


def _open(path: Path) -> xr.Dataset:
    return xr.open_dataset(path, decode_times=DECODE, decode_coords="all")


class _Stub(torch.nn.Module):
    """A generative emulator's interface around a deterministic one: mean * exp(0.3 z)."""

    generative = True
    network_label = "unet + stub residual"

    def __init__(self, mean: Any) -> None:
        super().__init__()
        self.mean = mean
        self.spec = mean.spec
        self.hp = SimpleNamespace(members=3, sampler_steps=2, network="unet")

    def on_after_batch_transfer(self, batch: dict[str, Any], idx: int) -> dict[str, Any]:
        return dict(self.mean.on_after_batch_transfer(batch, idx))

    def predict_physical(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.mean.predict_physical(batch)  # type: ignore[no-any-return]

    def sample_physical(
        self, batch: dict[str, Any], noise: torch.Tensor, steps: int | None = None
    ) -> torch.Tensor:
        mu = self.predict_physical(batch).float()
        return mu[:, None] * torch.exp(0.3 * noise)


@pytest.fixture()
def stub_ckpt(pr_ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the pr checkpoint that loads as a :class:`_Stub` generative emulator."""
    import climdl.tasks.checkpoint as ck

    load = ck.load_emulator

    def fake(path: Any, *args: Any, **kwargs: Any) -> Any:
        task = load(path, *args, **kwargs)
        return _Stub(task) if Path(path).name.startswith(STUB) else task

    monkeypatch.setattr(ck, "load_emulator", fake)
    path = tmp_path / f"{STUB}.ckpt"
    path.write_bytes(pr_ckpt.read_bytes())
    return path


@pytest.fixture(scope="module")
def perfect(sample_root: Path) -> Path:
    return sample_root / "test" / "historical" / "predictors" / "perfect" / "CNRM-CM5_1981-2000.nc"


# ----------------------------------------------------------------------------- noise
def test_day_keys_from_any_calendar() -> None:
    numpy_days = np.array(["1981-02-28", "1999-12-31", "1949-01-01"], dtype="datetime64[ns]")
    assert day_keys(numpy_days) == [19810228, 19991231, 19490101]
    days = [cftime.Datetime360Day(1981, 2, 30), cftime.DatetimeNoLeap(1981, 2, 28, 12)]
    assert day_keys(xr.DataArray(days, dims="time")) == [19810230, 19810228]


def test_member_noise_depends_on_day_member_and_emulator_only() -> None:
    keys = [19810101, 19810102, 19810103]
    full = member_noise(7, 0, keys, [0, 1, 2, 3], (1, 4, 5))
    assert full.shape == (3, 4, 1, 4, 5) and full.dtype == torch.float32
    part = member_noise(7, 0, keys[1:2], [2, 3], (1, 4, 5))  # another batch composition
    torch.testing.assert_close(part[0], full[1, 2:], rtol=0, atol=0)
    assert not torch.equal(member_noise(7, 1, keys, [0], (1, 4, 5))[:, 0], full[:, 0])
    assert not torch.equal(member_noise(8, 0, keys, [0], (1, 4, 5))[:, 0], full[:, 0])
    assert not torch.equal(full[0, 0], full[0, 1]) and not torch.equal(full[0, 0], full[1, 0])
    assert 0 <= member_seed(2**40, 3, 19810101, 9) < 2**63
    assert abs(float(full.mean())) < 0.3 and 0.7 < float(full.std()) < 1.3


@pytest.mark.parametrize(("days", "members", "bs"), [(10, 3, 16), (5, 4, 3), (7, 1, 2), (1, 5, 5)])
def test_member_batches_cover_each_pair_once(days: int, members: int, bs: int) -> None:
    seen = np.zeros((days, members), int)
    for d, m in member_batches(days, members, bs):
        assert (d.stop - d.start) * (m.stop - m.start) <= bs
        seen[d, m] += 1
    assert (seen == 1).all()


def test_default_chunk_days() -> None:
    assert default_chunk_days(None) == 365 and default_chunk_days(10) == 36
    assert default_chunk_days(1000) == 1


# ----------------------------------------------------------------------------- in process
def test_same_seed_is_bitwise_other_seed_differs(stub_ckpt: Path, perfect: Path) -> None:
    def run(seed: int) -> xr.Dataset:
        res = downscale(stub_ckpt, [str(perfect)], start="1981-03-01", end="1981-03-20", seed=seed)
        assert res.members == 3 and res.sampler == "flow matching, Heun, 2 steps"
        return res.dataset

    a, b, c = run(1), run(1), run(2)
    assert a.pr.dims == ("member", "time", "y", "x") and a.sizes["member"] == 3
    np.testing.assert_array_equal(a.pr.values, b.pr.values)
    assert not np.allclose(a.pr.values, c.pr.values)
    assert not np.allclose(a.pr.values[0], a.pr.values[1])  # members differ
    assert (a.pr.values >= 0).all() and np.isfinite(a.pr.values).all()


def test_members_do_not_depend_on_chunks_batches_or_start(stub_ckpt: Path, perfect: Path) -> None:
    def run(**kw: Any) -> xr.Dataset:
        return downscale(stub_ckpt, [str(perfect)], end="1981-03-20", members=4, **kw).dataset

    ref = run(start="1981-03-01", chunk_days=365, batch_size=16)
    got = run(start="1981-03-01", chunk_days=3, batch_size=3)  # 1 day of 3 members, 1 of 1
    np.testing.assert_allclose(got.pr.values, ref.pr.values, rtol=1e-5, atol=1e-5)
    late = run(start="1981-03-11")  # a later --start: the same members on the same days
    np.testing.assert_allclose(late.pr.values, ref.pr.values[:, 10:], rtol=1e-5, atol=1e-5)


def test_written_ensemble_is_cf_and_resumes(
    stub_ckpt: Path, perfect: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ens.nc"
    when = {"start": "1981-03-01", "end": "1981-04-09", "chunk_days": 10}
    straight = downscale(stub_ckpt, [str(perfect)], tmp_path / "a.nc", members=5, seed=3, **when)
    assert straight.path is not None
    res = downscale(stub_ckpt, [str(perfect)], out, members=5, seed=3, max_chunks=2, **when)
    assert res.path is None and len(list(parts_dir(out).glob("part-*.nc"))) == 2
    # other members or seed: not resumable; the same: resumed
    argv = downscale_argv(stub_ckpt, perfect, out, "--members", "5", "--resume", "-q")
    argv += ["--start", "1981-03-01", "--end", "1981-04-09", "--chunk-days", "10"]
    assert main([*argv, "--seed", "4"]) == 2
    assert "seed differ" in capsys.readouterr().err
    assert main([*argv, "--seed", "3"]) == 0
    assert cf_errors(out) == []
    with _open(out) as ds, _open(straight.path) as ref:
        np.testing.assert_array_equal(ds.pr.values, ref.pr.values)
        assert ds.pr.dims == ("member", "time", "y", "x") and ds.sizes["time"] == 40
        assert ds.member.dtype == np.int32 and list(ds.member.values) == [0, 1, 2, 3, 4]
        assert ds.member.attrs == {
            "standard_name": "realization",
            "long_name": "ensemble member",
            "units": "1",
        }
        assert ds.pr.attrs["units"] == ref.pr.attrs["units"] and ds.pr.encoding["zlib"]
        assert ds.pr.encoding["chunksizes"] == (1, 40, 16, 16)
        assert ds.attrs["ensemble_members"] == 5 and ds.attrs["ensemble_seed"] == 3
        assert ds.attrs["sampler"] == "flow matching, Heun, 2 steps"
        assert "stub residual" in ds.attrs["source"]
    straight.dataset.close()


def test_default_chunks_shrink_with_members(stub_ckpt: Path, perfect: Path) -> None:
    from climdl.inference.job import Job, JobConfig

    job = Job(JobConfig(checkpoints=(str(stub_ckpt),), inputs=(str(perfect),), members=10))
    try:
        assert job.chunk_days == 36 and job.manifest()["members"] == 10
        assert job.manifest()["seed"] == 0 and job.manifest()["sampler_steps"] == [2]
        enc = job.final_encoding()["pr"]
        assert enc["chunksizes"] == (1, 73, 16, 16)
    finally:
        job.ds.close()
    config = JobConfig(checkpoints=("a",), members=4, seed=9, sampler_steps=2)
    assert JobConfig.from_json(config.to_json()) == config


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("which", "extra", "message"),
    [
        ("stub", ["--members", "0"], "--members must be at least 1."),
        ("stub", ["--members", "-2"], "--members must be at least 1."),
        ("stub", ["--sampler-steps", "0"], "--sampler-steps must be at least 1."),
        ("stub", ["--seed", "-1"], "--seed must be an integer from 0 to 2"),
        ("stub", ["--seed", str(2**64)], "--seed must be an integer from 0 to 2"),
        ("pr", ["--members", "2"], "is deterministic; --members needs generative checkpoints"),
        ("pr", ["--seed", "2"], "--seed and --sampler-steps need generative checkpoints"),
        ("pr", ["--sampler-steps", "2"], "--seed and --sampler-steps need generative"),
        ("mixed", ["--members", "2"], "is generative but"),
        ("stub", ["--format", "mlbench", "--members", "5"], "exactly 10 members"),
        ("stub", ["--format", "mlbench"], "exactly 10 members"),  # the stub's default is 3
        ("stub", ["--baseline"], "--baseline is not offered with generative checkpoints"),
    ],
)
def test_bad_ensemble_options_are_one_line_and_write_nothing(
    which: str,
    extra: list[str],
    message: str,
    stub_ckpt: Path,
    pr_ckpt: Path,
    tasmax_ckpt: Path,
    perfect: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ckpts = {"stub": [stub_ckpt], "pr": [pr_ckpt], "mixed": [tasmax_ckpt, stub_ckpt]}[which]
    out = tmp_path / "out"
    out.mkdir()
    assert main(downscale_argv(ckpts, perfect, out, "-q", *extra)) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert list(out.iterdir()) == []


def test_help_shows_the_ensemble_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["downscale", "--help"])
    text = capsys.readouterr().out
    assert "--members N" in text and "--seed S" in text and "--sampler-steps K" in text


def test_sensitivity_refuses_a_generative_checkpoint(
    pr_ckpt: Path, tmp_path: Path, perfect: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = torch.load(pr_ckpt, map_location="cpu", weights_only=True)
    ckpt["climdl"]["kind"] = "generative_emulator"
    gen = tmp_path / "gen.ckpt"
    torch.save(ckpt, gen)
    out = tmp_path / "sens"
    assert main(["sensitivity", "-c", str(gen), "-i", str(perfect), "--out", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert "stage-1 checkpoint" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


# ----------------------------------------------------------------------------- trained model
JANUARY = ("--start", "1981-01-01", "--end", "1981-01-20")


@pytest.mark.slow  # ~30 s on 2 busy cores; the stub's test_written_ensemble_is_cf... is fast
def test_generative_cli_end_to_end(
    gen_pr_ckpt: Path, perfect: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "gen.nc"
    argv = downscale_argv(gen_pr_ckpt, perfect, out, "--members", "2", "--seed", "5", *JANUARY)
    assert main([*argv, "--chunk-days", "7", "--batch-size", "3"]) == 0
    captured = capsys.readouterr()
    log = " ".join(captured.err.split())  # rich wraps the line
    assert captured.out.strip() == str(out) and "2 member(s) (flow matching, Heun, 2 steps)" in log
    assert cf_errors(out) == []
    ref = downscale(
        gen_pr_ckpt, [str(perfect)], start=JANUARY[1], end=JANUARY[3], members=2, seed=5
    ).dataset  # one chunk, batches of 16 samples
    with _open(out) as ds:
        assert ds.pr.dims == ("member", "time", "y", "x") and ds.sizes["member"] == 2
        assert ds.member.attrs["standard_name"] == "realization"
        assert ds.pr.attrs["units"] == ref.pr.attrs["units"]
        np.testing.assert_allclose(ds.pr.values, ref.pr.values, rtol=1e-5, atol=1e-5)
        assert ds.attrs["sampler"] == "flow matching, Heun, 2 steps"
        assert "flow-matching residual" in ds.attrs["source"]
    v = ref.pr.values
    assert np.isfinite(v).all() and (v >= 0).all() and not np.allclose(v[0], v[1])
    # --sampler-steps changes the members; the default members come from the checkpoint (3)
    other = downscale(
        gen_pr_ckpt, [str(perfect)], start=JANUARY[1], end="1981-01-05", seed=5, sampler_steps=1
    )
    assert other.dataset.sizes["member"] == 3 and other.sampler == "flow matching, Heun, 1 steps"
    assert not np.allclose(other.dataset.pr.values[:2], v[:, :5])


def test_generative_mlbench_has_ten_members(
    gen_pr_ckpt: Path, tmp_path: Path, use_sample_cache: Path
) -> None:
    catalog = "--catalog sample-alps --period historical --kind imperfect --gcm MPI-ESM-LR"
    options = [*catalog.split(), "--format", "mlbench", "--members", "10", "-q"]
    rc = main(downscale_argv(gen_pr_ckpt, [], tmp_path, *options, "--end", "1981-01-03"))
    assert rc == 0
    (out,) = tmp_path.rglob("Predictions_pr_*.nc")
    with _open(out) as ds:
        assert ds.pr.dims == ("member", "time", "y", "x") and ds.sizes["member"] == 10
        assert ds.pr.attrs["units"] == "mm/day" and "time_bnds" not in ds.variables
        assert ds.attrs["ensemble_members"] == 10


@pytest.mark.distributed
def test_two_ranks_give_the_single_process_members(
    gen_pr_ckpt: Path, perfect: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ddp.nc"
    short = tmp_path / "january.nc"  # torchrun's own parser would take --start for --start-method
    with xr.open_dataset(perfect) as ds:
        ds.isel(time=slice(0, 20)).to_netcdf(short)
    single = downscale(gen_pr_ckpt, [str(short)], members=2, chunk_days=5).dataset
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))
    torchrun = ["--nproc-per-node", "2", "--master-port", "29537"]
    argv = downscale_argv(gen_pr_ckpt, short, out, "--members", "2", "--chunk-days", "5", "-q")
    cmd = torchrun_cmd(torchrun, argv)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with _open(out) as ds:
        np.testing.assert_allclose(ds.pr.values, single.pr.values, rtol=1e-5, atol=1e-5)
        assert ds.sizes["member"] == 2 and ds.sizes["time"] == 20


@pytest.mark.distributed
def test_dask_workers_give_the_in_process_members(
    gen_pr_ckpt: Path, perfect: Path, tmp_path: Path
) -> None:
    out = tmp_path / "dask.nc"
    single = downscale(
        gen_pr_ckpt, [str(perfect)], start=JANUARY[1], end=JANUARY[3], members=2, chunk_days=7
    ).dataset
    argv = downscale_argv(gen_pr_ckpt, perfect, out, "--members", "2", "--chunk-days", "7")
    assert main([*argv, *JANUARY, "--workers", "2", "-q"]) == 0
    with _open(out) as ds:
        np.testing.assert_allclose(ds.pr.values, single.pr.values, rtol=1e-5, atol=1e-5)
        assert ds.pr.dims == ("member", "time", "y", "x") and not parts_dir(out).exists()
