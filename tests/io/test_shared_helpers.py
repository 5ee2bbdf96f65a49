"""The small helpers shared across packages: device names, file hashes, length units, provenance."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
import torch

from climdl import __version__
from climdl.errors import ConfigError
from climdl.io.checksum import sha256_file
from climdl.io.provenance import CF_CONVENTIONS, chain_history, climdl_source, history_entry
from climdl.preprocess.device import resolve_device
from climdl.preprocess.length_units import metres_per_unit


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            resolve_device("cuda:1")


def test_sha256_file_reads_in_blocks(tmp_path: Path) -> None:
    f = tmp_path / "x.bin"
    data = bytes(range(256)) * 1000
    f.write_bytes(data)
    assert sha256_file(f, block=1000) == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(
    ("units", "metres"),
    [("m", 1.0), (" Metres ", 1.0), ("km", 1000.0), ("kilometers", 1000.0), ("deg", None)],
)
def test_metres_per_unit(units: str, metres: float | None) -> None:
    assert metres_per_unit(units) == metres


def test_provenance_values() -> None:
    assert CF_CONVENTIONS == "CF-1.10"
    assert climdl_source("prepare") == f"climdl {__version__} prepare"
    line = history_entry("climdl evaluate", "2000-01-01T00:00:00Z older")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ climdl evaluate\n.* older", line)
    assert chain_history("new", None) == chain_history("new", "") == "new"


def test_check_writable_refuses_a_read_only_folder_and_creates_nothing(
    readonly_dir: Path, tmp_path: Path
) -> None:
    from climdl.errors import OutputError
    from climdl.io.oserrors import check_writable

    with pytest.raises(OutputError, match="choose a folder you can write to"):
        check_writable(readonly_dir / "new" / "out.nc")
    check_writable(tmp_path / "a" / "b" / "out.nc")  # the nearest existing folder is probed
    assert not (tmp_path / "a").exists()
