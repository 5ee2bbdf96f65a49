"""The sensitivity report: stand-alone pages of both kinds, the section of ``climdl evaluate
--sensitivity``, and the refusal of files it cannot read."""

from __future__ import annotations

import base64
import contextlib
import io
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from climdl.cli import main
from climdl.errors import DataError
from climdl.evaluation.sensitivity_file import check_sensitivity_file
from climdl.evaluation.sensitivity_report import sensitivity_section, write_sensitivity_report
from climdl.evaluation.summary import fmt
from tests.sensitivity_files import emulator_dataset, segmenter_dataset, write

SECTION = "Sensitivity to bounded predictor perturbations"


def _embedded(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', html)]


def _check_page(out: Path, html_path: Path, md_path: Path, n_figures: int) -> str:
    """Both files exist, the HTML embeds exactly the PNGs written, the Markdown links them."""
    assert html_path == out / "report.html" and md_path == out / "report.md"
    html = html_path.read_text()
    md = md_path.read_text()
    pngs = sorted((out / "figures").glob("sensitivity_*.png"))
    assert len(pngs) == n_figures
    assert sorted(_embedded(html)) == sorted(p.read_bytes() for p in pngs)
    for p in pngs:
        assert f"](figures/{p.name})" in md
        assert p.read_bytes().startswith(b"\x89PNG")
    assert not list(out.rglob(".*.tmp"))
    return html


def test_emulator_report(tmp_path: Path) -> None:
    ds = emulator_dataset(targets=("tasmax", "pr"), predictors=("t_850", "q_850"))
    nc = write(ds, tmp_path / "sensitivity.nc")
    out = tmp_path / "report"
    html_path, md_path = write_sensitivity_report(nc, out)
    html = _check_page(out, html_path, md_path, n_figures=3 * 2)  # per target: 3 figures
    md = md_path.read_text()
    names = {p.name for p in (out / "figures").iterdir()}
    for target in ("tasmax", "pr"):
        for what in ("attacks", "saliency", "bound_sensitivity"):
            assert f"sensitivity_{target}_{what}.png" in names
    assert SECTION in html and f"## {SECTION}" in md
    for text in ("t_850", "0.5 K", "q_850", "5 %", "FGSM", "PGD", "random corners", "<table>"):
        assert text in html or text.lower() in html.lower(), text
    # the table: median and max over days of |mean change| of PGD, and the headline ratio
    pgd = np.abs(ds["tasmax_mean_change"].sel(attack="pgd").values)
    rnd = np.abs(ds["tasmax_mean_change"].sel(attack="random").values)
    row = next(line for line in md.splitlines() if line.startswith("| tasmax | pgd |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2] == "K"
    assert float(cells[3]) == pytest.approx(np.median(pgd), rel=1e-3)
    assert float(cells[4]) == pytest.approx(pgd.max(), rel=1e-3)
    ratio = np.median(pgd) / np.median(rnd)
    assert f"{ratio:.3g} times" in md
    # pr's wet-fraction change in percentage points
    wet = 100 * np.abs(ds["pr_wet_fraction_change"].sel(attack="pgd").values)
    row = next(line for line in md.splitlines() if line.startswith("| pr | pgd |"))
    assert float(row.strip("|").split("|")[-1]) == pytest.approx(wet.max(), rel=1e-3)


def test_segmenter_report(tmp_path: Path) -> None:
    ds = segmenter_dataset()
    nc = write(ds, tmp_path / "sensitivity.nc")
    out = tmp_path / "report"
    html_path, md_path = write_sensitivity_report(nc, out)
    html = _check_page(out, html_path, md_path, n_figures=5)
    md = md_path.read_text()
    assert "Sensitivity to bounded band perturbations" in html
    row = next(line for line in md.splitlines() if line.startswith("| pgd |"))
    trans = ds["transitions"].sel(attack="pgd").values
    assert row == f"| pgd | 5 % | {trans.sum() - np.trace(trans)} |"
    assert "tirs1" in md and "0.5 K" in md


def _broken(case: str, path: Path) -> Path:
    ds = emulator_dataset(targets=("tasmax",), predictors=("t_850",), days=2)
    if case == "missing":
        return path
    if case == "folder":
        path.mkdir()
        return path
    if case == "not_netcdf":
        path.write_bytes(b"not a NetCDF file")
        return path
    if case == "other_kind":
        ds.attrs["climdl_sensitivity"] = "downscale"
    elif case == "no_kind":
        del ds.attrs["climdl_sensitivity"]
    elif case == "newer":
        ds.attrs["climdl_sensitivity_version"] = np.int32(2)
    elif case == "no_version":
        del ds.attrs["climdl_sensitivity_version"]
    elif case == "incomplete":
        ds = ds.drop_vars("tasmax_saliency")
    elif case == "segmenter_incomplete":
        ds = segmenter_dataset(size=8).drop_vars("transitions")
    return write(ds, path)


CASES = [
    "missing",
    "folder",
    "not_netcdf",
    "other_kind",
    "no_kind",
    "newer",
    "no_version",
    "incomplete",
    "segmenter_incomplete",
]


@pytest.mark.parametrize("case", CASES)
def test_refuses_what_it_cannot_report(case: str, tmp_path: Path) -> None:
    path = _broken(case, tmp_path / "sensitivity.nc")
    with pytest.raises(DataError) as err:
        check_sensitivity_file(path)
    message = str(err.value)
    assert str(path) in message and message.count(".") >= 1 and "\n" not in message
    with pytest.raises(DataError):
        sensitivity_section(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_accepts_both_kinds(tmp_path: Path) -> None:
    assert check_sensitivity_file(write(emulator_dataset(days=2), tmp_path / "e.nc")) == "emulator"
    assert (
        check_sensitivity_file(write(segmenter_dataset(size=8), tmp_path / "s.nc")) == "segmenter"
    )


# ----------------------------------------------------------------------------- climdl evaluate
def _tasmax(seed: int, bias: float = 0.0) -> xr.Dataset:
    """One year of daily tasmax (K) on an 8 x 8 lat/lon grid."""
    rng = np.random.default_rng(seed)
    time = xr.date_range("2001-01-01", periods=365, freq="D", calendar="noleap", use_cftime=True)
    cycle = 8 * np.sin(2 * np.pi * np.arange(365) / 365)[:, None, None]
    values = 285 + bias + cycle + rng.normal(0, 2, (365, 8, 8))
    return xr.Dataset(
        {"tasmax": (("time", "lat", "lon"), values.astype("f4"), {"units": "K"})},
        coords={
            "time": time,
            "lat": ("lat", np.linspace(44.0, 47.5, 8), {"units": "degrees_north"}),
            "lon": ("lon", np.linspace(6.0, 9.5, 8), {"units": "degrees_east"}),
        },
    )


@pytest.fixture(scope="module")
def eval_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("evalsens")
    return {
        "truth": write(_tasmax(0), d / "truth.nc"),
        "pred": write(_tasmax(1, bias=0.3), d / "pred.nc"),
        "sens": write(
            emulator_dataset(targets=("tasmax",), predictors=("t_850", "q_850")), d / "sens.nc"
        ),
        "seg": write(segmenter_dataset(size=8), d / "seg.nc"),
    }


def _evaluate(files: dict[str, Path], out: Path, *extra: str) -> int:
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        return main(
            [
                "evaluate",
                "--truth",
                str(files["truth"]),
                "--pred",
                str(files["pred"]),
                "--seasons",
                "none",
                "--out",
                str(out),
                "--quiet",
                *extra,
            ]
        )


def test_evaluate_report_has_the_section_only_when_asked(
    eval_files: dict[str, Path], tmp_path: Path
) -> None:
    with_section, without = tmp_path / "with", tmp_path / "without"
    assert _evaluate(eval_files, with_section, "--sensitivity", str(eval_files["sens"])) == 0
    assert _evaluate(eval_files, without) == 0
    html = (with_section / "report.html").read_text()
    md = (with_section / "report.md").read_text()
    assert f"<h2>{SECTION}</h2>" in html and f"## {SECTION}" in md
    pngs = sorted((with_section / "figures").glob("sensitivity_*.png"))
    assert len(pngs) == 3
    embedded = _embedded(html)
    assert all(p.read_bytes() in embedded for p in pngs)
    assert all(f"](figures/{p.name})" in md for p in pngs)
    # the evaluation's own sections are still there, the definitions last
    assert "<h2>Comparison</h2>" in html and html.index(SECTION) < html.rindex("Definitions")
    assert md.index(SECTION) < md.index("## Definitions")
    assert SECTION not in (without / "report.html").read_text()
    assert SECTION not in (without / "report.md").read_text()
    assert not list((without / "figures").glob("sensitivity_*"))


@pytest.mark.parametrize("case", ["missing", "wrong_kind", "no_report"])
def test_evaluate_refuses_a_bad_sensitivity_file_before_computing(
    case: str,
    eval_files: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    extra = ["--sensitivity", str(eval_files["sens"])]
    if case == "missing":
        extra = ["--sensitivity", str(tmp_path / "nope.nc")]
    elif case == "wrong_kind":
        extra = ["--sensitivity", str(eval_files["truth"])]
    else:
        extra.append("--no-report")
    out = tmp_path / "out"
    assert _evaluate(eval_files, out, *extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("climdl: error:") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert not out.exists()  # refused before anything was computed or written


# ----------------------------------------------------------------------------- real writers
def test_report_of_a_file_from_the_segmenter_run(tmp_path: Path) -> None:
    """The report reads what ``climdl.sensitivity.segmenter`` writes (a scene with no-data
    pixels: NaN in the maps, the flag's fill value)."""
    from climdl.clouds.sample import scene_dataset
    from climdl.clouds.scene import write_scene
    from climdl.clouds.synthetic import make_scene
    from climdl.sensitivity.segmenter import run_segmenter_sensitivity
    from tests.sensitivity.segmenters import save_segmenter
    from tests.sensitivity.test_segmenter import FAST, _train

    ds = scene_dataset(make_scene(np.random.SeedSequence([3, 0]), (48, 40)), 3, 0)
    ds["image"].values[:, :3, :5] = np.nan
    scene = write_scene(ds, tmp_path / "scene.nc")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: one thread beats two contended ones
    try:
        ckpt = save_segmenter(_train(ds), tmp_path / "seg.ckpt")
        result = run_segmenter_sensitivity(ckpt, scene, out_dir=tmp_path / "out", **FAST)
    finally:
        torch.set_num_threads(threads)
    html_path, md_path = write_sensitivity_report(result.path, tmp_path / "out")
    _check_page(tmp_path / "out", html_path, md_path, n_figures=5)
    md = md_path.read_text()
    for attack, share in result.changed_fraction.items():
        row = next(line for line in md.splitlines() if line.startswith(f"| {attack} |"))
        assert row.split("|")[2].strip() == f"{fmt(100 * share)} %"


def test_report_of_a_file_from_the_emulator_writer(tmp_path: Path) -> None:
    """The report reads what ``climdl.sensitivity.output`` writes (float32 measures, time
    bounds, comments), here from known numbers rather than a model run, which
    tests/sensitivity/test_cli.py covers end to end through the same report."""
    from climdl.data.grids import coarse_grid
    from climdl.data.spec import Grid
    from climdl.sensitivity.output import (
        ATTACKS,
        TargetMaps,
        emulator_dataset,
        summary_rows,
        write_outputs,
    )

    rng = np.random.default_rng(1)
    grid = Grid.from_dataset(coarse_grid("ALPS"))
    predictors = ["z_500", "t_850", "q_850"]
    days, (ny, nx) = 5, grid.shape or (0, 0)
    time = xr.DataArray(
        xr.date_range("2001-03-01", periods=days, freq="10D", calendar="360_day", use_cftime=True),
        dims="time",
    )
    targets = [
        TargetMaps(
            name=t,
            attrs={"units": units},
            units=units,
            measures=rng.gamma(2.0, 0.1, (days, len(ATTACKS), n)),
            saliency=rng.normal(0, 0.1, (len(predictors), ny, nx)),
            bound_sensitivity=rng.gamma(2.0, 0.01, (len(predictors), ny, nx)),
            baseline="the training mean of each predictor",
        )
        for t, units, n in (("tasmax", "K", 3), ("pr", "mm day-1", 4))
    ]
    ds = emulator_dataset(
        time,
        predictors,
        ["20 m2 s-2", "0.5 K", "5 %"],
        grid,
        targets,
        {"climdl_sensitivity": "emulator", "climdl_sensitivity_version": np.int32(1)},
    )
    nc, _ = write_outputs(ds, summary_rows(targets), tmp_path, "360_day")
    html_path, md_path = write_sensitivity_report(nc, tmp_path)
    _check_page(tmp_path, html_path, md_path, n_figures=6)
    md = md_path.read_text()
    assert "| z_500 | 20 m2 s-2 |" in md and "**days**: 5 (2001-03-01 to 2001-04-11)" in md
    mean = targets[0].measures[:, list(ATTACKS).index("pgd"), 0].astype(np.float32)
    row = next(line for line in md.splitlines() if line.startswith("| tasmax | pgd |"))
    assert float(row.split("|")[4]) == pytest.approx(np.median(np.abs(mean)), rel=1e-3)
