"""``climdl downscale --format cordex-cmip6``: RUN.yaml checked against the CV before any work,
the archive's DRS tree, the CORDEX-CMIP6 compliance checks (suite cc6, offline on the shipped
tables) and CF-1.11, values and units against the plain CF output, realizations of an ensemble,
and an interrupted publication finished by ``--resume``."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import cftime
import numpy as np
import pytest
import xarray as xr

from climdl.cli import main
from climdl.data.cordex import drs_filename, drs_folder, file_years, load_run, shipped_tables_dir
from climdl.errors import ConfigError
from tests.argv import downscale_argv
from tests.cfcheck import cc6_required, cf_errors

RUN = {
    "domain_id": "EUR-12",
    "institution_id": "CNRM-MF",
    "source_id": "CNRM-ALADIN64E1",
    "driving_source_id": "CNRM-ESM2-1",
    "driving_experiment_id": "historical",
    "driving_variant_label": "r1i1p1f2",
    "driving_institution_id": "CNRM-CERFACS",
    "contact": "climdl-tests@example.org",
}
CATALOG = [
    "--catalog",
    "sample-alps",
    "--period",
    "historical",
    "--kind",
    "imperfect",
    "--gcm",
    "MPI-ESM-LR",
]


def _run_yaml(folder: Path, **changes: object) -> Path:
    import yaml

    values = {k: v for k, v in ({**RUN, **changes}).items() if v is not None}
    path = folder / "RUN.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def _open(path: Path) -> xr.Dataset:
    return xr.open_dataset(
        path, decode_times=xr.coders.CFDatetimeCoder(use_cftime=True), decode_coords="all"
    )


# ----------------------------------------------------------------------------- RUN.yaml
def test_run_metadata_takes_its_descriptions_from_the_cv(tmp_path: Path) -> None:
    run = load_run(_run_yaml(tmp_path), today=dt.date(2026, 12, 7))
    assert run.version == "v20261207"
    a = run.attrs
    assert a["activity_id"] == "ESD" and a["project_id"] == "CORDEX-CMIP6"
    assert a["domain"] == "Europe" and a["Conventions"] == "CF-1.11"
    assert a["institution"].startswith("CNRM [Centre National")
    assert a["driving_experiment"] == "all-forcing simulation of the recent past"
    assert a["version_realization"] == "v1-r1"
    assert run.realization(2) == "v1-r3"
    folder = drs_folder(run, "tasmax")
    assert folder.parts == (
        "CORDEX-CMIP6",
        "ESD",
        "EUR-12",
        "CNRM-MF",
        "CNRM-ESM2-1",
        "historical",
        "r1i1p1f2",
        "CNRM-ALADIN64E1",
        "v1-r1",
        "day",
        "tasmax",
        "v20261207",
    )
    assert drs_filename(run, "pr", "19860101-19901231") == (
        "pr_EUR-12_CNRM-ESM2-1_historical_r1i1p1f2_CNRM-MF_CNRM-ALADIN64E1_v1-r1_day_"
        "19860101-19901231.nc"
    )


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"institution_id": None}, "required attribute(s) missing: institution_id"),
        ({"domain_id": "EUR-13"}, "domain_id 'EUR-13' is not in the CORDEX-CMIP6"),
        ({"institution_id": "AUTH"}, "is registered by CNRM-MF, not by institution_id 'AUTH'"),
        ({"driving_institution_id": "DWD"}, "did not run CNRM-ESM2-1"),
        ({"driving_variant_label": "r1i1p1"}, "should look like r1i1p1f1"),
        ({"version_realization": "v0-r1"}, "should look like v1-r1"),
        ({"driving_experiment_id": "evaluation"}, "driven by ERA5"),
        ({"version": "2026"}, "vYYYYMMDD"),
        ({"institute_id": "CNRM-MF"}, "unknown key(s) institute_id"),
        ({"contact": 3}, "contact should be a non-empty text"),
    ],
)
def test_run_metadata_refused_in_one_sentence(
    tmp_path: Path, changes: dict[str, object], words: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load_run(_run_yaml(tmp_path, **changes))
    assert words in str(err.value) and "\n" not in str(err.value)


def test_run_metadata_is_read_safely(tmp_path: Path) -> None:
    bad = tmp_path / "RUN.yaml"
    bad.write_text("!!python/object/apply:os.system ['touch pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_run(bad)
    assert not (tmp_path / "pwned").exists()
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="YAML mapping"):
        load_run(bad)


def test_five_year_files_end_in_years_ending_in_0_or_5() -> None:
    assert file_years(range(1979, 1992)) == [(1979, 1980), (1981, 1985), (1986, 1990), (1991, 1991)]
    assert file_years([2015]) == [(2015, 2015)]


def test_plan_splits_by_years_and_members(tmp_path: Path) -> None:
    from climdl.inference.cordex_archive import plan

    run = load_run(_run_yaml(tmp_path), today=dt.date(2026, 12, 7))
    days = [cftime.DatetimeNoLeap(1984, 1, 1) + dt.timedelta(days=i) for i in range(3 * 365)]
    time = xr.DataArray(days, dims="time")
    files = plan(run, tmp_path, ["pr"], time, members=2)
    names = [f.path.name.rsplit("_", 1)[1] for f in files]
    assert names == ["19840101-19851231.nc", "19860101-19861231.nc"] * 2
    assert [f.path.parts[-5] for f in files] == ["v1-r1", "v1-r1", "v1-r2", "v1-r2"]


# ----------------------------------------------------------------------------- the archive
@pytest.fixture(scope="module")
def archive(
    tasmax_ckpt: Path, pr_ckpt: Path, sample_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    """The sample downscaled once as a CORDEX-CMIP6 archive and once as plain CF."""
    base = tmp_path_factory.mktemp("cordex")
    root, cf = base / "archive", base / "cf.nc"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CLIMDL_CACHE", str(sample_cache))
        meta = ["--format", "cordex-cmip6", "--metadata", str(_run_yaml(base)), "-q"]
        assert main(downscale_argv([tasmax_ckpt, pr_ckpt], [], root, *CATALOG, *meta)) == 0
        assert main(downscale_argv([tasmax_ckpt, pr_ckpt], [], cf, *CATALOG, "-q")) == 0
    return root, cf


def test_archive_passes_the_cordex_cmip6_and_cf_checks(archive: tuple[Path, Path]) -> None:
    root, _ = archive
    files = sorted(root.rglob("*.nc"))
    assert [f.name.split("_")[0] for f in files] == ["pr", "tasmax"]
    assert not any(p.name.startswith(".") for p in root.rglob("*"))  # staging and parts gone
    for f in files:
        assert cc6_required(f, shipped_tables_dir()) == []
        assert cf_errors(f, "1.11") == []
        rel = f.relative_to(root).parts
        assert rel[:4] == ("CORDEX-CMIP6", "ESD", "EUR-12", "CNRM-MF") and rel[-2].startswith("v")


def test_archive_values_units_and_coordinates(archive: tuple[Path, Path]) -> None:
    root, cf = archive
    ref = _open(cf)
    pr = _open(next(root.rglob("pr_*.nc")))
    tx = _open(next(root.rglob("tasmax_*.nc")))
    assert (
        pr.pr.attrs["units"] == "kg m-2 s-1"
        and pr.pr.attrs["standard_name"] == "precipitation_flux"
    )
    np.testing.assert_allclose(pr.pr.values * 86400.0, ref.pr.values, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(tx.tasmax.values, ref.tasmax.values)
    assert tx.tasmax.attrs["cell_methods"] == "area: mean time: maximum"
    assert float(tx.height) == 2.0 and tx.tasmax.encoding["missing_value"] == np.float32(1e20)
    # the same grid, x/y in metres; days stamped at noon inside [day, next day)
    np.testing.assert_allclose(tx.x.values, ref.x.values * 1e3)
    np.testing.assert_allclose(tx.lat.values, ref.lat.values)
    assert tx.crs.attrs["grid_mapping_name"] == "lambert_conformal_conic"
    assert all(t.hour == 12 for t in tx.time.values[:3])
    assert (tx.time_bnds.values[:, 0] < tx.time.values).all()
    assert tx.vertices_lat.shape == (*tx.lat.shape, 4)
    assert float(np.abs(tx.vertices_lat.mean("vertices") - tx.lat).max()) < 1e-3
    assert float(np.abs(tx.vertices_lon.mean("vertices") - tx.lon).max()) < 1e-3
    assert tx.attrs["tracking_id"] != pr.attrs["tracking_id"]
    assert tx.attrs["tracking_id"].startswith("hdl:21.14103/")
    assert tx.attrs["checkpoint_1_sha256"] and "history" in tx.attrs


def test_existing_archive_refused_before_any_work(
    archive: tuple[Path, Path],
    tasmax_ckpt: Path,
    pr_ckpt: Path,
    use_sample_cache: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root, _ = archive
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*.nc")}
    meta = ["--format", "cordex-cmip6", "--metadata", str(_run_yaml(root.parent)), "-q"]
    rc = main(downscale_argv([tasmax_ckpt, pr_ckpt], [], root, *CATALOG, *meta))
    assert rc == 2 and "already exists" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*.nc")} == before


@pytest.mark.parametrize(
    ("changes", "extra", "words"),
    [
        ({"source_id": "NOT-A-MODEL"}, [], "source_id 'NOT-A-MODEL' is not in"),
        ({"contact": None}, [], "missing: contact"),
        (None, ["--format", "cordex-cmip6"], "needs --metadata"),
    ],
)
def test_bad_metadata_is_one_sentence_and_writes_nothing(
    tmp_path: Path,
    tasmax_ckpt: Path,
    use_sample_cache: Path,
    capsys: pytest.CaptureFixture[str],
    changes: dict[str, object] | None,
    extra: list[str],
    words: str,
) -> None:
    root = tmp_path / "archive"
    meta = (
        ["--format", "cordex-cmip6", "--metadata", str(_run_yaml(tmp_path, **changes))]
        if changes is not None
        else extra
    )
    rc = main(downscale_argv(tasmax_ckpt, [], root, *CATALOG, *meta, "-q"))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and words in err and len(err.splitlines()) == 1
    assert not root.exists()


def test_interrupted_publication_finished_by_resume(
    tmp_path: Path, tasmax_ckpt: Path, use_sample_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import climdl.inference.cordex_archive as archive_mod

    root = tmp_path / "archive"
    meta = ["--format", "cordex-cmip6", "--metadata", str(_run_yaml(tmp_path)), "-q"]
    real = archive_mod.atomic_path

    def killed(*args: object, **kwargs: object) -> object:
        raise KeyboardInterrupt  # the run is stopped while the first file is written

    monkeypatch.setattr(archive_mod, "atomic_path", killed)
    assert main(downscale_argv(tasmax_ckpt, [], root, *CATALOG, *meta)) == 130  # interrupted
    assert not list(root.rglob("*.nc"))[1:]  # at most the finished staging file
    staging = list((root / archive_mod.STAGING).glob("*.nc"))
    assert len(staging) == 1
    monkeypatch.setattr(archive_mod, "atomic_path", real)
    assert main(downscale_argv(tasmax_ckpt, [], root, *CATALOG, *meta, "--resume")) == 0
    files = list(root.rglob("tasmax_*.nc"))
    assert len(files) == 1 and not (root / archive_mod.STAGING).exists()
    assert _open(files[0]).tasmax.notnull().all()


def test_ensemble_members_become_realizations(
    tmp_path: Path, gen_pr_ckpt: Path, use_sample_cache: Path
) -> None:
    root = tmp_path / "archive"
    meta = ["--format", "cordex-cmip6", "--metadata", str(_run_yaml(tmp_path)), "-q"]
    rc = main(
        downscale_argv(
            gen_pr_ckpt, [], root, *CATALOG, *meta, "--members", "2", "--end", "1981-01-20"
        )
    )
    assert rc == 0
    files = sorted(root.rglob("pr_*.nc"))
    assert [f.parts[-5] for f in files] == ["v1-r1", "v1-r2"]
    a, b = (_open(f) for f in files)
    assert a.attrs["version_realization"] == "v1-r1" and b.attrs["version_realization"] == "v1-r2"
    assert "member 2 of a 2-member" in b.attrs["version_realization_info"]
    assert not np.array_equal(a.pr.values, b.pr.values)
    from climdl.inference import downscale

    res = downscale(
        gen_pr_ckpt,
        catalog="sample-alps",
        period="historical",
        kind="imperfect",
        gcm="MPI-ESM-LR",
        end="1981-01-20",
        output=tmp_path / "again",
        fmt="cordex-cmip6",
        metadata=_run_yaml(tmp_path),
        members=2,
    )
    assert res.dataset.pr.sizes["member"] == 2 and len(res.extra["files"]) == 2
    res.dataset.close()
    assert cc6_required(files[1], shipped_tables_dir()) == []


def test_scalar_coordinates_come_from_the_coordinate_table(tmp_path: Path) -> None:
    from climdl.inference.cordex_archive import _scalar_coords

    run = load_run(_run_yaml(tmp_path))
    wind = _scalar_coords(run, "sfcWind", run.tables.variable("sfcWind"))
    assert float(wind["height"]) == 10.0 and wind["height"].attrs["units"] == "m"
    ta = _scalar_coords(run, "ta850", run.tables.variable("ta850"))
    assert float(ta["plev"]) == 85000.0
    with pytest.raises(ConfigError, match="not a single value"):
        _scalar_coords(run, "cdnc", run.tables.variable("cdnc"))


def test_run_outside_the_experiments_years_is_refused(
    tmp_path: Path, tasmax_ckpt: Path, use_sample_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "archive"
    end = [*CATALOG[:3], "end_century", *CATALOG[4:]]  # 2080: not historical
    meta = ["--format", "cordex-cmip6", "--metadata", str(_run_yaml(tmp_path)), "-q"]
    assert main(downscale_argv(tasmax_ckpt, [], root, *end, *meta)) == 2
    assert "covers ...-2014, but the run spans 2080-2080" in capsys.readouterr().err
    assert not root.exists()


def test_resume_keeps_the_version_and_refuses_another_run(
    tmp_path: Path,
    tasmax_ckpt: Path,
    use_sample_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import climdl.inference.cordex_archive as archive_mod

    root = tmp_path / "archive"
    meta = ["--format", "cordex-cmip6", "--metadata", str(_run_yaml(tmp_path)), "-q"]
    real = archive_mod.atomic_path

    def killed(*args: object, **kwargs: object) -> object:
        raise KeyboardInterrupt

    monkeypatch.setattr(archive_mod, "atomic_path", killed)
    assert main(downscale_argv(tasmax_ckpt, [], root, *CATALOG, *meta)) == 130
    monkeypatch.setattr(archive_mod, "atomic_path", real)
    (side,) = (root / archive_mod.STAGING).glob("*.version")
    side.write_text("v20260101\n")  # as if the run had started on another day
    # other settings: the finished staging file is not this run's
    other = ["--batch-size", "3", "--resume"]
    assert main(downscale_argv(tasmax_ckpt, [], root, *CATALOG, *meta, *other)) == 2
    assert "made from other checkpoints, inputs or settings" in capsys.readouterr().err
    assert main(downscale_argv(tasmax_ckpt, [], root, *CATALOG, *meta, "--resume")) == 0
    (f,) = root.rglob("tasmax_*.nc")
    assert f.parts[-2] == "v20260101"  # the day the run started, not the day it was resumed
    before = f.stat().st_mtime_ns
    assert main(downscale_argv(tasmax_ckpt, [], root, *CATALOG, *meta, "--resume")) == 0
    assert f.stat().st_mtime_ns == before  # complete: nothing recomputed or rewritten
    assert not (root / archive_mod.STAGING).exists()
