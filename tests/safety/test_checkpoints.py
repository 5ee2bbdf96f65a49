"""Checkpoint and config safety (issue 13): no file climdl reads runs code, mistakes are one line.

Crafted files carry a ``__reduce__`` payload that would create a marker file: sharded-checkpoint
folders (``.metadata``, a non-tensor shard item, ``meta.pt``), ``.ckpt`` pickles, a training
config and a catalog with Python YAML tags. Each goes through the real CLI
(:func:`climdl.cli.main`), ends with exit code 2 and one line on stderr, and the marker never
appears. A real sharded checkpoint (one-process FSDP2 run of the sample config) still
consolidates and resumes. Also: a segmenter checkpoint given to ``climdl downscale``, folders
given as checkpoints, ``climdl train`` printing each Lightning message once without
advertisements, and the SLURM template under ``pipefail`` with long ``scontrol`` output.
"""

from __future__ import annotations

import io
import os
import pickle
import random
import shlex
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from climdl import __version__
from climdl.cli import main
from climdl.errors import DataError
from climdl.parallel.testing import (
    CONFIGS,
    NO_LOGGERS,
    REPO,
    TINY_MODEL,
    check,
    climdl_cmd,
    run_all,
    strategy_config,
    train_args,
)
from tests.argv import downscale_argv, segment_argv, train_argv

SAMPLE_CONFIG = CONFIGS / "emulator" / "sample.yaml"


class _Payload:
    """Unpickling this creates ``marker`` (stands for any code an attacker would run)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (f"touch {shlex.quote(self.marker)}",))


def _torch_bytes(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    """stderr of the last command: exactly one line, climdl's error sentence."""
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("climdl: error: ") and "weights_only" not in lines[0]
    return lines[0]


# ----------------------------------------------------------------------------- crafted folders
def _folder(root: Path, metadata: bytes, meta: bytes, distcp: bytes = b"") -> Path:
    folder = root / "last.ckpt"
    folder.mkdir(parents=True)
    (folder / ".metadata").write_bytes(metadata)
    (folder / "meta.pt").write_bytes(meta)
    (folder / "__0_0.distcp").write_bytes(distcp)
    return folder


def _metadata_with_bytes_item(fqn: str, length: int, relative_path: str = "__0_0.distcp") -> bytes:
    """A ``.metadata`` of allowed classes only, declaring one non-tensor item of ``length``
    bytes at the start of ``relative_path``."""
    from torch.distributed.checkpoint.filesystem import _StorageInfo
    from torch.distributed.checkpoint.metadata import (
        BytesStorageMetadata,
        Metadata,
        MetadataIndex,
    )

    md = Metadata(
        state_dict_metadata={fqn: BytesStorageMetadata()},
        storage_data={MetadataIndex(fqn): _StorageInfo(relative_path, 0, length)},
    )
    return pickle.dumps(md)


def _crafted_folders(tmp_path: Path, marker: Path) -> dict[str, Path]:
    """Sharded folders that would run the payload through torch's or Lightning's loaders."""
    payload = _torch_bytes(_Payload(marker))
    empty_md = _metadata_with_bytes_item("epoch", len(_torch_bytes(1)))
    return {
        # .metadata itself is the payload: plain pickle.load in FileSystemReader.read_metadata
        "metadata": _folder(tmp_path / "a", pickle.dumps(_Payload(marker)), _torch_bytes({})),
        # clean .metadata; a non-tensor item whose bytes torch loads with weights_only=False
        "shard": _folder(
            tmp_path / "b",
            _metadata_with_bytes_item("optimizer_0.param_groups.0.lr", len(payload)),
            _torch_bytes({}),
            payload,
        ),
        # clean .metadata and shard; meta.pt (epoch, loops, spec) holds the payload
        "meta": _folder(
            tmp_path / "c", empty_md, _torch_bytes({"x": _Payload(marker)}), _torch_bytes(1)
        ),
    }


