"""The screening's labels: the files keyed for messages are found again by the sides."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from climdl.errors import DataError
from climdl.evaluation import screening


def _ds(value: float) -> xr.Dataset:
    time = xr.date_range("2000-01-01", periods=3, freq="D", use_cftime=False)
    data = np.full((3, 2, 2), value)
    return xr.Dataset({"tasmax": (("time", "y", "x"), data, {"units": "K"})}, {"time": time})


def test_labels_spell_the_roles() -> None:
    assert screening.label("truth") == "truth"
    assert screening.label("prediction", "emulator") == "prediction 'emulator'"
    assert screening.label("truth", period="historical") == "historical truth"
    assert screening.label("prediction", "a", "historical") == "historical prediction 'a'"


def test_every_side_finds_its_files(tmp_path: Path) -> None:
    names = ["t.nc", "p.nc", "q1.nc", "q2.nc", "ht.nc", "hp.nc"]
    for n in names:
        (tmp_path / n).touch()
    f = {n: str(tmp_path / n) for n in names}
    files = screening.file_labels(
        f["t.nc"],
        {"emulator": f["p.nc"], "baseline": [f["q1.nc"], f["q2.nc"]]},
        f["ht.nc"],
        {"emulator": f["hp.nc"]},
    )
    ds = _ds(290.0)
    sides = screening.sides_of(ds, {"emulator": ds, "baseline": ds}, files)
    sides += screening.sides_of(ds, {"emulator": ds}, files, period="historical")
    assert {s.label: s.files for s in sides} == files
    assert [s.where for s in sides] == [
        f"{f['t.nc']} (the truth)",
        f"{f['p.nc']} (the prediction 'emulator')",
        f"{f['q1.nc']} and 1 more file(s) (the prediction 'baseline')",
        f"{f['ht.nc']} (the historical truth)",
        f"{f['hp.nc']} (the historical prediction 'emulator')",
    ]


def test_historical_truth_message_names_its_files(tmp_path: Path) -> None:
    for n in ("t.nc", "hist.nc"):
        (tmp_path / n).touch()
    files = screening.file_labels(str(tmp_path / "t.nc"), {}, str(tmp_path / "hist.nc"))
    sides = screening.sides_of(_ds(290.0), {}, files)
    sides += screening.sides_of(_ds(np.nan), {}, files, period="historical")
    with pytest.raises(DataError) as err:
        screening.screen(sides, ["tasmax"])
    assert str(err.value).startswith(f"tasmax in {tmp_path / 'hist.nc'} (the historical truth) ")
