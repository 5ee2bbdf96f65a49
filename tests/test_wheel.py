"""A wheel install works without the source tree: packaged catalog, presets, the whole job.

The wheel is built offline (``pip wheel --no-build-isolation``: setuptools comes from the dev
extras) from a copy of the source, and installed into a fresh environment whose ``.pth`` reuses
this environment's already-installed dependencies, so nothing is downloaded and nothing grows.
The editable install's finder lives in a ``.pth`` of this environment's site-packages, which a
path added by another ``.pth`` never runs: ``climdl`` there can only be the wheel's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path

import pytest
import xarray as xr

from climdl.parallel.testing import NO_LOGGERS, TINY
from tests.paths import REPO

SOURCES = ("pyproject.toml", "README.md", "climdl", "configs", "data_catalog")


def _run(cmd: Sequence[str | Path], cwd: Path, env: dict[str, str], timeout: float = 300) -> str:
    """Run ``cmd``; its stdout and stderr (rich tables go to stderr), or a failure showing them."""
    t0 = time.perf_counter()
    res = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    print(f"{time.perf_counter() - t0:5.1f} s  {' '.join(str(c) for c in cmd[:4])}")
    assert res.returncode == 0, f"{cmd} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}"
    return res.stdout + res.stderr


def _build_wheel(tmp: Path) -> Path:
    """The wheel of a copy of the source (the build leaves nothing in the repository)."""
    src = tmp / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=ignore)
        else:
            shutil.copy2(REPO / name, src / name)
    out = tmp / "wheel"
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index"]
    _run([*cmd, "-q", "-w", out, src], cwd=tmp, env=dict(os.environ))
    return next(out.glob("climdl-*.whl"))


def _fresh_env(tmp: Path, wheel: Path) -> tuple[Path, dict[str, str]]:
    """A venv with climdl from ``wheel`` and every other package from this environment."""
    venv = tmp / "env"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp, env=dict(os.environ))
    py = venv / "bin" / "python"
    site = _run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp, {})
    site = site.strip().splitlines()[-1]
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    # appended after the venv's own site-packages: the wheel's climdl comes first
    (Path(site) / "zz_test_env.pth").write_text("\n".join(sorted(ours)) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CLIMDL_CATALOG")}
    env |= {"CLIMDL_CACHE": str(tmp / "cache"), "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    pip = [py, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--no-build-isolation"]
    _run([*pip, wheel], cwd=tmp, env=env)
    return venv, env


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_wheel_installs_and_runs_from_any_folder(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "climdl").rglob("*.py")}
    assert modules <= names, f"missing from the wheel (pyproject packages): {modules - names}"
    assert {"climdl/configs/emulator/sample.yaml", "climdl/data_catalog/sample.yaml"} <= names

    venv, env = _fresh_env(tmp_path, wheel)
    work = tmp_path / "work"  # an empty folder: no configs/, data_catalog/ or climdl/ here
    work.mkdir()
    where = _run(
        [venv / "bin" / "python", "-c", "import climdl; print(climdl.__file__)"], work, env
    )
    assert Path(where.strip().splitlines()[-1]).is_relative_to(venv), where
    climdl = venv / "bin" / "climdl"

    assert "sample-alps" in _run([climdl, "catalog", "list"], work, env)
    _run([climdl, "sample", "sample", "--domain", "ALPS", "-q"], work, env)
    # the catalog entry sample-alps finds the sample just written through CLIMDL_CACHE
    linked = tmp_path / "cache" / "sample" / "years1-seed0" / "ALPS"
    linked.parent.mkdir(parents=True)
    linked.symlink_to(work / "sample" / "ALPS", target_is_directory=True)

    train = [climdl, "train", "--config", "sample", "--trainer.max_epochs", "1", *TINY]
    _run(
        [*train, *NO_LOGGERS, "--trainer.default_root_dir", "run", "--data.batch_size", "8"],
        work,
        env,
    )
    ckpt = next((work / "run").rglob("last.ckpt"))
    down = [climdl, "downscale", "-c", ckpt, "--catalog", "sample-alps", "--period", "historical"]
    _run([*down, "--kind", "perfect", "-o", "down.nc"], work, env)
    with xr.open_dataset(work / "down.nc") as ds:
        assert "tasmax" in ds.data_vars and ds.sizes["time"] > 0