@pytest.mark.parametrize("kind", ["metadata", "shard", "meta"])
def test_consolidate_refuses_a_crafted_sharded_folder_without_running_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    marker = tmp_path / "MARKER"
    folder = _crafted_folders(tmp_path, marker)[kind]
    assert main(["consolidate", str(folder), "-o", str(tmp_path / "out.ckpt")]) == 2
    line = _one_line_error(capsys)
    assert "refused" in line and str(folder) in line
    assert "rank local" not in line and "metadata is None" not in line  # one cause, not three
    assert not marker.exists()
    assert not (tmp_path / "out.ckpt").exists()


def test_sharded_metadata_may_not_name_files_outside_its_folder(tmp_path: Path) -> None:
    from climdl.parallel.checkpoint import check_sharded

    (tmp_path / "secret").write_bytes(_torch_bytes(1))
    md = _metadata_with_bytes_item("epoch", 10, relative_path="../../secret")
    folder = _folder(tmp_path / "d", md, _torch_bytes({}))
    with pytest.raises(DataError, match="outside the folder"):
        check_sharded(folder)


def test_truncated_sharded_metadata_is_one_sentence(tmp_path: Path) -> None:
    from climdl.parallel.checkpoint import consolidate

    good = _metadata_with_bytes_item("epoch", 10)
    folder = _folder(tmp_path, good[: len(good) // 2], _torch_bytes({}))
    with pytest.raises(DataError, match="truncated or corrupt"):
        consolidate(folder)


def test_training_resumes_through_the_guard_only(tmp_path: Path) -> None:
    """Every checkpoint a training run loads ('last', hpc and the best one included) passes the
    checks first and is read with weights_only=True."""
    from climdl.parallel.checkpoint import guard_checkpoint_loads

    marker = tmp_path / "MARKER"
    calls: list[tuple[str, bool | None]] = []

    def load(path: Any, weights_only: bool | None = None) -> dict[str, Any]:
        calls.append((str(path), weights_only))
        return {}

    strategy: Any = SimpleNamespace(load_checkpoint=load)
    guard_checkpoint_loads(strategy)
    for folder in _crafted_folders(tmp_path, marker).values():
        with pytest.raises(DataError, match="refused"):
            strategy.load_checkpoint(folder)
    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(_torch_bytes({"state_dict": _Payload(marker)}))
    with pytest.raises(DataError, match="refused"):
        strategy.load_checkpoint(evil, None)
    with pytest.raises(DataError, match="local checkpoints only"):
        strategy.load_checkpoint("https://example.org/x.ckpt")
    assert calls == [] and not marker.exists()
    good = tmp_path / "good.ckpt"
    good.write_bytes(_torch_bytes({"state_dict": {"w": torch.zeros(2)}, "epoch": 1}))
    strategy.load_checkpoint(good, None)
    assert calls == [(str(good), True)]


# ----------------------------------------------------------------------------- crafted .ckpt
def _ckpt_files(tmp_path: Path, marker: Path) -> dict[str, Path]:
    files = {
        "torch-pickle": _torch_bytes({"state_dict": _Payload(marker), "climdl": {}}),
        "plain-pickle": pickle.dumps({"state_dict": _Payload(marker)}),
        "random": random.Random(2026).randbytes(4096),  # seeded: the same junk every run
    }
    out = {}
    for name, data in files.items():
        out[name] = tmp_path / f"{name}.ckpt"
        out[name].write_bytes(data)
    return out


@pytest.mark.parametrize("kind", ["torch-pickle", "plain-pickle", "random"])
def test_train_ckpt_path_refuses_pickles_and_junk(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], use_sample_cache: Path, kind: str
) -> None:
    marker = tmp_path / "MARKER"
    ckpt = _ckpt_files(tmp_path, marker)[kind]
    rc = main(train_argv(SAMPLE_CONFIG, tmp_path / "run", *NO_LOGGERS, "--ckpt_path", str(ckpt)))
    assert rc == 2
    line = _one_line_error(capsys)
    assert str(ckpt) in line
    assert ("refused" in line) == (kind == "torch-pickle")
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["torch-pickle", "plain-pickle", "random"])
def test_emulator_and_segmenter_loaders_refuse_pickles_and_junk(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    marker = tmp_path / "MARKER"
    ckpt = _ckpt_files(tmp_path, marker)[kind]
    scene = tmp_path / "scene.nc"  # never opened: the checkpoint is read first
    assert main(downscale_argv(ckpt, scene, tmp_path / "o.nc")) == 2
    assert str(ckpt) in _one_line_error(capsys)
    assert main(segment_argv(ckpt, scene, tmp_path / "m.nc")) == 2
    assert str(ckpt) in _one_line_error(capsys)
    assert not marker.exists()


def test_train_config_with_a_python_tag_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "MARKER"
    config = tmp_path / "evil.yaml"
    config.write_text(
        f'trainer:\n  max_epochs: !!python/object/apply:os.system ["touch {marker}"]\n'
    )
    assert main(["train", "--config", str(SAMPLE_CONFIG), "--config", str(config)]) == 2
    assert "python/object/apply:os.system" in _one_line_error(capsys)
    assert not marker.exists()


def test_catalog_with_a_python_tag_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "MARKER"
    catalog = tmp_path / "evil.yaml"
    catalog.write_text(
        f'evil:\n  root: !!python/object/apply:os.system ["touch {marker}"]\n  layout: ml-bench\n'
    )
    monkeypatch.setenv("CLIMDL_CATALOG", str(catalog))
    assert main(["catalog", "list"]) == 2
    line = _one_line_error(capsys)
    assert str(catalog) in line and "python/object/apply" in line
    assert not marker.exists()


# ----------------------------------------------------------------------------- wrong checkpoints
def test_downscale_refuses_a_cloud_segmentation_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cloud = tmp_path / "cloud.ckpt"
    torch.save(
        {
            "climdl": {"kind": "cloud_segmentation", "spec": {}, "version": __version__},
            "state_dict": {},
            "hyper_parameters": {},
        },
        cloud,
    )
    scene = tmp_path / "x.nc"
    assert main(downscale_argv(cloud, scene, tmp_path / "o.nc")) == 2
    line = _one_line_error(capsys)
    assert f"{cloud} is a cloud segmentation checkpoint" in line
    assert "climdl downscale needs an emulator checkpoint" in line
    assert "configs/emulator" in line


def test_folders_given_as_checkpoints_say_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from climdl.tasks.checkpoint import read_checkpoint

    plain = tmp_path / "run"
    plain.mkdir()
    with pytest.raises(DataError, match="is a folder, not a checkpoint file"):
        read_checkpoint(plain)
    sharded = _folder(tmp_path / "s", _metadata_with_bytes_item("epoch", 10), _torch_bytes({}))
    scene = tmp_path / "x.nc"
    assert main(downscale_argv(sharded, scene, tmp_path / "o")) == 2
    line = _one_line_error(capsys)
    assert "sharded checkpoint folder" in line and f"climdl consolidate {sharded}" in line
    assert "does not exist" not in line


# ----------------------------------------------------------------------------- a real sharded one
@pytest.fixture(scope="module")
def sharded(sample_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real sharded checkpoint folder: the sample config under the fsdp preset, one process
    (Lightning's ModelParallelStrategy with save_distributed_checkpoint), one training step."""
    folder = tmp_path_factory.mktemp("sharded")
    run = folder / "run"
    args = train_args(
        run,
        [strategy_config("fsdp")],
        "--trainer.devices",
        "1",
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "1",
        "--data.batch_size",
        "4",
    )
    log = folder / "train.log"
    codes = run_all([climdl_cmd(args)], [log], 300, [{"CLIMDL_CACHE": str(sample_cache)}], folder)
    check(codes, [log])
    last = run / "checkpoints" / "last.ckpt"
    assert last.is_dir() and (last / ".metadata").is_file()
    return last


def _same(a: Any, b: Any) -> bool:
    """Nested dictionaries, lists and tensors equal, element by element."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


@pytest.mark.slow
def test_a_real_sharded_checkpoint_consolidates_and_resumes(
    sharded: Path, sample_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lightning.fabric.utilities.load import _load_distributed_checkpoint

    from climdl.parallel.checkpoint import check_sharded, load_sharded
    from climdl.tasks.checkpoint import load_emulator

    check_sharded(sharded)
    ours, lightnings = load_sharded(sharded), _load_distributed_checkpoint(sharded)
    assert _same(ours["state_dict"], lightnings["state_dict"])  # what Lightning's loader reads
    assert ours["optimizer_states"][0]["param_groups"][0]["lr"] > 0  # a non-tensor shard item
    out = tmp_path / "full.ckpt"
    assert main(["consolidate", str(sharded), "-o", str(out)]) == 0
    assert load_emulator(out).net is not None
    # resume under the fsdp preset (the guard's checks pass for a real folder); a copy of it
    # with a crafted .metadata is refused before anything runs
    run = tmp_path / "resume"
    log = tmp_path / "resume.log"
    args = train_args(
        run,
        [strategy_config("fsdp")],
        "--trainer.devices",
        "1",
        "--trainer.max_epochs",
        "2",
        "--trainer.limit_train_batches",
        "1",
        "--data.batch_size",
        "4",
        "--ckpt_path",
        str(sharded),
    )
    args.remove("--quiet")  # Lightning's note on what it restores is the evidence here
    codes = run_all([climdl_cmd(args)], [log], 300, [{"CLIMDL_CACHE": str(sample_cache)}], tmp_path)
    check(codes, [log])
    assert "Restoring states from the checkpoint path" in log.read_text()
    marker = tmp_path / "MARKER"
    evil = tmp_path / "evil" / "last.ckpt"
    shutil.copytree(sharded, evil)
    (evil / ".metadata").write_bytes(pickle.dumps(_Payload(marker)))
    log = tmp_path / "evil.log"
    args[args.index("--ckpt_path") + 1] = str(evil)
    codes = run_all([climdl_cmd(args)], [log], 300, [{"CLIMDL_CACHE": str(sample_cache)}], tmp_path)
    assert codes == [2], log.read_text()[-2000:]
    assert "objects other than checkpoint metadata" in log.read_text()
    assert not marker.exists()


# ----------------------------------------------------------------------------- logging
@pytest.mark.slow
def test_train_prints_each_lightning_message_once_without_adverts(
    tmp_path: Path, sample_cache: Path
) -> None:
    """A tiny ``climdl train`` as a user runs it (a fresh process: how Lightning's loggers are
    set up depends on what was imported and configured before)."""
    short = "--trainer.max_epochs 1 --trainer.limit_train_batches 2 --trainer.limit_val_batches 1"
    options = [*short.split(), *NO_LOGGERS, "--trainer.enable_progress_bar", "false", *TINY_MODEL]
    data = ["--data.batch_size", "8", "--data.targets", "[tasmax]"]
    # without a test period: else the best checkpoint is restored twice (validate, test)
    args = train_argv(SAMPLE_CONFIG, tmp_path, *options, *data, "--data.test_period", "null")
    env = {**os.environ, "CLIMDL_CACHE": str(sample_cache), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        climdl_cmd(args), env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [ln.strip() for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    repeated = {ln for ln in lines if lines.count(ln) > 1}
    assert not repeated  # every message once (with or without a level and logger name)...
    for message in ("Seed set to 123", "GPU available:", "`Trainer.fit` stopped"):
        assert sum(message in ln for ln in lines) == 1, [ln for ln in lines if message in ln]
    text = "\n".join(lines)
    for advert in ("litlogger", "litmodels", "Tip:"):
        assert advert not in text
    assert "Seed set to 123" in lines  # ...Lightning's shown as they are


# ----------------------------------------------------------------------------- SLURM template
def test_sbatch_survives_long_scontrol_output_and_many_checkpoints(tmp_path: Path) -> None:
    """Under ``set -o pipefail`` a pipe into ``head -n 1`` kills the script (exit 141) when the
    writer is still writing; 200000 host names (1.4 MB) make the writer outlast ``head``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text(
        '#!/bin/sh\necho "$MASTER_ADDR" > "$SRUN_ARGS"\nprintf "%s\\n" "$@" >> "$SRUN_ARGS"\n'
    )
    (bin_dir / "scontrol").write_text("#!/bin/sh\nexec seq -f 'node%06g' 1 200000\n")
    for f in ("srun", "scontrol"):
        (bin_dir / f).chmod(0o755)
    run = tmp_path / "run"
    ckpts = run / "checkpoints"
    ckpts.mkdir(parents=True)
    for i in range(3000):  # ls output far beyond a pipe buffer
        p = ckpts / f"last-step-{i:06d}-with-a-long-name-to-fill-the-pipe-quickly.ckpt"
        p.write_bytes(b"")
        os.utime(p, (1_000_000 + i, 1_000_000 + i))
    newest = ckpts / "last-step-000042-with-a-long-name-to-fill-the-pipe-quickly.ckpt"
    os.utime(newest, (2_000_000, 2_000_000))
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "SRUN_ARGS": str(tmp_path / "srun.txt"),
        "SLURM_JOB_ID": "123",
        "SLURM_JOB_NAME": "t",
        "SLURM_JOB_NODELIST": "node[000001-200000]",
        "SLURM_JOB_NUM_NODES": "2",
        "SLURM_NTASKS_PER_NODE": "4",
        "RUN_DIR": str(run),
    }
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "slurm" / "train.sbatch")],
        env=env,
        timeout=120,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    lines = (tmp_path / "srun.txt").read_text().splitlines()
    assert lines[0] == "node000001"  # MASTER_ADDR: the first host
    assert lines[lines.index("--ckpt_path") + 1] == str(newest)


def test_a_torch_name_in_metadata_is_refused_without_looking_it_up(tmp_path: Path) -> None:
    """``GLOBAL torch _inductor`` (or any non-dtype name of torch): refused by name, without
    ``getattr(torch, name)``, which imports the submodule or calls a function first."""
    import sys

    from climdl.parallel.checkpoint import read_metadata

    loaded = "torch._inductor" in sys.modules
    (tmp_path / ".metadata").write_bytes(b"\x80\x04ctorch\n_inductor\n.")
    with pytest.raises(DataError, match="refused"):
        read_metadata(tmp_path)
    assert ("torch._inductor" in sys.modules) == loaded
    (tmp_path / ".metadata").write_bytes(b"\x80\x04ctorch\nfloat32\n.")  # a dtype: allowed
    with pytest.raises(DataError, match="not checkpoint metadata"):
        read_metadata(tmp_path)


@pytest.mark.parametrize("swap", [".metadata", "__0_0.distcp"])
def test_a_folder_swapped_after_the_check_runs_no_code(tmp_path: Path, swap: str) -> None:
    """The guard's check and Lightning's own load are two reads: a ``.metadata`` or shard
    replaced in between must not run either (torch's reader unpickles, its planner loads
    non-tensor items with weights_only=False)."""
    import torch.distributed.checkpoint as dcp

    from climdl.parallel.checkpoint import guard_checkpoint_loads

    marker = tmp_path / "MARKER"
    payload = _torch_bytes(_Payload(marker))
    one = _torch_bytes(1)
    folder = _folder(tmp_path, _metadata_with_bytes_item("epoch", len(one)), _torch_bytes({}), one)

    def load(path: Any, weights_only: bool | None = None) -> dict[str, Any]:
        if swap == ".metadata":
            (Path(path) / swap).write_bytes(pickle.dumps(_Payload(marker)))
        else:
            (Path(path) / ".metadata").write_bytes(_metadata_with_bytes_item("epoch", len(payload)))
            (Path(path) / swap).write_bytes(payload)
        state: dict[str, Any] = {"epoch": 0}
        dcp.load(state, checkpoint_id=str(path))  # as Lightning's ModelParallelStrategy does
        return state

    strategy: Any = SimpleNamespace(load_checkpoint=load)
    guard_checkpoint_loads(strategy)
    with pytest.raises(BaseException, match="refused"):
        strategy.load_checkpoint(folder)
    assert not marker.exists()


def test_junk_bytes_of_many_kinds_are_one_sentence(tmp_path: Path) -> None:
    """torch's weights-only unpickler fails on junk with any exception (IndexError, KeyError,
    UnicodeDecodeError...): every one is a DataError. 200 seeded junk files, and junk behind a
    pickle protocol header."""
    from climdl.parallel.checkpoint import check_checkpoint_path
    from climdl.tasks.checkpoint import read_checkpoint

    path = tmp_path / "junk.ckpt"
    for seed in range(200):
        rng = random.Random(seed)
        data = rng.randbytes(rng.randint(1, 4096))
        path.write_bytes(data if seed % 2 else b"\x80\x02" + data)
        for reader in (check_checkpoint_path, read_checkpoint):
            with pytest.raises(DataError):
                reader(path)
